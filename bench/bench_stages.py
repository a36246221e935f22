"""CPU per record, stage by stage, on bench_replay's data with the lines in memory.

    .venv/bin/python bench/bench_stages.py json                  # after bench_replay.py --lines 200000
    .venv/bin/python bench/bench_stages.py text --stages parse --repeat 5

Stages: ``parse`` (each dataset's parser as the pipeline builds it: parse,
normalize, redact; best of ``--repeat``), ``pipeline`` (feed, order, correlate,
detect the way ``replay()`` does, no sinks; one run) and ``duckdb`` (that run's
batches written to a fresh DuckDB file; best of ``--repeat``). Figures are CPU
seconds (``time.process_time``) per record, so a loaded machine disturbs them
less than wall time. To compare two trees, run it in each, alternating: the
machine's load moves a whole run by more than most changes do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatewatch.config import load_config  # noqa: E402
from gatewatch.replay import CHUNK_RECORDS, DRAIN_EVERY_RECORDS  # noqa: E402
from gatewatch.topology import Pipeline, build_parsers, tune_gc_for_streaming  # noqa: E402
from ingest.records import Dataset, Origin, RawRecord  # noqa: E402
from ingest.sinks.base import Batch  # noqa: E402
from ingest.sinks.duckdb import DuckDBSink  # noqa: E402
from data_sets import data_folder  # noqa: E402
from timing import best_cpu_secs  # noqa: E402


def feed(config: object, records: dict[Dataset, list[RawRecord]]) -> list[Batch]:
    """The pipeline over every record, read the way replay() reads files; the batches it drained."""
    pipeline = Pipeline(config)
    readers = {rs[0].origin.stream: iter(rs) for rs in records.values()}
    for stream in readers:
        pipeline.open_stream(stream)
    batches, since_drain = [], 0
    while readers:
        stream = min(readers, key=pipeline.order.stream_clock)
        chunk = list(islice(readers[stream], CHUNK_RECORDS))
        if not chunk:
            del readers[stream]
            pipeline.close_stream(stream)
        pipeline.feed(chunk)
        pipeline.process()
        since_drain += len(chunk)
        if since_drain >= DRAIN_EVERY_RECORDS:
            batches.append(pipeline.drain())
            since_drain = 0
    pipeline.finish()
    batches.append(pipeline.drain())
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"), help="which bench_replay data set")
    parser.add_argument("--data", type=Path, help="a bench/.data folder (default: the first of the format)")
    parser.add_argument("--stages", default="parse,pipeline,duckdb")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = args.data or data_folder(args.format)
    stages = set(args.stages.split(","))
    config = load_config(folder / "gatewatch.yaml")
    tune_gc_for_streaming()
    records: dict[Dataset, list[RawRecord]] = {}
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        path = str(folder / name)
        lines = (folder / name).read_bytes().splitlines(keepends=True)
        records[dataset] = [RawRecord(Origin(dataset, path, i), line) for i, line in enumerate(lines, 1)]
    print(f"{folder.name}: {sum(map(len, records.values())):,} lines")
    if "parse" in stages:
        parsers = build_parsers(config)
        for dataset, rs in records.items():
            parse = parsers[dataset]
            secs = best_cpu_secs(lambda: [parse(r) for r in rs], args.repeat)
            print(f"parse + normalize + redact, {dataset.name.lower()} line: {secs / len(rs) * 1e6:6.2f} us")
    if stages & {"pipeline", "duckdb"}:
        start = time.process_time()
        batches = feed(config, records)
        events = sum(len(b.events) for b in batches)
        print(f"pipeline, no sinks:                  {(time.process_time() - start) / events * 1e6:6.2f} us an event")
        if "duckdb" in stages:

            def write() -> None:
                with tempfile.TemporaryDirectory() as tmp:
                    sink = DuckDBSink(Path(tmp) / "bench.duckdb")
                    for batch in batches:
                        sink.write(batch)
                    sink.close()

            secs = best_cpu_secs(write, args.repeat)
            print(f"duckdb write (batches, close):       {secs / events * 1e6:6.2f} us an event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
