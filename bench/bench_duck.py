"""Where the DuckDB sink's CPU goes, table by table: building its frames, and DuckDB's insert.

    .venv/bin/python bench/bench_duck.py json                 # after bench_replay.py --lines 200000
    .venv/bin/python bench/bench_duck.py text --repeat 5

Runs the pipeline once over bench_replay's data (as ``bench_stages.py`` does) to get its
batches, then prints CPU µs (``time.process_time``, DuckDB's threads included) per event of:
the whole sink (``write`` of every batch into a fresh file, then ``close``), building each
table's frames alone, and inserting each table's prebuilt frames alone into a fresh file
(with the close, i.e. the last checkpoint). Best of ``--repeat``. The per-table lines do not
add up to the whole exactly: the checkpoints of a file holding every table cost more than
those of one holding a single table. Compare two trees by running it in each, alternating.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_stages import feed  # noqa: E402
from data_sets import data_folder  # noqa: E402
from gatewatch.config import load_config  # noqa: E402
from gatewatch.topology import tune_gc_for_streaming  # noqa: E402
from ingest.records import Dataset, Origin, RawRecord  # noqa: E402
from ingest.sinks import duckdb as sink_module  # noqa: E402
from ingest.sinks.base import Batch  # noqa: E402
from timing import best_cpu_secs  # noqa: E402

TABLES = ("events", "transactions", "alerts", "dead_letters")


def _whole(batches: list[Batch]) -> Callable[[], None]:
    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sink = sink_module.DuckDBSink(Path(tmp) / "bench.duckdb")
            for batch in batches:
                sink.write(batch)
            sink.close()

    return run


def _insert_only(frames: list[list[tuple[str, sink_module.Frame]]], table: str) -> Callable[[], None]:
    mine = [[(name, frame) for name, frame in batch if name == table] for batch in frames]

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sink = sink_module.DuckDBSink(Path(tmp) / "bench.duckdb")
            for batch in mine:
                if batch:
                    sink._commit(batch, sink_module._NEW_ROWS)
            sink.close()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"), help="which bench_replay data set")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = data_folder(args.format)
    config = load_config(folder / "gatewatch.yaml")
    tune_gc_for_streaming()
    records: dict[Dataset, list[RawRecord]] = {}
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        lines = (folder / name).read_bytes().splitlines(keepends=True)
        records[dataset] = [RawRecord(Origin(dataset, str(folder / name), i), line) for i, line in enumerate(lines, 1)]
    batches = feed(config, records)
    events = sum(len(b.events) for b in batches)
    counts = {table: sum(len(getattr(b, table)) for b in batches) for table in TABLES}
    print(f"{folder.name}: {len(batches)} batches, " + ", ".join(f"{n:,} {t}" for t, n in counts.items()))

    def show(label: str, secs: float) -> None:
        print(f"{label:42s} {secs / events * 1e6:6.2f} us an event")

    show("whole sink (write every batch, close)", best_cpu_secs(_whole(batches), args.repeat))
    builders = {
        "events": lambda b: sink_module._event_frame(b.events),
        "transactions": sink_module._transaction_frame,
        "alerts": sink_module._alert_frame,
        "dead_letters": sink_module._dead_letter_frame,
    }
    for table, build in builders.items():
        with_rows = [b for b in batches if getattr(b, table)]
        show(f"frames, {table}", best_cpu_secs(lambda: [build(b) for b in with_rows], args.repeat))  # noqa: B023
    frames = [sink_module._frames(b) for b in batches]
    for table in ("events", "transactions"):
        show(f"insert alone (+ close), {table}", best_cpu_secs(_insert_only(frames, table), args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
