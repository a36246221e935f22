"""The requests topic's events messages and a pipeline checkpoint: typed MessagePack against the pickle it replaced.

    .venv/bin/python bench/bench_wire.py                     # 600 s of demo traffic at 200 req/s
    .venv/bin/python bench/bench_wire.py --rate 50 --repeat 3

Runs the demo generator's traffic through a ``Pipeline`` the way the detect
stage does, stops it 80 % of the way in (reorder buffer and open requests
full, as in a live checkpoint), then times in the same process, best of
``--repeat``, in CPU seconds of this process (``time.process_time``: the
figures hold on a busy machine, where wall time would count the waits):

- per record, the hand-off between the stages: encoding a 5,000-event message
  and decoding it back to events. *pickle* is a copy of what serve did before
  (rows of plain tuples, ``pickle.dumps`` / ``loads``); *msgspec* is
  ``gatewatch.wire``'s ``poll_events`` v2 (``encode_event_list`` + envelope,
  ``decode_requests_message``, which gives the events);
- the checkpoint state: save (``Pipeline.snapshot``, the body of a JOIN
  task's checkpoint) and load (decode and restore into a pipeline), and the bytes before
  and after zlib level 1 (what the checkpoint store applied when this bench was written; it
  uses zstd level 1 now, smaller still). *pickle* is a copy
  of the previous snapshot: the same objects pickled whole, with the
  previous release's pickling hooks (flat-tuple Event and Origin, the reorder
  buffer in chunks of 5,000) installed through ``copyreg``.

The pickle copies exist only here, to measure against; gatewatch reads no pickle.
"""

from __future__ import annotations

import argparse
import copyreg
import gc
import operator
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msgspec.structs import fields

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewatch.config import load_config  # noqa: E402
from gatewatch.demo.files import write_demo  # noqa: E402
from gatewatch.topology import Pipeline, tune_gc_for_streaming  # noqa: E402
from gatewatch.wire import decode_requests_message, encode_poll_events  # noqa: E402
from ingest.codec import encode_event_list  # noqa: E402
from ingest.order import EventOrder  # noqa: E402
from ingest.records import Dataset, Event, Origin  # noqa: E402
from ingest.sources.files import read_lines  # noqa: E402

MESSAGE_EVENTS = 5_000

# -- the previous release's pickle format, copied ------------------------------------------

_FIELDS = [f.name for f in fields(Event)]
_rest_of = operator.attrgetter(*_FIELDS[4:])
_all_of = operator.attrgetter(*_FIELDS)
_DATASETS = {d.value: d for d in Dataset}


def pickle_encode_events(wall: float, stream: str, events: list[Event]) -> bytes:
    rows = [(e.id, e.dataset.value, e.ts, e.origin.offset, _rest_of(e)) for e in events]
    return pickle.dumps(("events", wall, stream, rows), protocol=pickle.HIGHEST_PROTOCOL)


def pickle_decode_events(data: bytes) -> list[Event]:
    _, _, stream, rows = pickle.loads(data)  # noqa: S301 (the old format, measured)
    datasets = _DATASETS
    return [
        Event(event_id, dataset, ts, Origin(dataset, stream, offset), *rest)
        for event_id, dataset, ts, offset, rest in ((r[0], datasets[r[1]], r[2], r[3], r[4]) for r in rows)
    ]


def _event_from_values(*values: Any) -> Event:
    return Event(*values)


def _order_from_state(state: dict[str, Any]) -> EventOrder:
    order = EventOrder.__new__(EventOrder)
    chunks = state.pop("_heap_chunks")
    order.__dict__.update(state)
    order._heap = [entry for chunk in chunks for entry in pickle.loads(chunk)]  # noqa: S301 (measured)
    return order


def _reduce_order(order: EventOrder) -> tuple[Any, ...]:
    state = dict(order.__dict__)
    heap = state.pop("_heap")
    state["_heap_chunks"] = [pickle.dumps(heap[i : i + 5000], protocol=pickle.HIGHEST_PROTOCOL)
                             for i in range(0, len(heap), 5000)]  # fmt: skip
    return (_order_from_state, (state,))


def install_previous_pickling() -> None:
    copyreg.pickle(Event, lambda e: (_event_from_values, _all_of(e)))
    copyreg.pickle(Origin, lambda o: (Origin, (o.dataset, o.stream, o.offset)))
    copyreg.pickle(EventOrder, _reduce_order)


def pickle_snapshot(pipeline: Pipeline, times: tuple[dict, dict, dict]) -> bytes:
    state = pickle.dumps(
        (pipeline.order, pipeline.correlator, pipeline.detectors.detectors, pipeline.detectors.alert_book,
         pipeline._tick, pipeline.stream_offsets),
        protocol=pickle.HIGHEST_PROTOCOL,
    )  # fmt: skip
    return pickle.dumps((state, *times), protocol=pickle.HIGHEST_PROTOCOL)


