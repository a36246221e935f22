"""Run ``gatewatch`` with a thread that records where its memory is, for the soak's RSS questions.

    python bench/mem_probe.py OUT.jsonl serve --config ...     (what serve_harness runs when
                                                              GW_BENCH_MEM_PROBE names a directory)

Every ``GW_BENCH_MEM_PROBE_SECS`` (5) seconds one JSON line: RSS, glibc's heap
(``mallinfo2``: bytes in use, free bytes the allocator keeps, mmapped bytes),
CPython's own count of allocated blocks,
the gc generations, the thread count, and with ``GW_BENCH_TRACEMALLOC=1`` the
bytes Python objects hold (tracemalloc, which slows the process). ``GW_BENCH_PRELOAD``
(comma-separated modules) are imported before gatewatch starts. RSS growing
while Python's bytes stay flat is the allocator keeping memory, not a leak.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import orjson


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sample(started: float) -> dict[str, object]:
    """One row of figures about this process's memory."""
    info = _LIBC.mallinfo2()
    row: dict[str, object] = {
        "secs": round(time.monotonic() - started, 1),
        "rss": _rss_bytes(),
        "heap_in_use": info.uordblks,  # allocated from arenas (brk and mmapped arena heaps)
        "heap_free": info.fordblks,  # free inside arenas: kept by the allocator, counted in RSS once touched
        "heap_total": info.arena,
        "mmapped": info.hblkhd,  # large blocks mmapped on their own: returned to the OS when freed
        "py_blocks": sys.getallocatedblocks(),
        "gc_counts": gc.get_count(),
        "threads": threading.active_count(),
        "modules": len(sys.modules),  # a step here with one in RSS: an import, paid once
    }
    if tracemalloc.is_tracing():
        row["py_traced"], row["py_traced_peak"] = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
    return row


def growth(previous: tracemalloc.Snapshot | None, top: int = 15) -> tuple[tracemalloc.Snapshot, list[str]]:
    """A new snapshot and the source lines whose live allocations grew most since ``previous``."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if previous is None:
        return snapshot, []
    return snapshot, [str(stat) for stat in snapshot.compare_to(previous, "lineno")[:top]]


def _run(out: Path, every_secs: float, diff_secs: float) -> None:
    started = time.monotonic()
    snapshot, diffed_at = None, started
    with out.open("ab") as sink:
        while True:
            row = sample(started)
            if tracemalloc.is_tracing() and time.monotonic() - diffed_at >= diff_secs:
                snapshot, row["grew"] = growth(snapshot)
                diffed_at = time.monotonic()
            sink.write(orjson.dumps(row) + b"\n")
            sink.flush()
            time.sleep(every_secs)


def main() -> None:
    out = Path(sys.argv[1])
    if os.environ.get("GW_BENCH_TRACEMALLOC") == "1":
        tracemalloc.start(1)
    every = float(os.environ.get("GW_BENCH_MEM_PROBE_SECS", "5"))
    diff = float(os.environ.get("GW_BENCH_TRACEMALLOC_DIFF_SECS", "30"))
    threading.Thread(target=_run, args=(out, every, diff), name="mem-probe", daemon=True).start()
    for module in filter(None, os.environ.get("GW_BENCH_PRELOAD", "").split(",")):
        importlib.import_module(module)  # what a lazy import would load mid-run
    import gatewatch.cli

    sys.exit(gatewatch.cli.main(sys.argv[2:]))


if __name__ == "__main__":
    main()
