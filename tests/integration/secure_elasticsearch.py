"""A real Elasticsearch node with security on, started for the credential tests.

TLS on HTTP with certificates made here by ``openssl`` (a CA, the node's
certificate for 127.0.0.1, and a client certificate the node requires), the
file realm with three users (an admin, gatewatch's writer with only the
privileges gatewatch needs, and a user that may not write), on free ports
chosen at run time. Uses the distribution ``services/fetch.sh`` put in
``.cache/services``; runs as ``nobody`` when started as root, like ``up.sh``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECS = 240.0
PREFIX = "gwsec"

# What gatewatch needs, and nothing more: health, templates and the lifecycle policy, and on its
# own indices creating, writing, listing (retention) and deleting (retention without ILM).
WRITER_ROLE = {
    "cluster": ["monitor", "manage_index_templates", "manage_ilm"],
    "indices": [{
        "names": [f"{PREFIX}-*"],
        "privileges": ["create_index", "create_doc", "index", "view_index_metadata", "monitor", "delete_index"],
    }],
}  # fmt: skip
READ_ONLY_ROLE = {
    "cluster": ["monitor", "manage_index_templates", "manage_ilm"],
    "indices": [{"names": [f"{PREFIX}-*"], "privileges": ["read", "view_index_metadata", "monitor"]}],
}


@dataclass
class SecureNode:
    """The running node: its URL, the files a client needs, the users' passwords, and an admin API."""

    url: str
    ca: Path
    client_cert: Path
    client_key: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    folder: Path

    def request(self, method: str, path: str, body: Any = None, user: str = "gw_admin") -> Any:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        credentials = base64.b64encode(f"{user}:{self.passwords[user]}".encode()).decode()
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(certs: Path, ca_subject: str, leaves: tuple[tuple[str, str, str], ...]) -> None:
    """A CA (``ca.crt``/``ca.key``) and, per ``(name, subject, extensions)``, ``<name>.crt``/``.key`` signed by it."""
    certs.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", ca_subject, cwd=certs)  # fmt: skip
    for name, subject, extensions in leaves:
        (certs / f"{name}.ext").write_text(extensions + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=certs)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=certs)  # fmt: skip


def _certificates(certs: Path) -> None:
    make_certificates(certs, "/CN=gatewatch test CA", (
        ("node", "/CN=gatewatch test node", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "/CN=gatewatch test client", "extendedKeyUsage=clientAuth"),
    ))  # fmt: skip


def find_java(needs: str, low: int = 21, high: int = 99) -> str:
    """A JDK from ``low`` to ``high`` (services/lib.sh finds it), else RuntimeError naming ``needs``."""
    found = subprocess.run(["bash", "-c", f"source {REPO}/services/lib.sh; java_home {low} {high}"],
                           capture_output=True, text=True)  # fmt: skip
    if found.returncode != 0 or not found.stdout.strip():
        raise RuntimeError(f"{needs} (none found)")
    return found.stdout.strip()


def _home_with_pattern_capture(es_home: Path, folder: Path, java_home: str) -> Path:
    """A home for the node: the distribution's files (linked) and the analysis plugin the security index needs.

    API keys live in the ``.security`` index, whose analyzer needs a tokenizer and filters
    from the ``analysis-common`` module that the integ-test distribution leaves out.
    """
    home = folder / "home"
    home.mkdir()
    for entry in es_home.iterdir():
        if entry.name not in ("plugins", "config", "logs"):
            (home / entry.name).symlink_to(entry)
    source = Path(__file__).parent / "es_pattern_capture" / "PatternCapturePlugin.java"
    build = folder / "plugin-build"
    subprocess.run([f"{java_home}/bin/javac", "--release", "21", "-cp", f"{es_home}/lib/*", "-d", str(build),
                    str(source)], check=True, capture_output=True)  # fmt: skip
    plugin = home / "plugins" / "gw-pattern-capture"
    plugin.mkdir(parents=True)
    subprocess.run([f"{java_home}/bin/jar", "--create", "--file", str(plugin / "gw-pattern-capture.jar"),
                    "-C", str(build), "."], check=True, capture_output=True)  # fmt: skip
    version = es_home.name.removeprefix("elasticsearch-")
    (plugin / "plugin-descriptor.properties").write_text(
        "description=the analysis parts the security index needs (tests only)\nversion=1.0\n"
        f"name=gw-pattern-capture\nclassname=gatewatch.testplugin.PatternCapturePlugin\njava.version=21\n"
        f"elasticsearch.version={version}\n"
    )
    return home


