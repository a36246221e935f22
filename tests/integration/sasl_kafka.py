"""A real Kafka broker (KRaft) that only speaks SASL_SSL with SCRAM-SHA-512, started for the credential tests.

Certificates made here by ``openssl`` (a CA and the broker's certificate for
127.0.0.1, given to Kafka as PEM files), a SCRAM user for the broker itself and
one for gatewatch created when the storage is formatted, free ports chosen at
run time. Uses the jars ``services/fetch.sh`` put in ``.cache/services``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

REPO = Path(__file__).resolve().parents[2]
MECHANISM = "SCRAM-SHA-512"
USER, PASSWORD = "gatewatch-test", "Sc4am-only-in-env"
# A second user for the ACL test: its login works, and a topic that has ACLs (for USER only) is denied to it.
# Resources without ACLs stay open to every user (allow.everyone.if.no.acl.found), as before.
DENIED_USER, DENIED_PASSWORD = "gatewatch-no-acl", "N0-acl-for-me"
_BROKER_PASSWORD = "broker-inter-secret"


@dataclass(frozen=True, slots=True)
class SaslBroker:
    """A running SASL_SSL broker: where it listens and what a client needs to trust it."""

    bootstrap: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log: Path

    def security(self) -> dict[str, str]:
        """``kafka.security`` for gatewatch (no credentials: those come from the environment)."""
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "ssl_cafile": str(self.ca_file)}

    def client(self) -> dict[str, Any]:
        """kafka-python settings of the test's own clients."""
        return {"bootstrap_servers": self.bootstrap, **self.security(),
                "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}  # fmt: skip

    def stop(self) -> None:
        """Stop the broker's process group and wait for it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=gatewatch-test-ca", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf", cwd=directory)  # fmt: skip
    # Kafka's PEM keystore wants the key as unencrypted PKCS#8, after the certificate.
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8", cwd=directory)
    (directory / "keystore.pem").write_text((directory / "broker.pem").read_text() + (directory / "broker.pk8").read_text())


def _java() -> str:
    found = subprocess.run(["bash", "-c", f"source {REPO}/services/lib.sh; java_home 17 99"],
                           capture_output=True, text=True)  # fmt: skip
    if found.returncode != 0 or not found.stdout.strip():
        raise RuntimeError("no Java 17+ JDK found for the SASL broker")
    return f"{found.stdout.strip()}/bin/java"


def _kafka_libs() -> Path:
    subprocess.run([str(REPO / "services" / "fetch.sh"), "kafka"], check=True, capture_output=True)
    homes = sorted((REPO / ".cache" / "services").glob("kafka-*/libs"))
    if not homes:
        raise RuntimeError("services/fetch.sh kafka left no .cache/services/kafka-*/libs")
    return homes[-1]


def start_sasl_broker(directory: Path, timeout_secs: float = 60.0) -> SaslBroker:
    """Format and start the broker in ``directory``; return once a SCRAM login lists topics."""
    directory.mkdir(parents=True, exist_ok=True)
    _certificates(directory)
    port, controller = _free_port(), _free_port()
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" '
            f'password="{_BROKER_PASSWORD}";')  # fmt: skip
    properties = directory / "server.properties"
    properties.write_text(
        f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.location={directory / "keystore.pem"}
ssl.truststore.type=PEM
ssl.truststore.location={directory / "ca.pem"}
log.dirs={directory / "data"}
num.partitions=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:broker
allow.everyone.if.no.acl.found=true
"""
    )
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    java = [_java(), "-cp", f"{_kafka_libs()}/*", f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={REPO / 'services' / 'kafka' / 'log4j2.properties'}"]  # fmt: skip
    # 16 random bytes, base64 without padding, +/ mapped to letters: valid and never starting with '-' (as up.sh)
    cluster_id = base64.b64encode(os.urandom(16)).decode().rstrip("=").replace("+", "A").replace("/", "B")
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties),
         "--add-scram", f"{MECHANISM}=[name=broker,password={_BROKER_PASSWORD}]",
         "--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]",
         "--add-scram", f"{MECHANISM}=[name={DENIED_USER},password={DENIED_PASSWORD}]"],
        check=True, capture_output=True,
    )  # fmt: skip
    log = logs / "stdout.log"
    with log.open("ab") as out:
        process = subprocess.Popen([*java, "-Xms256m", "-Xmx256m", "kafka.Kafka", str(properties)],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    broker = SaslBroker(f"127.0.0.1:{port}", directory / "ca.pem", process, log)
    deadline = time.monotonic() + timeout_secs
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the SASL broker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # kafka-python leaks the socket of a refused connect (a ResourceWarning): wait for the port first.
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
            KafkaAdminClient(request_timeout_ms=5000, bootstrap_timeout_ms=5000, **broker.client()).close()
            return broker
        except (OSError, KafkaError):
            if time.monotonic() > deadline:
                broker.stop()
                raise RuntimeError(f"the SASL broker did not answer in {timeout_secs:.0f}s") from None
            time.sleep(0.5)
