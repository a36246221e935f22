"""The wire codec alone: CPU µs an event to encode and decode bench_replay's events (ingest/codec.py).

    .venv/bin/python bench/bench_codec.py                                  # this checkout's codec
    cd ../other-checkout && .venv/bin/python ../gatewatch/bench/bench_codec.py   # another checkout's, same events

Imports gatewatch from the current directory, so the same script measures two
checkouts' codecs in turn (alternate them: the machine is shared and noisy).
Times, best of ``--repeat``, in CPU seconds: ``encode_rows`` of 5,000-event
messages; their decode (envelope and rows) plus ``events_from_rows``; and
``pack_events`` / ``unpack_events`` of the same events as checkpoint tables:
the formats of ``poll_events`` v1 and of state v1. Beside them, in a checkout
that has them, the v2 formats of the same events: ``encode_event_list`` and its
decode straight into events (a message), ``encode_event_state`` and
``decode_event_state`` (a checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

import msgspec  # noqa: E402

from gatewatch.config import load_config  # noqa: E402
from gatewatch.topology import build_parsers  # noqa: E402
from ingest.codec import (  # noqa: E402
    EventRow, EventTable, decode, encode, encode_rows, events_from_rows, pack_events, unpack_events,
)  # fmt: skip
from ingest.records import Dataset, Event, Origin, RawRecord  # noqa: E402
from timing import best_cpu_secs  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"  # bench_replay.py writes it
MESSAGE_EVENTS = 5_000


class _Message(msgspec.Struct, array_like=True):
    stream: str
    rows: list[EventRow]


class _EventsMessage(msgspec.Struct, array_like=True):
    stream: str
    events: list[Event]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "json-seed7-dur600-rate113.766")
    parser.add_argument("--lines", type=int, default=60_000, help="lines of each file")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    parsers = build_parsers(load_config(args.data / "gatewatch.yaml"))
    events: list[Event] = []
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        with open(args.data / name, "rb") as file:
            for i, line in enumerate(islice(file, args.lines), 1):
                parsed = parsers[dataset](RawRecord(Origin(dataset, "bench", i), line))
                if isinstance(parsed, Event):
                    events.append(parsed)
    messages = [events[i : i + MESSAGE_EVENTS] for i in range(0, len(events), MESSAGE_EVENTS)]
    encoded = [encode("events", 1, ("bench", encode_rows(m))) for m in messages]
    kinds = {"events": (1, _Message)}
    tables = [encode("table", 1, pack_events(m)) for m in messages]
    table_kinds = {"table": (1, EventTable)}

    def decode_all() -> None:
        for data in encoded:
            _, message = decode(data, kinds)
            events_from_rows(message.stream, message.rows)

    def unpack_all() -> None:
        for data in tables:
            unpack_events(decode(data, table_kinds)[1])

    n = len(events)
    print(f"{n:,} events, imported from {Path.cwd()}")
    runs = [
        ("encode_rows", lambda: [encode_rows(m) for m in messages]),
        ("decode + events_from_rows", decode_all),
        ("pack_events + encode", lambda: [encode("table", 1, pack_events(m)) for m in messages]),
        ("decode + unpack_events", unpack_all),
    ]
    try:  # the v2 formats, in a checkout that has them
        from ingest.codec import decode_event_state, encode_event_list, encode_event_state
    except ImportError:
        print("(no v2 formats in this checkout)")
    else:
        lists = [encode("events", 2, ("bench", encode_event_list(m))) for m in messages]
        list_kinds = {"events": (2, _EventsMessage)}
        states = [encode_event_state(m) for m in messages]
        runs += [
            ("encode_event_list", lambda: [encode_event_list(m) for m in messages]),
            ("decode (list[Event])", lambda: [decode(data, list_kinds) for data in lists]),
            ("encode_event_state", lambda: [encode_event_state(m) for m in messages]),
            ("decode_event_state", lambda: [decode_event_state(state, packed=False) for state in states]),
        ]
    for name, run in runs:
        print(f"{name:28} {best_cpu_secs(run, args.repeat) / n * 1e6:6.3f} us an event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