def start_secure_node() -> SecureNode:
    """Start the node and wait until the admin gets a yellow or green health over TLS."""
    es_home = REPO / ".cache" / "services" / "elasticsearch-9.2.0"
    if not (es_home / "bin" / "elasticsearch").exists():
        subprocess.run([str(REPO / "services" / "fetch.sh"), "elasticsearch"], check=True)
    (REPO / ".cache").mkdir(exist_ok=True)
    # Not under pytest's 0700 tmp dir: the node runs as nobody and must reach its files.
    folder = Path(REPO / ".cache" / f"es-secure-{secrets.token_hex(4)}")
    config = folder / "config"
    shutil.copytree(es_home / "config", config)
    for sub in ("data", "logs"):
        (folder / sub).mkdir()
    jvm_options = config / "jvm.options"
    options = jvm_options.read_text().replace("logs/", f"{folder}/logs/")
    jvm_options.write_text(options.replace("HeapDumpPath=data", f"HeapDumpPath={folder}/data"))
    _certificates(config / "certs")
    passwords = {user: secrets.token_urlsafe(12) for user in ("gw_admin", "gw_writer", "gw_reader")}
    # File realm: SHA-1 hashes ({SHA}) are enough for a throwaway node and need no bcrypt here.
    (config / "users").write_text("".join(
        f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()}\n"
        for user, pw in passwords.items()
    ))  # fmt: skip
    (config / "users_roles").write_text("superuser:gw_admin\ngatewatch_writer:gw_writer\ngatewatch_reader:gw_reader\n")
    # Block style: the file realm reads one role per top-level key line.
    roles = {"gatewatch_writer": WRITER_ROLE, "gatewatch_reader": READ_ONLY_ROLE}
    (config / "roles.yml").write_text(yaml.safe_dump(roles, default_flow_style=False))
    with (config / "elasticsearch.yml").open("a") as settings:
        settings.write(
            "\nxpack.security.enabled: true\n"
            "xpack.security.http.ssl.enabled: true\n"
            "xpack.security.http.ssl.key: certs/node.key\n"
            "xpack.security.http.ssl.certificate: certs/node.crt\n"
            "xpack.security.http.ssl.certificate_authorities: [certs/ca.crt]\n"
            "xpack.security.http.ssl.client_authentication: required\n"
            "xpack.security.authc.api_key.enabled: true\n"
        )
    java_home = find_java("Elasticsearch needs a Java 21+ JDK")
    home = _home_with_pattern_capture(es_home, folder, java_home)
    port, transport = _free_port(), _free_port()
    command = [
        str(home / "bin" / "elasticsearch"), "-E", "discovery.type=single-node",
        "-E", "cluster.routing.allocation.disk.threshold_enabled=false", "-E", "http.host=127.0.0.1",
        "-E", "transport.host=127.0.0.1", "-E", f"http.port={port}", "-E", f"transport.port={transport}",
        "-E", f"path.data={folder / 'data'}", "-E", f"path.logs={folder / 'logs'}", "-E", "xpack.ml.enabled=false",
    ]  # fmt: skip
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "65534:65534", str(folder)], check=True)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    heap = os.environ.get("GW_SERVICES_HEAP", "512m")
    env = {**os.environ, "ES_JAVA_HOME": java_home, "ES_PATH_CONF": str(config),
           "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}"}  # fmt: skip
    with (folder / "logs" / "stdout.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    certs = config / "certs"
    node = SecureNode(f"https://127.0.0.1:{port}", certs / "ca.crt", certs / "client.crt", certs / "client.key",
                      passwords, process, folder)  # fmt: skip
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECS
    while True:
        try:
            if node.request("GET", "/_cluster/health")["status"] in ("yellow", "green"):
                return node
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (folder / "logs" / "stdout.log").read_text(errors="replace")[-3000:]
            node.stop()
            raise RuntimeError(f"secure Elasticsearch did not start:\n{tail}")
        time.sleep(1.0)
