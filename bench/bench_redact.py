"""CPU per record of redaction and of reading lines, on bench_replay's data.

    .venv/bin/python bench/bench_redact.py json            # or text; --repeat 5

Prints, in CPU µs (``time.process_time``, best of ``--repeat``):

- ``redact``: what :meth:`Redactor.wrap` adds to each line's parser (parse with
  it, minus parse without it);
- ``read``: :meth:`FileSource.poll` over each log file, to its end.

To compare two trees, run it in each, alternating (see bench_stages.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatewatch.config import load_config  # noqa: E402
from ingest.parsers import build_app_parser, build_gateway_parser  # noqa: E402
from ingest.records import Dataset, Origin, RawRecord  # noqa: E402
from ingest.redact import build_redactor  # noqa: E402
from ingest.sources.files import FileSource  # noqa: E402
from bench_stages import DATA, best_cpu_secs  # noqa: E402

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
    folder = next(iter(sorted(DATA.glob(f"{args.format}-seed*"))))
    config = load_config(folder / "gatewatch.yaml")
    gc.set_threshold(100_000, 50, 100)
    parsers = {
        Dataset.GATEWAY: build_gateway_parser(
            config.gateway.format, config.gateway.json_format, config.gateway.max_line_bytes
        ),
        Dataset.APP: build_app_parser(config.app.fields, config.app.max_line_bytes),
    }
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
