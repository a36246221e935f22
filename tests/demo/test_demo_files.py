"""write_demo: logs, revocation CSV, config and expectations on disk, byte-for-byte reproducible."""

from __future__ import annotations

import gzip
import re
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import yaml

from gatewatch.demo import DEMO_JSON_FORMAT, DEMO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT, DemoFiles, write_demo
from gatewatch.demo.files import OVERSIZED_LINE_BYTES
from gatewatch.errors import ConfigError

SMALL = {"seed": 11, "duration_secs": 900.0, "requests_per_sec": 5.0}
LEFTOVER = re.compile(r"%[A-Z][A-Z0-9_]*(\(|%|:\d)")


def _lines(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def text_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("text"), **SMALL)


@pytest.mark.parametrize("compress", [False, True])
def test_same_seed_same_bytes(tmp_path: Path, compress: bool) -> None:
    write_demo(tmp_path / "a", gzip=compress, **SMALL)
    write_demo(tmp_path / "b", gzip=compress, **SMALL)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(first) == {"gateway.log" + ".gz" * compress, "app.log" + ".gz" * compress, "revoked.csv",
                          "gatewatch.yaml", "expected.json"}  # fmt: skip
    assert first == second


def test_gzip_holds_the_same_lines(tmp_path: Path, text_demo: DemoFiles) -> None:
    packed = write_demo(tmp_path, gzip=True, **SMALL)
    assert _lines(packed.gateway_log) == _lines(text_demo.gateway_log)
    assert _lines(packed.app_log) == _lines(text_demo.app_log)


def test_text_gateway_log(text_demo: DemoFiles) -> None:
    lines = _lines(text_demo.gateway_log)
    expected = text_demo.expected
    assert len(lines) == expected.records["gateway"] + 3
    bad = {"invalid_utf8": 0, "oversized": 0}
    good = 0
    for line in lines:
        if len(line) > OVERSIZED_LINE_BYTES:
            bad["oversized"] += 1
            continue
        try:
            text = line.decode()
        except UnicodeDecodeError:
            bad["invalid_utf8"] += 1
            continue
        assert text.startswith("ACCESS [")
        assert not LEFTOVER.search(text)
        good += bool(re.search(r" exp=(\d+|-)$", text))  # the truncated line stops short of it
    assert bad == {"invalid_utf8": 1, "oversized": 1}
    assert good == expected.records["gateway"]
    assert expected.dead_letters["gateway"] == {"truncated": 1, "invalid_utf8": 1, "oversized": 1}


def test_app_log(text_demo: DemoFiles) -> None:
    lines = _lines(text_demo.app_log)
    assert len(lines) == text_demo.expected.records["app"] + 3
    failures, oversized, late, newest = 0, 0, 0, ""
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            failures += 1  # the invalid JSON line and the non-UTF-8 one
            continue
        if len(line) > OVERSIZED_LINE_BYTES:
            oversized += 1
            continue
        if record["ts"] < newest:
            late += 1
        newest = max(newest, record["ts"])
    assert (failures, oversized) == (2, 1)
    assert late == text_demo.expected.late_app_lines > 0
    assert text_demo.expected.dead_letter_count == 6


@pytest.mark.parametrize("fmt", ["json", "json_strings"])
def test_json_gateway_log(tmp_path: Path, fmt: str) -> None:
    demo = write_demo(tmp_path, gateway_format=fmt, **SMALL)
    parsed, broken = 0, 0
    for line in _lines(demo.gateway_log):
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            broken += 1  # truncated and non-UTF-8
            continue
        parsed += 1
        status = document["http"]["status"]
        assert isinstance(status, int if fmt == "json" else str)
    assert broken == 2
    assert parsed == demo.expected.records["gateway"] + 1  # the oversized line is valid JSON
    config = yaml.safe_load(demo.config_yaml.read_text())
    assert config["gateway"] == {"json_format": DEMO_JSON_FORMAT}


def test_default_format_expectations(tmp_path: Path) -> None:
    demo = write_demo(tmp_path, gateway_format="default", **SMALL)
    assert yaml.safe_load(demo.config_yaml.read_text())["gateway"] == {"format": ENVOY_DEFAULT_FORMAT}
    first = _lines(demo.gateway_log)[0].decode()
    assert first.startswith("[2026-03-02T") and first.endswith('"10.1.0.20:8080"')
    # No route names in this format: the 5xx burst is expected on authority/segment, route look-alikes go.
    plan = demo.expected.scenario
    assert [i.entity_value for i in plan.expected("http_5xx_burst")] == ["api.billing.example/v1"]
    assert not [a for a in plan.look_alikes if a.entity_type == "route"]


def test_config(text_demo: DemoFiles) -> None:
    config = yaml.safe_load(text_demo.config_yaml.read_text())
    assert config == {
        "gateway": {"format": DEMO_TEXT_FORMAT},
        "app": {"fields": {}},
        "trust": {
            "gateway_identities": ["spiffe://billing.example/ns/edge/sa/ambassador"],
            "gateway_networks": ["10.0.0.0/24"],
            "allowlist_paths": ["/healthz", "/readyz", "/livez", "/metrics"],
            "internal_callers": ["spiffe://billing.example/ns/ops/sa/reconciler"],
        },
        "tokens": {"revoked": "revoked.csv"},
    }
    assert (text_demo.config_yaml.parent / config["tokens"]["revoked"]) == text_demo.revoked_csv


def test_config_loads_in_the_pipeline(text_demo: DemoFiles) -> None:
    config_module = pytest.importorskip("gatewatch.config")
    config = config_module.load_config(text_demo.config_yaml)
    assert config.gateway.format == DEMO_TEXT_FORMAT
    assert Path(config.tokens.revoked) == text_demo.revoked_csv


def test_revocation_csv(text_demo: DemoFiles) -> None:
    rows = text_demo.revoked_csv.read_text().splitlines()
    assert rows[0] == "jti,revoked_at"
    revoked = {}
    for row in rows[1:]:
        jti, when = row.split(",")
        revoked[jti] = datetime.fromisoformat(when).timestamp()
    plan = text_demo.expected.scenario
    used = plan.expected("token_revoked_used")[0]
    assert used.entity_value in revoked and revoked[used.entity_value] < used.start
    benign = plan.benign("token_revoked_used")[0]
    assert revoked[benign.entity_value] >= benign.end


def test_expected_json(text_demo: DemoFiles) -> None:
    document = orjson.loads(text_demo.expected.path.read_bytes())
    assert document["records"] == text_demo.expected.records
    assert document["dead_letter_count"] == 6
    assert document["by_rule"] == text_demo.expected.scenario.by_rule()
    assert {i["rule"] for i in document["injections"] if i["required"]} == set(document["by_rule"])


def test_short_run_still_gets_every_bad_line(tmp_path: Path) -> None:
    demo = write_demo(tmp_path, seed=1, duration_secs=30.0, requests_per_sec=1.0, attacks=False)
    assert len(_lines(demo.gateway_log)) == demo.expected.records["gateway"] + 3
    assert len(_lines(demo.app_log)) == demo.expected.records["app"] + 3


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--format"):
        write_demo(tmp_path, gateway_format="xml", **SMALL)  # type: ignore[arg-type]
