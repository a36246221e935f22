"""A Billing that writes its fields elsewhere, configured from the documented names: nothing is lost.

The generated app log is rewritten so every field lives at another path, and
the config maps each documented ``app.fields`` name to it. gatewatch 0.1 ignored
the dotted names (``token.jti``, ``peer.ip``) without a word and missed the
token and peer incidents.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gatewatch.demo.files import write_demo
from tests.test_replay_end_to_end import SMALL_RUN, run_replay, verdict

# documented name -> (where the generated line has it, where this Billing writes it)
MOVES: dict[str, tuple[str, str]] = {
    "ts": ("ts", "@t"), "request_id": ("request_id", "http.rid"), "method": ("method", "http.verb"),
    "path": ("path", "http.route"), "status": ("status", "http.code"), "latency_ms": ("latency_ms", "http.took_ms"),
    "user_id": ("user_id", "who.user"), "org_id": ("org_id", "who.org"), "action": ("action", "what"),
    "outcome": ("outcome", "result"), "token.jti": ("token.jti", "jwt.id"), "token.sub": ("token.sub", "jwt.subject"),
    "token.org": ("token.org", "jwt.tenant"), "token.exp": ("token.exp", "jwt.expires"),
    "token.iat": ("token.iat", "jwt.issued"), "peer.ip": ("peer.ip", "conn.addr"),
    "peer.spiffe_id": ("peer.spiffe_id", "conn.spiffe"), "level": ("level", "severity"), "msg": ("msg", "text"),
}


def _take(obj: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    holder: Any = obj
    for part in parents:
        holder = holder.get(part) if isinstance(holder, dict) else None
    return holder.pop(last, None) if isinstance(holder, dict) else None


def _put(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


def remap(line: bytes) -> bytes:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line  # the demo's deliberately broken lines stay broken
    if not isinstance(obj, dict):
        return line
    moved: dict[str, Any] = {}
    for old, new in MOVES.values():
        value = _take(obj, old)
        if value is not None:
            _put(moved, new, value)
    for leftover in ("token", "peer"):
        if obj.get(leftover) == {}:
            del obj[leftover]
    return orjson.dumps({**obj, **moved})


@pytest.mark.parametrize("names", ["documented", "deprecated"])
def test_remapped_billing_fields_lose_no_incident(
    tmp_path: Path, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    files.app_log.write_bytes(b"\n".join(remap(line) for line in files.app_log.read_bytes().splitlines()) + b"\n")
    config = yaml.safe_load(files.config_yaml.read_text())
    fields = {name: new for name, (_, new) in MOVES.items()}
    if names == "deprecated":  # gatewatch 0.1's names for the same fields
        old = {"latency_ms": "duration_ms", "token.jti": "token_jti", "token.sub": "token_sub",
               "token.org": "token_org", "token.exp": "token_exp", "token.iat": "token_iat",
               "peer.ip": "source_ip", "peer.spiffe_id": "peer_identity", "msg": "message"}
        fields = {old.get(name, name): path for name, path in fields.items()}
    config["app"] = {**config.get("app", {}), "fields": fields}
    files.config_yaml.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        alerts = run_replay(files, tmp_path, "none")
    assert ("app.fields.token_jti is deprecated: rename it to 'token.jti'" in caplog.text) == (names == "deprecated")
    missing, false_positives, unexplained = verdict(files, alerts)
    assert missing == [] and false_positives == [] and unexplained == []
    assert {"token_expired_accepted", "token_cross_org", "gateway_bypass"} <= {a["rule"] for a in alerts}
