"""Write a demo run to disk: gateway log, app log, revocation CSV, pipeline config, expectations.

The logs hold the generated records in delivery order, plus six bad lines at
fixed points (a quarter, half and three quarters of the expected line count)
so the dead-letter path runs: in the gateway log a truncated line, a line
that is not UTF-8 and a 2 MB line; in the app log an invalid JSON line, a line
that is not UTF-8 and a 2 MB line. Same arguments, same bytes (gzip included:
its header carries no name and no time).
"""

from __future__ import annotations

import gzip as gzip_module
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import orjson
import yaml

from gatewatch.demo.builder import Builder
from gatewatch.demo.render import DEMO_JSON_FORMAT, DEMO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT, compile_json, compile_text
from gatewatch.demo.scenario import Scenario
from gatewatch.demo.traffic import run, scenario
from gatewatch.demo.world import (
    ALLOWLIST_PATHS,
    DEFAULT_START,
    GATEWAY_IDENTITY,
    GATEWAY_NETWORK,
    GATEWAY_PODS,
    RECONCILER_IDENTITY,
    uuid_from_bits,
)
from gatewatch.errors import ConfigError

GatewayFormat = Literal["text", "default", "json", "json_strings"]
OVERSIZED_LINE_BYTES = 2 * 1024 * 1024
_WRITE_BATCH_LINES = 4096

BAD_GATEWAY_LINES = ("truncated", "invalid_utf8", "oversized")
"""Dead-letter reasons of the bad gateway lines, in file order."""
BAD_APP_LINES = ("invalid_json", "invalid_utf8", "oversized")
"""Dead-letter reasons of the bad app lines, in file order."""


@dataclass(frozen=True)
class DemoExpected:
    """What a pipeline reading the demo files should find.

    ``dead_letters`` maps dataset (``gateway``/``app``) to reason -> count;
    ``records`` counts the good lines per dataset. ``path`` is ``expected.json``.
    """

    scenario: Scenario
    records: dict[str, int]
    dead_letters: dict[str, dict[str, int]]
    path: Path
    gateway_format: str = "text"
    late_app_lines: int = 0

    @property
    def dead_letter_count(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.dead_letters.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "gateway_format": self.gateway_format,
            "records": self.records,
            "dead_letters": self.dead_letters,
            "dead_letter_count": self.dead_letter_count,
            "late_app_lines": self.late_app_lines,
            **self.scenario.to_dict(),
        }


@dataclass(frozen=True)
class DemoFiles:
    """Paths of one written demo run and what it should yield."""

    gateway_log: Path
    app_log: Path
    revoked_csv: Path
    config_yaml: Path
    expected: DemoExpected


def gateway_renderer(gateway_format: GatewayFormat) -> Callable[[dict[str, Any]], bytes]:
    """Record -> one encoded gateway line (with its line ending) in ``gateway_format``."""
    if gateway_format in ("text", "default"):
        render = compile_text(DEMO_TEXT_FORMAT if gateway_format == "text" else ENVOY_DEFAULT_FORMAT)
        return lambda record: render(record).encode()
    if gateway_format in ("json", "json_strings"):
        render_json = compile_json(DEMO_JSON_FORMAT, typed=gateway_format == "json")
        return lambda record: render_json(record) + b"\n"
    raise ConfigError(f"demo: --format must be text, default, json or json_strings, not {gateway_format!r}")


def config_document(gateway_format: GatewayFormat, revoked_csv: Path) -> dict[str, Any]:
    """The pipeline config for the demo files (the lead's config model keys)."""
    if gateway_format in ("json", "json_strings"):
        gateway: dict[str, Any] = {"json_format": DEMO_JSON_FORMAT}
    else:
        gateway = {"format": DEMO_TEXT_FORMAT if gateway_format == "text" else ENVOY_DEFAULT_FORMAT}
    return {
        "gateway": gateway,
        "app": {"fields": {}},
        "trust": {
            "gateway_identities": [GATEWAY_IDENTITY],
            "gateway_networks": [GATEWAY_NETWORK],
            "allowlist_paths": list(ALLOWLIST_PATHS),
            "internal_callers": [RECONCILER_IDENTITY],
        },
        # Relative to the config file's folder (as the config loader resolves it): the demo folder can move.
        "tokens": {"revoked": revoked_csv.name},
    }


