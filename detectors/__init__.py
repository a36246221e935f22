"""Detection rules. Each rule is one module here: ``detectors/<rule_id>.py``.

:func:`registry` finds every :class:`~detectors.base.Detector` subclass in the
package's modules, so adding a rule is adding its module — the config model,
the engine and the examples test pick it up from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from detectors.base import Detector
from ingest.errors import RuleRegistrationError

__all__ = ["RuleRegistrationError", "registry"]

_SUPPORT_MODULES = frozenset({"base", "alerts", "trust", "sample", "runner"})


@cache
def registry() -> dict[str, type[Detector]]:
    """Every detector class by ``rule_id``, in a stable (alphabetical) order."""
    found: dict[str, type[Detector]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name in _SUPPORT_MODULES or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Detector) and value is not Detector:
                if value.__module__ != module.__name__:
                    continue
                if value.rule_id in found:
                    raise RuleRegistrationError(
                        f"rule id {value.rule_id!r} is defined twice: "
                        f"{found[value.rule_id].__module__} and {value.__module__}"
                    )
                if value.rule_id != module_info.name:
                    raise RuleRegistrationError(
                        f"{value.__module__}.{value.__name__} has rule_id {value.rule_id!r}; "
                        f"a rule's module must be named after it"
                    )
                found[value.rule_id] = value
    return found
