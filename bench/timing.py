"""The benches' one way to time a run: the best CPU time of ``repeat`` runs, each after a full collection.

Imports nothing of gatewatch, so a bench that loads another tree's modules
(``--tree``, ``--against``) can use it too.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path


def best_cpu_secs(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def stat_cpu_secs(stat: Path) -> float:
    """User and system CPU seconds from a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat`` file.

    utime and stime are its fields 14 and 15, counted after the parenthesised command name
    (which may hold spaces). Raises OSError when the process or thread is gone.
    """
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
