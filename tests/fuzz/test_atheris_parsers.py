"""Every parser under atheris, coverage-guided, for a few seconds each: nothing escapes, every record is counted.

The hostile-record generator and hypothesis mutate what we thought of; libFuzzer
mutates toward the branches the parsers have not taken yet. Each run is bounded
(``GATEWATCH_ATHERIS_SECS``, 3 s by default, and a run count) and happens in a
child process, as libFuzzer exits the process that runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FUZZ_COUNTS
from test_fuzz_parsers import TARGETS

pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64, Python 3.11-3.13 only")

SECS = int(os.environ.get("GATEWATCH_ATHERIS_SECS", "3"))
MAX_RUNS = 2_000_000
HARNESS = Path(__file__).parent / "atheris_parsers.py"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", TARGETS)
def test_coverage_guided_records_never_escape_their_parser(target: str, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    done = subprocess.run(
        [sys.executable, str(HARNESS), target, str(counts), str(tmp_path / "corpus"),
         f"-max_total_time={SECS}", f"-runs={MAX_RUNS}", "-max_len=4096", "-timeout=20", "-rss_limit_mb=2048",
         "-seed=1", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=SECS + 120,
    )  # fmt: skip
    report = done.stderr[-4000:]
    assert done.returncode == 0, report  # a crash: libFuzzer printed the exception and saved the input
    records, events, dead_letters = map(int, counts.read_text().split())
    assert events + dead_letters == records, report
    # libFuzzer's own count of inputs run is the harness's count of records parsed
    executed = next(int(line.split(":")[-1]) for line in done.stderr.splitlines() if "number_of_executed_units" in line)
    assert executed == records and records > 1000 and events > 0 and dead_letters > 0, report
    FUZZ_COUNTS[f"atheris {target}"] = (records, events, dead_letters)
