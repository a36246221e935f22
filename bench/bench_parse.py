"""CPU per line of parse + normalize alone (no redaction), per shape, on bench_replay's data.

    .venv/bin/python bench/bench_parse.py            # json gateway, text gateway, app lines
    .venv/bin/python bench/bench_parse.py --lines 40000 --repeat 7

Each dataset's parser is built the way the pipeline builds it, without the
Redactor wrap (that is the redaction front's cost). Figures are the best of
``--repeat`` runs in CPU seconds (``time.process_time``) per line, beside
``orjson.loads`` of the same lines. To compare two trees, run it in each,
alternating.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

DATA = Path(__file__).resolve().parent / ".data"


def best_cpu_secs(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def _loads(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # the data holds a few broken lines on purpose
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40_000, help="lines of each file")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--created", action="store_true",
                        help="every line carries a container runtime's time (gateway.unwrap: docker or cri)")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the source tree to measure (default: this one), for A/B runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    from gatewatch.config import load_config
    from ingest.parsers import build_app_parser, build_gateway_parser
    from ingest.records import Dataset, Origin, RawRecord

    json_folder = next(iter(sorted(DATA.glob("json-seed*"))))
    text_folder = next(iter(sorted(DATA.glob("text-seed*"))))
    gc.set_threshold(100_000, 50, 100)  # as the pipeline runs (topology.tune_gc_for_streaming)
    for label, folder, dataset, name in (
        ("json gateway", json_folder, Dataset.GATEWAY, "gateway.log"),
        ("text gateway", text_folder, Dataset.GATEWAY, "gateway.log"),
        ("app", json_folder, Dataset.APP, "app.log"),
    ):
        config = load_config(folder / "gatewatch.yaml")
        if dataset is Dataset.GATEWAY:
            parse = build_gateway_parser(config.gateway.format, config.gateway.json_format)
        else:
            parse = build_app_parser(config.app.fields)
        with open(folder / name, "rb") as file:
            lines = [line for _, line in zip(range(args.lines), file)]
        created = 1_772_442_000.5 if args.created else None
        records = [RawRecord(Origin(dataset, str(folder / name), i), line, created) for i, line in enumerate(lines, 1)]
        secs = best_cpu_secs(lambda: [parse(r) for r in records], args.repeat)
        dead = sum(1 for r in records if not hasattr(parse(r), "ts"))
        if lines[0].startswith(b"{"):
            loads = best_cpu_secs(lambda: [_loads(line) for line in lines], args.repeat)
            beside = f"orjson.loads {loads / len(records) * 1e6:5.2f} us; "
        else:
            beside = ""
        print(f"{label:13s} parse + normalize: {secs / len(records) * 1e6:6.2f} us a line "
              f"({beside}{dead} dead letters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