def write_demo(
    directory: str | Path,
    seed: int = 7,
    duration_secs: float = 1800.0,
    requests_per_sec: float = 50.0,
    gateway_format: GatewayFormat = "text",
    gzip: bool = False,
    attacks: bool = True,
    start: float = DEFAULT_START,
) -> DemoFiles:
    """Generate a run and write ``gateway.log``, ``app.log`` (``.gz`` with ``gzip``), ``revoked.csv``,
    ``gatewatch.yaml`` and ``expected.json`` into ``directory`` (created if missing).

    ``gateway_format``: ``text`` (:data:`DEMO_TEXT_FORMAT`), ``default`` (Envoy's
    default format: no route, peer or JWT fields), ``json`` (:data:`DEMO_JSON_FORMAT`,
    typed as Envoy v3 writes it) or ``json_strings`` (the legacy all-strings JSON).
    """
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    render_gateway = gateway_renderer(gateway_format)
    plan = scenario(seed, start, duration_secs, requests_per_sec, attacks)
    suffix = ".gz" if gzip else ""
    gateway_path = folder / f"gateway.log{suffix}"
    app_path = folder / f"app.log{suffix}"
    revoked_path = folder / "revoked.csv"
    config_path = folder / "gatewatch.yaml"
    expected_path = folder / "expected.json"

    # Bad lines go in at fixed fractions of the expected line counts (~2.4 app lines per request).
    requests = requests_per_sec * duration_secs
    bad = _BadLines(plan, gateway_format, render_gateway)
    gateway_marks = [int(requests * f) for f in (0.25, 0.5, 0.75)]
    app_marks = [int(requests * 1.4 * f) for f in (0.25, 0.5, 0.75)]
    counts = {"gateway": 0, "app": 0}
    late = 0
    app_clock = ""
    with _open(gateway_path, gzip) as gateway_out, _open(app_path, gzip) as app_out:
        gateway_lines: list[bytes] = []
        app_lines: list[bytes] = []
        dumps = orjson.dumps
        for kind, record in run(plan):
            if kind == "gateway":
                gateway_lines.append(render_gateway(record))
                counts["gateway"] += 1
                if gateway_marks and counts["gateway"] == gateway_marks[0]:
                    gateway_lines.append(bad.gateway(len(gateway_marks)))
                    gateway_marks.pop(0)
                if len(gateway_lines) >= _WRITE_BATCH_LINES:
                    gateway_out.write(b"".join(gateway_lines))
                    gateway_lines.clear()
            else:
                app_lines.append(dumps(record) + b"\n")
                counts["app"] += 1
                # ISO text of one format compares like the times it names.
                if record["ts"] < app_clock:
                    late += 1
                else:
                    app_clock = record["ts"]
                if app_marks and counts["app"] == app_marks[0]:
                    app_lines.append(bad.app(len(app_marks)))
                    app_marks.pop(0)
                if len(app_lines) >= _WRITE_BATCH_LINES:
                    app_out.write(b"".join(app_lines))
                    app_lines.clear()
        # A short run may not reach every mark: the remaining bad lines go at the end.
        for marks, lines, make in ((gateway_marks, gateway_lines, bad.gateway), (app_marks, app_lines, bad.app)):
            while marks:
                lines.append(make(len(marks)))
                marks.pop(0)
        gateway_out.write(b"".join(gateway_lines))
        app_out.write(b"".join(app_lines))

    revoked_path.write_text(plan.revocation_csv(), encoding="utf-8")
    config_path.write_text(
        yaml.safe_dump(config_document(gateway_format, revoked_path), sort_keys=False, allow_unicode=True,
                       width=1000),  # fmt: skip
        encoding="utf-8",
    )
    expected = DemoExpected(
        scenario=plan.for_gateway_format(gateway_format),
        records=counts,
        dead_letters={
            "gateway": {reason: 1 for reason in BAD_GATEWAY_LINES},
            "app": {reason: 1 for reason in BAD_APP_LINES},
        },
        path=expected_path,
        gateway_format=gateway_format,
        late_app_lines=late,
    )
    expected_path.write_bytes(orjson.dumps(expected.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return DemoFiles(gateway_path, app_path, revoked_path, config_path, expected)


class _BadLines:
    """The deliberately broken lines, built from plausible records so only the flaw differs."""

    def __init__(self, plan: Scenario, gateway_format: str, render_gateway: Callable[[dict[str, Any]], bytes]) -> None:
        self.plan = plan
        self.gateway_format = gateway_format
        self.render_gateway = render_gateway
        self.builder = Builder()
        self.rng = random.Random(f"{plan.seed}:bad-lines")

    def _gateway_record(self, user_agent: str) -> dict[str, Any]:
        ts = self.plan.start + self.rng.random() * self.plan.duration_secs
        rid = uuid_from_bits(self.rng.getrandbits(128))
        return self.builder.gateway_record(
            ts, rid, "GET", "/v1/invoices?limit=20&status=open", 200, "203.0.113.199", 40000, user_agent,
            "HTTP/1.1", "TLSv1.3", None, "via_upstream", 0, 1200, 40, 38, route="billing_invoices_list",
        )  # fmt: skip

    def gateway(self, remaining: int) -> bytes:
        kind = BAD_GATEWAY_LINES[len(BAD_GATEWAY_LINES) - remaining]
        if kind == "truncated":
            line = self.render_gateway(self._gateway_record("billing-sdk-python/3.4.1"))
            return line[: len(line) * 3 // 5] + b"\n"  # the writer died mid-line
        if kind == "invalid_utf8":
            return _high_bit_flipped(self.render_gateway(self._gateway_record("billing-sdk-python/3.4.1")))
        line = self.render_gateway(self._gateway_record("A" * OVERSIZED_LINE_BYTES))
        return line

    def app(self, remaining: int) -> bytes:
        kind = BAD_APP_LINES[len(BAD_APP_LINES) - remaining]
        ts = self.builder.clock.micros(self.plan.start + self.rng.random() * self.plan.duration_secs)
        rid = uuid_from_bits(self.rng.getrandbits(128))
        if kind == "invalid_json":
            # A hand-written debug line: single quotes and a bare word, not JSON.
            return f"{{'ts': '{ts}', 'level': 'debug', 'msg': cache warmed, 'request_id': '{rid}'}}\n".encode()
        record = {"ts": ts, "level": "info", "msg": "invoice retrieved", "request_id": rid, "method": "GET",
                  "path": "/v1/invoices?limit=20&status=open", "status": 200, "latency_ms": 12.0,
                  "peer": {"ip": GATEWAY_PODS[0], "spiffe_id": GATEWAY_IDENTITY}}  # fmt: skip
        if kind == "invalid_utf8":
            return _high_bit_flipped(orjson.dumps(record) + b"\n")
        record["msg"] = "payload: " + "x" * OVERSIZED_LINE_BYTES
        return orjson.dumps(record) + b"\n"


def _high_bit_flipped(line: bytes) -> bytes:
    """``line`` with the high bit of its first byte set, as a failing disk or link may leave it: not UTF-8
    where the format's structure is. (A value that is not UTF-8, a client's header, costs only its characters.)"""
    return bytes([line[0] | 0x80]) + line[1:]


def _open(path: Path, compress: bool) -> BinaryIO:
    if not compress:
        return open(path, "wb")  # noqa: SIM115 - closed by the caller's with
    raw = open(path, "wb")  # noqa: SIM115
    # No file name and mtime 0 in the header: the same run gives the same bytes.
    return cast(BinaryIO, _GzipFile(raw))  # a writable binary file, as far as the callers go


class _GzipFile(io.RawIOBase):
    """A gzip writer that also closes the file beneath it."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._gzip = gzip_module.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._gzip.write(data)

    def close(self) -> None:
        if not self.closed:
            self._gzip.close()
            self._raw.close()
        super().close()
