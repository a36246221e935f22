"""Real servers for integration tests: Kafka, Elasticsearch and OpenSearch on loopback.

The README's test command starts them with ``services/up.sh`` and exports their
addresses (``.cache/run/services.env``). Run alone, these fixtures start what is
missing the same way. They never fall back to a mock: if a server cannot be
started, the tests that need it fail with the script's message.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_FILE = REPO / ".cache" / "run" / "services.env"


def _service_address(variable: str, service: str) -> str:
    if variable in os.environ:
        return os.environ[variable]
    result = subprocess.run([str(REPO / "services" / "up.sh"), service], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"services/up.sh {service} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    for line in ENV_FILE.read_text().splitlines():
        name, _, value = line.partition("=")
        if name == variable:
            os.environ[variable] = value
            return value
    pytest.fail(f"services/up.sh {service} did not write {variable} to {ENV_FILE}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = _service_address("GW_KAFKA_BOOTSTRAP", "kafka")
    _wait_for_group_coordinator(bootstrap)
    return bootstrap


def _wait_for_group_coordinator(bootstrap: str, timeout_secs: float = 60.0) -> None:
    """A broker started a moment ago has no group coordinator yet: the first offset lookup would fail."""
    from kafka import KafkaAdminClient
    from kafka.errors import CoordinatorNotAvailableError, NodeNotReadyError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout_secs
    try:
        while True:
            try:
                admin.list_group_offsets("gatewatch-tests-probe")
                return
            except (CoordinatorNotAvailableError, NodeNotReadyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


@pytest.fixture(scope="session")
def elasticsearch_url() -> str:
    return _service_address("GW_ELASTICSEARCH_URL", "elasticsearch")


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    return _service_address("GW_OPENSEARCH_URL", "opensearch")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


# -- the fault suite's counts, shown at the end of the run (CI runs pytest -q, which hides prints) --

FAULT_COUNTS: list[str] = []


@pytest.fixture
def fault_counts() -> Callable[[str], None]:
    """``record(line)``: print ``line`` and repeat it in the terminal summary."""

    def record(line: str) -> None:
        print(line)
        FAULT_COUNTS.append(line)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FAULT_COUNTS:
        terminalreporter.section("fault suite counts")
        for line in FAULT_COUNTS:
            terminalreporter.write_line(line)
