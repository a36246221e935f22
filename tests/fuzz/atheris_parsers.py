"""Coverage-guided fuzzing of one parser with atheris (libFuzzer), run by ``test_atheris_parsers.py``.

    python tests/fuzz/atheris_parsers.py TARGET COUNTS_FILE CORPUS_DIR [libFuzzer flags...]

The parser (a target of ``test_fuzz_parsers.TARGETS``, built from the demo's
config) is imported under atheris' instrumentation of ``ingest``, so libFuzzer
steers its mutations toward new branches of the parsers and normalization.
Each input is one record: an exception escaping the parser, or a result that is
neither an event nor a dead letter, crashes the run (libFuzzer prints the input
and exits non-zero). After every record, COUNTS_FILE holds
``records events dead_letters``, so the test can check the sums however the run ends.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))

with atheris.instrument_imports(include=["ingest"]):
    from gatewatch.config import load_config
    from gatewatch.demo.files import write_demo
    from gatewatch.topology import build_parsers
    from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord

from test_fuzz_parsers import TARGETS  # noqa: E402 - after the instrumented imports


class Counts:
    """Records seen, events and dead letters, rewritten in place after every record (one pwrite)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.records = self.events = self.dead_letters = 0

    def add(self, result: object) -> None:
        self.records += 1
        if type(result) is Event:
            self.events += 1
        elif type(result) is DeadLetter:
            self.dead_letters += 1
        else:
            raise AssertionError(f"the parser returned {type(result).__name__}, neither an Event nor a DeadLetter")
        # fixed width: a shorter rewrite never leaves digits of the longer one behind
        os.pwrite(self.fd, f"{self.records:12d} {self.events:12d} {self.dead_letters:12d}\n".encode(), 0)


def main() -> None:
    target, counts_path, corpus = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    gateway_format, side, _ = TARGETS[target]
    with tempfile.TemporaryDirectory() as tmp:
        files = write_demo(Path(tmp), seed=5, duration_secs=600.0, requests_per_sec=2.0, gateway_format=gateway_format)
        dataset = Dataset.GATEWAY if side == "gateway" else Dataset.APP
        parse = build_parsers(load_config(files.config_yaml))[dataset]
        seeds = (files.gateway_log if side == "gateway" else files.app_log).read_bytes().splitlines(keepends=True)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, line in enumerate(seeds[:32]):  # real lines to start from
        (corpus / f"seed-{i}").write_bytes(line)
    counts = Counts(counts_path)

    def one_input(data: bytes) -> None:
        counts.add(parse(RawRecord(Origin(dataset, f"atheris-{target}", counts.records + 1), data)))

    atheris.Setup([sys.argv[0], *sys.argv[4:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
