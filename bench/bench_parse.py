"""CPU per line of parse + normalize alone (no redaction), per shape, on bench_replay's data.

    .venv/bin/python bench/bench_parse.py            # json gateway, text gateway, app lines
    .venv/bin/python bench/bench_parse.py --lines 40000 --repeat 7
    .venv/bin/python bench/bench_parse.py --against ../other-checkout --repeat 9  # A/B in one process

Each dataset's parser is built the way the pipeline builds it, without the
Redactor wrap (that is the redaction front's cost). Figures are the best of
``--repeat`` runs in CPU seconds (``time.process_time``) per line, beside
``orjson.loads`` of the same lines.

``--against TREE`` builds TREE's parsers too, in the same process, checks both
give the same events and dead letters (ids included), and times the two
interleaved, run by run: on a loaded machine the load moves a whole process by
more than most changes do, two processes run one after the other cannot tell
a few percent apart, the two halves of one interleaved run can.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from timing import best_cpu_secs  # bench/, beside this script

DATA = Path(__file__).resolve().parent / ".data"
SHAPES = (("json gateway", "json-seed*", "gateway.log"), ("text gateway", "text-seed*", "gateway.log"),
          ("app", "json-seed*", "app.log"))  # fmt: skip


def _loads(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # the data holds a few broken lines on purpose
        return None


def build(tree: Path, lines: int, created: float | None) -> dict[str, tuple[Callable[[Any], object], list[Any]]]:
    """Each shape's parser as ``tree``'s code builds it, and its records.

    A tree's modules are dropped from ``sys.modules`` once its parsers are built, so the
    next tree imports its own: each parser keeps the module globals it was built with.
    """
    for name in [name for name in sys.modules if name.split(".")[0] in ("gatewatch", "ingest", "detectors")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        from gatewatch.config import load_config
        from ingest.parsers import build_app_parser, build_gateway_parser
        from ingest.records import Dataset, Origin, RawRecord

        built: dict[str, tuple[Callable[[Any], object], list[Any]]] = {}
        for label, pattern, name in SHAPES:
            folder = next(iter(sorted(DATA.glob(pattern))))
            config = load_config(folder / "gatewatch.yaml")
            if name == "app.log":
                parse, dataset = build_app_parser(config.app.fields), Dataset.APP
            else:
                parse, dataset = build_gateway_parser(config.gateway.format, config.gateway.json_format), Dataset.GATEWAY
            with open(folder / name, "rb") as file:
                read = [line for _, line in zip(range(lines), file)]
            records = [RawRecord(Origin(dataset, str(folder / name), i), line, created) for i, line in enumerate(read, 1)]
            built[label] = (parse, records)
        return built
    finally:
        sys.path.remove(str(tree))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40_000, help="lines of each file")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--created", action="store_true",
                        help="every line carries a container runtime's time (gateway.unwrap: docker or cri)")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the source tree to measure (default: this one)")
    parser.add_argument("--against", type=Path, help="a second tree (the baseline), timed in the same process")
    args = parser.parse_args()
    created = 1_772_442_000.5 if args.created else None
    gc.set_threshold(100_000, 50, 100)  # as the pipeline runs (topology.tune_gc_for_streaming)
    trees = [args.tree] if args.against is None else [args.against, args.tree]
    built = {tree: build(tree, args.lines, created) for tree in trees}
    for label, _, _ in SHAPES:
        outputs = [[repr(parse(r)) for r in records] for parse, records in (built[tree][label] for tree in trees)]
        dead = sum(1 for text in outputs[-1] if text.startswith("DeadLetter("))
        # Interleaved: run i of each tree back to back, the best of each kept.
        times: dict[Path, list[float]] = {tree: [] for tree in trees}
        for _ in range(args.repeat):
            for tree in trees:
                parse, records = built[tree][label]
                times[tree].append(best_cpu_secs(lambda: [parse(r) for r in records], 1) / len(records) * 1e6)
        lines = [r.line for r in built[trees[-1]][label][1]]
        if lines[0].startswith(b"{"):
            loads = best_cpu_secs(lambda: [_loads(line) for line in lines], args.repeat)
            beside = f"orjson.loads {loads / len(lines) * 1e6:5.2f} us; "
        else:
            beside = ""
        figures = " vs ".join(f"{min(times[tree]):6.2f} us" for tree in reversed(trees))
        if args.against is not None:
            ratio = min(times[args.tree]) / min(times[args.against])
            same = "same output" if outputs[0] == outputs[1] else "OUTPUT DIFFERS"
            figures += f" ({ratio:.3f}x the baseline; {same})"
        print(f"{label:13s} parse + normalize: {figures} a line ({beside}{dead} dead letters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
