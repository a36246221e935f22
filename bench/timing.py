"""The benches' one way to time a run: the best CPU time of ``repeat`` runs, each after a full collection.

Imports nothing of gatewatch, so a bench that loads another tree's modules
(``--tree``, ``--against``) can use it too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def best_cpu_secs(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)
