"""Real receivers for the forwarder tests: an rsyslogd started here, and an HTTP server in a thread."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import orjson
import pytest

from tests.http_receiver import serving


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rsyslog:
    """An rsyslogd on loopback: plain TCP, TLS (certificates made for the test) and UDP, each into its own file."""

    work: Path
    ports: dict[str, int]
    ca_file: Path

    def log(self, transport: str) -> Path:
        return self.work / f"{transport}.log"

    def size(self, transport: str) -> int:
        path = self.log(transport)
        return path.stat().st_size if path.exists() else 0

    def wait_for_lines(self, transport: str, offset: int, count: int, timeout_secs: float = 20.0) -> list[bytes]:
        """The first ``count`` lines written after byte ``offset`` (waits for rsyslog to write them)."""
        deadline = time.monotonic() + timeout_secs
        while True:
            data = self.log(transport).read_bytes()[offset:] if self.log(transport).exists() else b""
            lines = data.split(b"\n")[:-1]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def _make_certificates(work: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (work / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=gatewatch test CA")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    (work / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(work / "san.ext"))  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="session")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    binary = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if binary is None:
        pytest.fail("rsyslogd is not installed: services/debian.sh installs rsyslog and rsyslog-gnutls")
    work = tmp_path_factory.mktemp("rsyslog")
    ca, cert, key = _make_certificates(work)
    ports = {"tcp": free_port(), "tls": free_port(), "udp": free_port(socket.SOCK_DGRAM)}
    conf = work / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="tcp") {{ action(type="omfile" file="{work}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{work}/tls.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{work}/udp.log" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{ports['tcp']}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{ports['tls']}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{ports['udp']}" ruleset="udp")
""")
    log_file = (work / "rsyslogd.out").open("wb")
    process = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = Rsyslog(work=work, ports=ports, ca_file=ca)
    try:
        _wait_until_listening(process, server, work)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log_file.close()


def _wait_until_listening(process: subprocess.Popen[bytes], server: Rsyslog, work: Path) -> None:
    deadline = time.monotonic() + 20
    ready: set[str] = set()
    while ready != {"tcp", "tls", "udp"}:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"rsyslogd did not start: {(work / 'rsyslogd.out').read_text(errors='replace')}")
        for transport in ("tcp", "tls"):
            if transport not in ready:
                try:
                    socket.create_connection(("127.0.0.1", server.ports[transport]), timeout=0.5).close()
                    ready.add(transport)
                except OSError:
                    pass
        if "udp" not in ready:
            # UDP has no handshake: a probe counts once rsyslog has written it.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"<13>1 - - probe - - - ready", ("127.0.0.1", server.ports["udp"]))
            if server.size("udp"):
                ready.add("udp")
        time.sleep(0.1)


# -- an HTTP receiver for the webhook forwarder ---------------------------------

SECRET = "s3cret-for-tests"


@dataclass
class Receiver:
    """What the server saw, and how it should answer next."""

    url: str = ""
    unavailable: int = 0  # answer this many requests with 503 + Retry-After: 1
    reject: set[str] = field(default_factory=set)  # event ids answered with 400
    redirect: bool = False  # answer every POST 302 to /moved (and count what comes there)
    redirected: list[str] = field(default_factory=list)  # requests that followed it: method and headers
    attempts: list[tuple[str, int, float]] = field(default_factory=list)  # (event id, status, monotonic time)
    accepted: list[dict] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            timestamp = self.headers["X-Gatewatch-Timestamp"]
            mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
            expected = "sha256=" + mac.hexdigest()
            event_id = self.headers["X-Gatewatch-Event-Id"]
            with state.lock:
                if not hmac.compare_digest(expected, self.headers["X-Gatewatch-Signature"]) or abs(
                    time.time() - int(timestamp)
                ) > 300:
                    state.bad_signatures += 1
                    status = 401
                elif state.unavailable:
                    state.unavailable -= 1
                    status = 503
                elif event_id in state.reject:
                    status = 400
                elif state.redirect:
                    status = 302
                else:
                    status = 200
                    state.accepted.append(orjson.loads(body))
                state.attempts.append((event_id, status, time.monotonic()))
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "1")
            if status == 302:
                self.send_header("Location", "/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802 (http.server's name): where a followed 302 would land
            with state.lock:
                state.redirected.append(f"GET {self.path} {self.headers.get('Authorization')}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    with serving(Handler) as port:
        state.url = f"http://127.0.0.1:{port}/alerts"
        yield state
