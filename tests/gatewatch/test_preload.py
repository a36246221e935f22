"""serve imports scikit-learn at start when behaviour_outlier is on, and not when it is off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from gatewatch.config import parse_config
from gatewatch.preload import preload_detector_imports
config = parse_config({"detectors": {"behaviour_outlier": {"enabled": %s}}})
assert "sklearn" not in sys.modules
thread = preload_detector_imports(config)
if thread is not None:
    thread.join(120)
print(thread is not None, "sklearn.ensemble" in sys.modules)
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_scikit_learn_is_imported_at_start_only_for_behaviour_outlier(enabled: bool) -> None:
    # A fresh interpreter: in this one another test may have imported scikit-learn already.
    done = subprocess.run([sys.executable, "-c", PROBE % enabled], cwd=REPO, capture_output=True, text=True,
                          timeout=180, check=True)  # fmt: skip
    assert done.stdout.split() == [str(enabled), str(enabled)]
