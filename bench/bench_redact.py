"""CPU per record of redaction and of reading lines, on bench_replay's data.

    .venv/bin/python bench/bench_redact.py json            # or text; --repeat 5

Prints, in CPU µs (``time.process_time``, best of ``--repeat``):

- ``redact``: what :meth:`Redactor.wrap` adds to each line's parser (parse with
  it, minus parse without it);
- ``read``: :meth:`FileSource.poll` over each log file, to its end;
- ``redact, replay order``: the same difference over both files' records sorted
  by time, as replay reads them (a request's two lines close together);
- ``longest line``: the full patterns over the data's longest gateway line
  (``Redactor._text``), whole and cut to ``max_line_bytes`` as a file source cuts it.

To compare two trees, run it in each, alternating (see bench_stages.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatewatch.config import load_config  # noqa: E402
from ingest.parsers import build_app_parser, build_gateway_parser  # noqa: E402
from ingest.records import Dataset, Origin, RawRecord  # noqa: E402
from ingest.redact import build_redactor  # noqa: E402
from ingest.sources.files import FileSource  # noqa: E402
from data_sets import data_folder  # noqa: E402
from timing import best_cpu_secs  # noqa: E402

def read_all(path: Path, dataset: Dataset, max_line_bytes: int) -> int:
    source = FileSource(path, dataset, max_line_bytes)
    count = 0
    while chunk := source.poll():
        count += len(chunk)
    source.close()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"), help="which bench_replay data set")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = data_folder(args.format)
    config = load_config(folder / "gatewatch.yaml")
    gc.set_threshold(100_000, 50, 100)
    parsers = {
        Dataset.GATEWAY: build_gateway_parser(
            config.gateway.format, config.gateway.json_format, config.gateway.max_line_bytes
        ),
        Dataset.APP: build_app_parser(config.app.fields, config.app.max_line_bytes),
    }
    timed: dict[Dataset, list[tuple[float, Callable[[RawRecord], object], RawRecord]]] = {}
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        path = folder / name
        lines = path.read_bytes().splitlines()
        records = [RawRecord(Origin(dataset, str(path), i), line) for i, line in enumerate(lines, 1)]
        parse = parsers[dataset]
        # Redaction runs right after the parser made the event, its texts still in the CPU's
        # cache: timed as the difference between parsing with and without it, record by record.
        # A fresh redactor per run: a run must not profit from the values the previous one saw.
        def parse_only() -> None:
            for record in records:
                parse(record)

        def parse_and_redact() -> None:
            parse_redacted = build_redactor(config).wrap(parse)
            for record in records:
                parse_redacted(record)

        plain = best_cpu_secs(parse_only, args.repeat)
        redacted = best_cpu_secs(parse_and_redact, args.repeat)
        print(
            f"redact, {dataset.name.lower()} event: {(redacted - plain) / len(records) * 1e6:6.2f} us"
            f" (parse alone {plain / len(records) * 1e6:.2f} us)"
        )
        secs = best_cpu_secs(lambda: read_all(path, dataset, config.gateway.max_line_bytes), args.repeat)
        print(f"read (FileSource.poll), {dataset.name.lower()} line: {secs / len(lines) * 1e6:6.2f} us")
        timed[dataset] = [(getattr(parse(record), "ts", 0.0), parse, record) for record in records]

    by_time = sorted(timed[Dataset.GATEWAY] + timed[Dataset.APP], key=lambda item: item[0])
    in_order = [(parse, record) for _, parse, record in by_time]

    def parse_in_order() -> None:
        for parse, record in in_order:
            parse(record)

    def parse_and_redact_in_order() -> None:
        redactor = build_redactor(config)
        wrapped = {parse: redactor.wrap(parse) for parse in parsers.values()}
        for parse, record in in_order:
            wrapped[parse](record)

    plain = best_cpu_secs(parse_in_order, args.repeat)
    redacted = best_cpu_secs(parse_and_redact_in_order, args.repeat)
    print(f"redact, replay order, a record: {(redacted - plain) / len(in_order) * 1e6:6.2f} us")

    longest = max((folder / "gateway.log").read_bytes().split(b"\n"), key=len)
    redactor = build_redactor(config)
    for label, line in (("whole", longest), ("cut", longest[: config.gateway.max_line_bytes + 1])):
        text = line.decode("utf-8", "surrogateescape")
        secs = best_cpu_secs(lambda: redactor._text(text), args.repeat)
        print(f"longest line ({label}, {len(text):,} chars), full patterns: {secs * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
