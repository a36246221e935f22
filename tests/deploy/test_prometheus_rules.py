"""deploy/prometheus-rules.yml through Prometheus' own tool: it loads, and each group's unit tests pass.

Every group has ``tests/deploy/prometheus/<group>.test.yml`` (``promtool test rules``),
and every alert of the group has a case there where it must fire.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus-rules.yml"
UNIT_TESTS = Path(__file__).resolve().parent / "prometheus"
GROUPS = [group["name"] for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package prometheus (services/debian.sh)", pytrace=False)
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_group_and_no_other_has_a_unit_test_file() -> None:
    assert {path.name for path in UNIT_TESTS.glob("*.test.yml")} == {f"{group}.test.yml" for group in GROUPS}


@pytest.mark.parametrize("group", GROUPS)
def test_every_alert_of_the_group_has_a_case_where_it_fires(group: str) -> None:
    rules = next(g for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] if g["name"] == group)
    unit = yaml.safe_load((UNIT_TESTS / f"{group}.test.yml").read_text(encoding="utf-8"))
    assert unit["rule_files"] == [str(Path("..", "..", "..", "deploy", RULES.name))]
    firing = {
        case["alertname"]
        for test in unit["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules["rules"] if "alert" in rule}
    assert alerts <= firing, f"{group}: no case where {sorted(alerts - firing)} must fire"


@pytest.mark.parametrize("group", GROUPS)
def test_promtool_unit_tests_pass(group: str) -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS / f"{group}.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
