"""serve's memory settings: glibc's allocator tuned, an operator's own settings kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Free an 8 MiB block (glibc then serves blocks up to 8 MiB from its heap), then take 2 MiB:
# mapped on its own only if the threshold stayed fixed at 1 MiB.
MALLOC = """
import ctypes, sys
from gatewatch.service_memory import tune_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = tune_malloc() if sys.argv[1] == "tuned" else {}
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(2 << 20)
print(sorted(applied), libc.mallinfo2().hblkhd - before >= 2 << 20)
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    # A fresh interpreter each: this one's allocator has a history of its own.
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, check=True, env=env)  # fmt: skip
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_maps_large_blocks_whatever_was_freed_before() -> None:
    assert _run(MALLOC, "default") == ["[]", "False"]  # the dynamic threshold: 2 MiB now from the heap
    assert _run(MALLOC, "tuned") == ["['MALLOC_ARENA_MAX',", "'MALLOC_MMAP_THRESHOLD_',", "'MALLOC_TRIM_THRESHOLD_']",
                                     "True"]  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_an_operators_malloc_variables_win() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "16777216"}
    applied, mapped = " ".join(_run(MALLOC, "tuned", env=env)).rsplit(" ", 1)
    assert applied == "['MALLOC_ARENA_MAX', 'MALLOC_TRIM_THRESHOLD_']" and mapped == "False"
