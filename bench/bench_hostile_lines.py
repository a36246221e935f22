"""Memory and CPU of one long hostile line through parse, normalize and redaction, payload by payload.

    .venv/bin/python bench/bench_hostile_lines.py                  # text and JSON gateway data, 900 KB payloads
    .venv/bin/python bench/bench_hostile_lines.py --formats text --chars 300000 --top 10

Takes a line of each input of bench_replay.py's data (run that first) and puts a payload in each of its
string values in turn (text gateway lines: each quoted value; JSON lines: each string leaf), then parses
the line as the pipeline does (``gatewatch.topology.parse_records``: parser, normalize, redaction, dead
letter), once for its CPU seconds and once under ``tracemalloc`` for its peak of traced memory. Prints
the cases with the highest peak and the slowest. A value inside ``max_line_bytes`` is the client's to choose:
a line should cost memory a few times its length and CPU in proportion to it, whatever it holds.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_sets import data_folder  # noqa: E402

from gatewatch.config import load_config  # noqa: E402
from gatewatch.topology import build_parsers, parse_records  # noqa: E402
from ingest.records import Dataset, Origin, RawRecord  # noqa: E402

PAYLOADS: dict[str, Callable[[int], str]] = {
    "letters": lambda n: "A" * n,
    "escaped quotes": lambda n: '\\"' * (n // 2),
    "quotes": lambda n: '"' * n,
    '" " separators': lambda n: '" "' * (n // 3),
    "backslashes": lambda n: "\\" * n,
    "words": lambda n: "a " * (n // 2),
    "password= then letters": lambda n: "password=" + "a" * n,
    "password=x repeated": lambda n: "password=x " * (n // 11),
    "bearer then letters": lambda n: "Authorization: Bearer " + "a" * n,
    "JWT-like pieces": lambda n: "eyJa." * (n // 5),
    "userinfo repeated": lambda n: "://a:b" * (n // 6),
    "digits": lambda n: "4" * n,
    "card-like groups": lambda n: "4111 " * (n // 5),
    "key=value&": lambda n: "a=b&" * (n // 4),
    "JSON openings": lambda n: '{"a":' * (n // 5),
    "non-ASCII": lambda n: "é" * (n // 2),
}


def text_variants(line: str, payload: str) -> Iterator[tuple[str, str]]:
    """``line`` with each of its quoted values replaced by ``payload``, named by the value's offset."""
    at = 0
    while (start := line.find('"', at)) >= 0 and (end := line.find('"', start + 1)) >= 0:
        yield f"quoted value at {start + 1}", line[: start + 1] + payload + line[end:]
        at = end + 1


def json_variants(line: str, payload: str) -> Iterator[tuple[str, str]]:
    """``line`` with each of its string leaves replaced by ``payload``, named by its path."""

    def paths(value: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from paths(item, (*path, key))
        elif isinstance(value, str):
            yield path

    for path in list(paths(orjson.loads(line), ())):
        copy = orjson.loads(line)
        holder = copy
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = payload
        yield "/".join(path), orjson.dumps(copy).decode()


def measure(fmt: str, chars: int) -> list[tuple[float, float, str, str, str, int, str]]:
    folder = data_folder(fmt)
    parsers = build_parsers(load_config(folder / "gatewatch.yaml"))
    samples = {dataset: (folder / name).read_bytes().split(b"\n", 101)[100].decode()
               for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log"))}  # fmt: skip
    rows = []
    for name, make in PAYLOADS.items():
        payload = make(chars)
        for dataset, sample in samples.items():
            variants = json_variants if sample.startswith("{") else text_variants
            for where, line in variants(sample, payload):
                record = RawRecord(Origin(dataset, "bench", 0), line.encode("utf-8", "surrogateescape"))
                started = time.process_time()  # untraced: tracemalloc slows every allocation
                events, dead = parse_records(parsers, [record])
                cpu = time.process_time() - started
                tracemalloc.start()
                parse_records(parsers, [record])
                peak = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
                outcome = "event" if events else dead[0].reason
                rows.append((peak, cpu, name, dataset.value, where, len(record.line), outcome))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", default=["text", "json"], choices=["text", "json"])
    parser.add_argument("--chars", type=int, default=900_000, help="payload length (default 900,000)")
    parser.add_argument("--top", type=int, default=8, help="rows of each table")
    args = parser.parse_args()
    for fmt in args.formats:
        rows = measure(fmt, args.chars)
        print(f"\n{fmt} gateway data: {len(rows)} cases, payloads of ~{args.chars:,} characters")
        header = f"{'peak MB':>8} {'CPU s':>6}  {'payload':24} {'dataset':13} {'where':32} {'bytes':>9}  outcome"
        for title, key in (("highest peak memory", lambda r: -r[0]), ("most CPU", lambda r: -r[1])):
            print(f"-- {title}\n{header}")
            for peak, cpu, name, dataset, where, size, outcome in sorted(rows, key=key)[: args.top]:
                print(f"{peak:8.1f} {cpu:6.2f}  {name:24} {dataset:13} {where[:32]:32} {size:9,}  {outcome}")


if __name__ == "__main__":
    main()
