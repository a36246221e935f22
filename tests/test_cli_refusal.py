"""Broken configs and files given on the command line: exit 2, one line on stderr, never a traceback.

Runs the real ``gatewatch`` command in subprocesses (all at once: each one's
start-up is most of its time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TRUSTED = "trust: {gateway_networks: [10.0.0.0/24]}\n"

# name -> (config file bytes or None, extra files {name: bytes}, argv after "replay" using {dir})
CONFIGS: dict[str, bytes] = {
    "cidr_prefix_99": b"trust:\n  internal_callers: [spiffe://x/ns/ops/sa/reconciler, 10.3.0.0/99]\n",
    "cidr_bad_address": b"trust:\n  gateway_networks: [10.0.0.300/24]\n",
    "ipv6_prefix_129": b"trust:\n  internal_callers: ['fe80::/129']\n",
    "lateness_inf": b"correlate:\n  allowed_lateness_secs: .inf\n",
    "window_nan": b"detectors:\n  http_4xx_burst:\n    window_secs: .nan\n",
    "join_window_absurd": b"correlate:\n  join_window_secs: 1.0e+300\n",
    "idle_timeout_negative": b"correlate:\n  idle_timeout_secs: -1\n",
    "skew_negative": b"detectors:\n  token_replay:\n    skew_allowance_secs: -30\n",
    "max_line_bytes_1e23": b"gateway:\n  max_line_bytes: 1.0e+23\n",
    "max_line_bytes_text": b"app:\n  max_line_bytes: 1e23\n",
    "bulk_huge": b"store:\n  bulk_max_docs: 100000000\n",
    "unknown_key": b"correlate:\n  lateness: 5\n",
    "not_utf8": TRUSTED.encode() + b"# caf\xe9\n",
    "not_yaml": b"trust: [\n",
    "yaml_control_chars": b"trust:\x00\x07\n",
    "deep_yaml": b"a: " + b"[" * 20_000 + b"\n",
    "top_level_list": b"- a\n- b\n",
    "revoked_not_utf8": (TRUSTED + "tokens: {revoked: revoked.csv}\n").encode(),
}
REVOKED = {
    "revoked_not_utf8": b"jti,revoked_at\n\xff\xfe,2026-01-01T00:00:00Z\n",
}
EXTRA: dict[str, list[str]] = {
    "config_is_a_folder": ["--config", "{dir}"],
    "config_name_with_escapes": ["--config", "{dir}/\x1b[31m[/x]\r\nforged.yaml"],
    "alerts_out_unwritable": ["--alerts-out", "/proc/no/such/alerts.ndjson"],
    "gateway_is_a_folder": ["--gateway", "{dir}"],
    "gateway_is_a_pipe": ["--gateway", "{dir}/fifo"],  # read twice (its head, then its lines), it lost lines
    "store_unknown": ["--store", "bogus:x"],
    "store_unwritable": ["--store", "duckdb:/proc/no/such.duckdb"],
}
REVOKED_MORE = {
    "revoked_no_header": b"a,b\nx,y\n",
    "revoked_bad_time": b"jti,revoked_at\nj,yesterday\n",
}


def _cases(tmp_path: Path) -> dict[str, list[str]]:
    log = tmp_path / "gateway.log"
    log.write_text("")
    os.mkfifo(tmp_path / "fifo")  # nobody writes to it: opened for its lines, it would wait forever
    good = tmp_path / "good.yaml"
    good.write_text(TRUSTED)
    base = ["--gateway", str(log), "--alerts-out", str(tmp_path / "alerts.ndjson"), "--store", "none"]
    cases: dict[str, list[str]] = {}
    for name, content in CONFIGS.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "gatewatch.yaml").write_bytes(content)
        if name in REVOKED:
            (folder / "revoked.csv").write_bytes(REVOKED[name])
        cases[name] = ["replay", "--config", str(folder / "gatewatch.yaml"), *base]
    for name, content in REVOKED_MORE.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "revoked.csv").write_bytes(content)
        (folder / "gatewatch.yaml").write_text(TRUSTED + "tokens: {revoked: revoked.csv}\n")
        cases[name] = ["replay", "--config", str(folder / "gatewatch.yaml"), *base]
    for name, extra in EXTRA.items():
        argv = ["replay", "--config", str(good), *base]
        for flag, value in zip(extra[::2], extra[1::2]):
            argv[argv.index(flag) + 1] = value.format(dir=tmp_path)
        cases[name] = argv
    cases["serve_with_bad_config"] = ["serve", "--config", str(tmp_path / "lateness_inf" / "gatewatch.yaml")]
    return cases


def test_every_broken_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = _cases(tmp_path)
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "gatewatch.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, argv in cases.items()
    }
    outcomes = {}
    for name, process in running.items():
        _, err = process.communicate(timeout=120)
        outcomes[name] = (process.returncode, err.decode("utf-8", "replace"))
    wrong = {
        name: (code, err)
        for name, (code, err) in outcomes.items()
        if code != 2 or "Traceback" in err or len(err.splitlines()) != 1 or not err.startswith("error: ")
        or "\x1b" in err or "\r" in err
    }  # fmt: skip
    assert wrong == {}
    print(f"\nrefused with one line and exit 2: {len(outcomes)} broken configs and files")


def test_a_damaged_gzip_is_one_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    # Damage is data, not a broken setting: the lines before it are read (none here), the other files too.
    (tmp_path / "bad.log.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "good.yaml").write_text(TRUSTED)
    argv = ["replay", "--config", str(tmp_path / "good.yaml"), "--gateway", str(tmp_path / "bad.log.gz"),
            "--alerts-out", str(tmp_path / "alerts.ndjson"), "--store", "none"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "gatewatch.cli", *argv], capture_output=True, timeout=120)
    err = done.stderr.decode()
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert done.returncode == 0 and "Traceback" not in err, err
    assert len(warnings) == 1 and "gzip_damaged" in warnings[0] and "bad.log.gz" in warnings[0]


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("cidr_prefix_99", "trust.internal_callers"),
        ("lateness_inf", "correlate.allowed_lateness_secs"),
        ("window_nan", "detectors.http_4xx_burst.window_secs"),
        ("join_window_absurd", "correlate.join_window_secs"),
        ("skew_negative", "detectors.token_replay.skew_allowance_secs"),
        ("max_line_bytes_1e23", "gateway.max_line_bytes"),
        ("not_utf8", "not UTF-8"),
        ("revoked_not_utf8", "revocation list"),
    ],
)
def test_the_message_names_the_key_or_the_file(tmp_path: Path, name: str, names: str) -> None:
    from gatewatch.cli import main

    argv = _cases(tmp_path)[name]
    import gatewatch.cli

    with gatewatch.cli.console.capture() as captured:
        assert main(argv) == 2
    assert names in captured.get()


def test_version_names_this_release() -> None:
    """An upgrade trial: every release said 0.1.0 and none could be asked which it was."""
    import tomllib

    version = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", "gatewatch.cli", "--version"], capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout.decode().strip() == f"gatewatch {version}"


def test_kafka_pythons_slow_task_warnings_stay_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # A soak: "Task <kafka.net.selector.Task object at 0x...> ran for 0.209s ... Other pollers will time out."
    # whenever its thread waited for a core; not key=value, and nothing about gatewatch.
    import logging

    from gatewatch.cli import main

    main(["schema"])
    selector = logging.getLogger("kafka.net.selector")
    with caplog.at_level("WARNING"):
        selector.warning("Task %r ran for 0.209s (>0.100s threshold). It is blocking the event loop -- likely", 1)
        selector.warning("Wakeup socket returned empty. Rebuilding.")
    assert [r.getMessage() for r in caplog.records] == ["Wakeup socket returned empty. Rebuilding."]
