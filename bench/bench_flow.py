"""CPU per event of everything replay does after parsing: order, correlate, detect, alert.

    .venv/bin/python bench/bench_flow.py json
    .venv/bin/python bench/bench_flow.py text --repeat 5
    .venv/bin/python bench/bench_flow.py json --tree ../other-checkout   # the same run on another tree

The records of bench_replay's data are parsed once (parse, normalize, redact,
as the pipeline builds its parsers); then each repeat runs a fresh
:class:`~gatewatch.topology.Pipeline` over those events the way ``replay()``
reads its files (``CHUNK_RECORDS`` at a time from the input furthest behind,
``process`` after each chunk, ``drain`` every ``DRAIN_EVERY_RECORDS``), and
prints the best CPU time (``time.process_time``) per event, with the counts
and a digest of the ids it produced (events, transactions, alerts), which must
not change when this path gets faster. Compare two trees by running it in
each, alternating.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from data_sets import data_folder


def run(config: Any, events: dict[str, list[Any]], rules: bool = True) -> list[Any]:
    from gatewatch.replay import CHUNK_RECORDS, DRAIN_EVERY_RECORDS
    from gatewatch.topology import Pipeline

    pipeline = Pipeline(config)
    if not rules:
        pipeline.detectors.detectors = []
    positions = {stream: 0 for stream in events}
    for stream in events:
        pipeline.open_stream(stream)
    batches, since_drain = [], 0
    while positions:
        stream = min(positions, key=pipeline.order.stream_clock)
        at = positions[stream]
        chunk = events[stream][at : at + CHUNK_RECORDS]
        positions[stream] = at + CHUNK_RECORDS
        if at + CHUNK_RECORDS >= len(events[stream]):
            del positions[stream]
            pipeline.close_stream(stream)
        pipeline._batch.events.extend(chunk)  # as feed() does, for the digest
        pipeline.order_events(chunk)
        pipeline.process()
        since_drain += len(chunk)
        if since_drain >= DRAIN_EVERY_RECORDS:
            batches.append(pipeline.drain())
            since_drain = 0
    pipeline.finish()
    batches.append(pipeline.drain())
    return batches


def digest(batches: list[Any]) -> str:
    h = hashlib.sha256()
    for batch in batches:
        for event in batch.events:
            h.update(event.id.encode())
        for txn in batch.transactions:
            h.update(txn.id.encode())
        for alert in batch.alerts.values():
            h.update(repr(alert).encode())
    return h.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the gatewatch tree to run (default: this one)")
    parser.add_argument("--no-rules", action="store_true", help="order and correlate only: no detector enabled")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))

    from gatewatch.config import load_config
    from gatewatch.topology import build_parsers, tune_gc_for_streaming
    from ingest.records import Dataset, Event, Origin, RawRecord

    folder = data_folder(args.format)
    config = load_config(folder / "gatewatch.yaml")
    tune_gc_for_streaming()

    parsers = build_parsers(config)
    events: dict[str, list[Any]] = {}
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        path = str(folder / name)
        lines = (folder / name).read_bytes().splitlines(keepends=True)
        parsed = [parsers[dataset](RawRecord(Origin(dataset, path, i), line)) for i, line in enumerate(lines, 1)]
        events[path] = [e for e in parsed if isinstance(e, Event)]
    count = sum(map(len, events.values()))
    times = []
    for _ in range(args.repeat):
        gc.collect()
        start = time.process_time()
        batches = run(config, events, not args.no_rules)
        times.append(time.process_time() - start)
    transactions = sum(len(b.transactions) for b in batches)
    alerts = len({a for b in batches for a in b.alerts})
    print(f"{args.tree} {folder.name}: {count:,} events, {transactions:,} transactions, {alerts} alerts, "
          f"digest {digest(batches)}")
    print(f"order + correlate{'' if args.no_rules else ' + detect'}: {min(times) / count * 1e6:6.2f} us an event "
          f"(runs: {', '.join(f'{t / count * 1e6:.2f}' for t in times)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