def pickle_restore(data: bytes) -> Any:
    state, *_ = pickle.loads(data)  # noqa: S301 (measured)
    return pickle.loads(state)  # noqa: S301 (measured)


# -- the measurement ---------------------------------------------------------------------------


def best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        result = run()
        times.append(time.process_time() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="demo requests per second")
    parser.add_argument("--duration", type=float, default=600.0, help="demo seconds of traffic")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tune_gc_for_streaming()  # as serve runs

    with tempfile.TemporaryDirectory() as tmp:  # the config names the revocation file: keep it until built
        files = write_demo(Path(tmp), duration_secs=args.duration, requests_per_sec=args.rate, seed=3)
        config = load_config(files.config_yaml)
        gateway = list(read_lines(files.gateway_log, Dataset.GATEWAY, 1 << 20))
        app = list(read_lines(files.app_log, Dataset.APP, 1 << 20))
        pipeline = Pipeline(config)
        for records in (gateway, app):
            pipeline.open_stream(records[0].origin.stream)
        events: list[Event] = []
        stop = {"gateway": int(len(gateway) * 0.8), "app": int(len(app) * 0.8)}
        for i in range(0, max(stop.values()), 2_000):
            batch = gateway[i : min(i + 2_000, stop["gateway"])] + app[i : min(i + 2_000, stop["app"])]
            pipeline.feed(batch)
            events.extend(pipeline._batch.events)
            pipeline.process()
            pipeline.drain()
        fresh = [Pipeline(config) for _ in range(args.repeat)]
    print(f"records fed {sum(stop.values())}, buffered events {len(pipeline.order)}, "
          f"open requests {len(pipeline.correlator)}, repeat {args.repeat} (best)")  # fmt: skip

    messages = [events[i : i + MESSAGE_EVENTS] for i in range(0, len(events) - MESSAGE_EVENTS + 1, MESSAGE_EVENTS)]
    count = sum(len(m) for m in messages)
    stream = "gw-gateway/0"
    rows: dict[str, list[Any]] = {}
    new_enc, rows["msgspec"] = best(args.repeat, lambda: [encode_poll_events(1.0, [(stream, encode_event_list(m))])
                                                          for m in messages])  # fmt: skip
    new_dec, _ = best(args.repeat, lambda: [v.parts[0].events  # type: ignore[union-attr]
                                            for v in map(decode_requests_message, rows["msgspec"])])  # fmt: skip
    old_enc, rows["pickle"] = best(args.repeat, lambda: [pickle_encode_events(1.0, stream, m) for m in messages])
    old_dec, _ = best(args.repeat, lambda: [pickle_decode_events(data) for data in rows["pickle"]])

    times: tuple[dict, dict, dict] = ({stream: 1.0}, {stream: 2.0}, {})
    new_save, new_state = best(args.repeat, pipeline.snapshot)

    def new_load() -> None:
        fresh.pop().restore(new_state)

    new_load_secs, _ = best(args.repeat, new_load)
    install_previous_pickling()
    old_save, old_state = best(args.repeat, lambda: pickle_snapshot(pipeline, times))
    old_load_secs, _ = best(args.repeat, lambda: pickle_restore(old_state))
    zipped = {name: zlib.compress(state, 1) for name, state in (("msgspec", new_state), ("pickle", old_state))}

    print(f"\nhand-off, {len(messages)} messages of {MESSAGE_EVENTS} events ({count} events), us per event:")
    print(f"{'format':<9} {'encode':>8} {'decode':>8} {'total':>8} {'bytes/event':>12}")
    for name, enc, dec in (("pickle", old_enc, old_dec), ("msgspec", new_enc, new_dec)):
        size = sum(map(len, rows[name])) / count
        print(f"{name:<9} {enc / count * 1e6:>8.2f} {dec / count * 1e6:>8.2f} {(enc + dec) / count * 1e6:>8.2f} "
              f"{size:>12.0f}")  # fmt: skip
    print(f"\ncheckpoint of {len(pipeline.order)} buffered events and {len(pipeline.correlator)} open requests:")
    print(f"{'format':<9} {'save ms':>8} {'load ms':>8} {'MB':>7} {'MB zlib':>8}")
    for name, save, load, state in (("pickle", old_save, old_load_secs, old_state),
                                    ("msgspec", new_save, new_load_secs, new_state)):  # fmt: skip
        print(f"{name:<9} {save * 1e3:>8.0f} {load * 1e3:>8.0f} {len(state) / 1e6:>7.1f} "
              f"{len(zipped[name]) / 1e6:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
