"""Instructions an event of replay, counted by valgrind: a figure the machine's load does not move.

    .venv/bin/python bench/bench_instructions.py json                          # this tree
    .venv/bin/python bench/bench_instructions.py text --against /work/wt/other   # and another checkout

On this shared machine one tree's CPU seconds moved by 20-40% between runs
minutes apart (bench/README, sessions 13 and 14), more than most changes do.
The number of instructions the interpreter executes for the same work does
not depend on the neighbours. The first ``--lines`` lines of a bench_replay
data set (both files cut at the same share of their lines, so both cover
about the same stretch of time) are copied with its config; for each tree a
child runs under ``valgrind --tool=cachegrind --cache-sim=no`` (counting
only) twice: once importing gatewatch (and scikit-learn, which trees before
the numpy forest import at their first window) and loading the
config, once doing that and then ``replay()`` over the files with no sinks.
The difference over the events replayed is the figure: parse, normalize,
redact, order, correlate and detect, as bench_replay's in-process
``--store none`` row times them (minus its two ndjson sinks). PYTHONHASHSEED
is fixed, and the child runs one OpenMP thread: with a pool, scikit-learn's
threads spin-waiting added a varying count (two counts of one tree 0.7-2.3%
apart); with one, two counts of the whole child were 0.003% apart, where the
tree's CPU seconds move by tens of percent.

An instruction is not a unit of time (a cache miss costs more than an add),
so this compares two trees' work; the MiB/s aims stay bench_replay's. A cut
of 20,000 lines covers less time than the pipeline holds events for (150 s by
default): the events wait in the buffers until the end, where a long run
releases them as it goes, so the figure is per record work, not a steady
state. valgrind runs ~50x slower than Python alone: ~1 minute a count at
20,000 lines. Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from data_sets import data_folder

HERE = Path(__file__).resolve().parents[1]

_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from gatewatch.config import load_config
from gatewatch.replay import replay
from sklearn.ensemble import IsolationForest  # older trees' behaviour_outlier imports it: not counted
folder = Path(sys.argv[2])
config = load_config(folder / "gatewatch.yaml")
if sys.argv[3] == "replay":
    stats = replay(config, [folder / "gateway.log"], [folder / "app.log"], [])
    print("events", stats.events)
"""


def _count(tree: Path, folder: Path, mode: str) -> tuple[int, int]:
    """Instructions the child executed, and the events it replayed (0 when it only set up)."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, "-c", _CHILD, str(tree), str(folder), mode]  # fmt: skip
    # One OpenMP (and BLAS) thread: an older tree's scikit-learn fit at the first closed outlier window starts a
    # pool whose spin-waiting adds a varying count (two counts of one tree were 0.7-2.3% apart).
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"valgrind run failed ({tree}, {mode}):\n{done.stderr[-2000:]}")
    events = re.search(r"^events (\d+)$", done.stdout, re.MULTILINE)
    return int(found.group(1).replace(",", "")), int(events.group(1)) if events else 0


def _cut(folder: Path, lines: int, into: Path) -> None:
    """The first ``lines`` lines of ``folder``'s two logs, each cut at the same share of its own, and its config."""
    logs = {name: (folder / name).read_bytes().splitlines(keepends=True) for name in ("gateway.log", "app.log")}
    share = min(1.0, lines / sum(map(len, logs.values())))
    for name, kept in logs.items():
        (into / name).write_bytes(b"".join(kept[: round(len(kept) * share)]))
    for other in folder.iterdir():  # the config, and the revocation list it names
        if other.is_file() and other.suffix != ".log":
            shutil.copy(other, into / other.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"), help="which bench_replay data set")
    parser.add_argument("--data", type=Path, help="a bench/.data folder (default: the first of the format)")
    parser.add_argument("--lines", type=int, default=20_000, help="lines of both logs replayed")
    parser.add_argument("--against", type=Path, action="append", default=[], help="another checkout to count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    source = args.data or data_folder(args.format)
    print(f"data: the first {args.lines:,} lines of {source.name}; python {sys.executable}")
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _cut(source, args.lines, folder)
        for tree in [HERE, *args.against]:
            setup, _ = _count(tree, folder, "setup")
            whole, events = _count(tree, folder, "replay")
            per_event = (whole - setup) / events
            figures.append(per_event)
            print(f"{str(tree):32s} {events:>8,} events {whole - setup:>15,} instructions {per_event:>8,.0f} an event"
                  + (f" ({per_event / figures[0]:.3f}x this tree)" if len(figures) > 1 else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
