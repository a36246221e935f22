"""Client addresses as an attacker writes them: a forged X-Forwarded-For, an app peer with its port.

A client can put any address at the left of X-Forwarded-For; only the right end was
written by proxies. Read from the left, forty 404s each with another forged entry
were forty clients of one error each, and no burst.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml

from gatewatch.cli import main

ATTACKER = "198.51.100.66"
BALANCER = "10.0.5.1"
FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(X-REQUEST-ID)%"\n'
)


def _gateway_line(second: int, forwarded_for: str, status: int = 404) -> str:
    return (
        f'[2026-12-07T10:00:{second:02d}.000Z] "GET /v1/invoices/{second} HTTP/1.1" {status} '
        f'"{forwarded_for}" "req-{second}"\n'
    )


def _replay(tmp_path: Path, gateway: list[str], app: list[dict], **gateway_settings: object) -> list[dict]:
    config = {
        "gateway": {"format": FORMAT, **gateway_settings},
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "detectors": {"http_4xx_burst": {"min_errors": 30, "window_secs": 60}},
    }
    (tmp_path / "gatewatch.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "gateway.log").write_text("".join(gateway))
    (tmp_path / "app.log").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in app))
    alerts_path = tmp_path / "alerts.ndjson"
    code = main([
        "replay", "--config", str(tmp_path / "gatewatch.yaml"), "--gateway", str(tmp_path / "gateway.log"),
        "--app", str(tmp_path / "app.log"), "--alerts-out", str(alerts_path), "--store", "none",
    ])  # fmt: skip
    assert code == 0
    return [orjson.loads(line) for line in alerts_path.read_bytes().splitlines()]


def _bursts(alerts: list[dict]) -> list[str]:
    return [a["entity"]["value"] for a in alerts if a["rule"] == "http_4xx_burst"]


def test_a_forged_forwarded_for_does_not_hide_a_burst(tmp_path: Path) -> None:
    gateway = [_gateway_line(s, f"10.9.{s}.{s}, {ATTACKER}") for s in range(40)]
    assert _bursts(_replay(tmp_path, gateway, [])) == [ATTACKER]


def test_behind_a_balancer_the_client_is_left_of_the_trusted_hops(tmp_path: Path) -> None:
    gateway = [_gateway_line(s, f"10.9.{s}.{s}, {ATTACKER}, {BALANCER}") for s in range(40)]
    assert _bursts(_replay(tmp_path, gateway, [], xff_num_trusted_hops=1)) == [ATTACKER]
    assert _bursts(_replay(tmp_path, gateway, [])) == [BALANCER]  # unset: the balancer is the client


def test_an_app_peer_with_a_port_is_judged_by_its_address(tmp_path: Path) -> None:
    app = [
        {"ts": "2026-12-07T10:00:01Z", "request_id": "req-gw", "status": 200, "peer": {"ip": "10.0.0.99:5555"}},
        {"ts": "2026-12-07T10:00:02Z", "request_id": "req-out", "status": 200, "peer": {"ip": "203.0.113.9:443"}},
    ]
    gateway = [_gateway_line(1, "192.0.2.1", status=200).replace("req-1", "req-gw")]
    bypasses = [a for a in _replay(tmp_path, gateway, app) if a["rule"] == "gateway_bypass"]
    assert [(a["reason"], a["entity"]["value"]) for a in bypasses] == [("untrusted_peer", "203.0.113.9")]


def test_a_stolen_token_used_with_the_separator_in_the_user_agent_is_still_a_replay(tmp_path: Path) -> None:
    # A red-team trial: `" "` in the User-Agent makes the line read two ways, so it gets no client address,
    # and token_replay, which counts addresses, never fired for the thief.
    fmt = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% "%REQ(X-FORWARDED-FOR)%" '
           '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%"\n')  # fmt: skip

    def line(second: int, client: str, agent: str) -> str:
        return (f'[2026-12-07T10:00:{second:02d}.000Z] "GET /v1/invoices HTTP/1.1" 200 "{client}" "{agent}" '
                f'"req-{second}"\n')  # fmt: skip

    app = [{"ts": f"2026-12-07T10:00:{s:02d}.100Z", "request_id": f"req-{s}", "status": 200,
            "peer": {"ip": "10.0.0.10"}, "token": {"jti": "J-stolen", "sub": "u-1"}} for s in (1, 2, 3)]  # fmt: skip
    victim = [line(1, "198.51.100.7", "Mozilla/5.0")]
    thief = [line(2, "203.0.113.9", 'curl/8, 10.1.1.1" "x'), line(3, "203.0.113.9", 'curl/8, 10.1.1.1" "x')]
    replays = [a for a in _replay(tmp_path, victim + thief, app, format=fmt) if a["rule"] == "token_replay"]
    assert [(a["entity"]["value"], a["details"]["new_address"]) for a in replays] == [
        ("J-stolen", "ambiguous:10.1.1.1,203.0.113.9")]
    # the thief alone, every line the same way: one client, no replay
    assert [a for a in _replay(tmp_path, thief, app[1:], format=fmt) if a["rule"] == "token_replay"] == []
