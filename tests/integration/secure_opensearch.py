"""A real OpenSearch node with its security plugin, started for the credential tests.

The plugin (``org.opensearch.plugin:opensearch-security``) is on Maven Central for
2.19.3 and 2.19.4 of the 2.19 line, not for 2.19.6, the version the other tests run,
and a plugin only loads into the exact OpenSearch version it was built for: this node
is OpenSearch 2.19.4 with security 2.19.4.0, fetched once into ``.cache/opensearch-secure``.

TLS on HTTP and transport with certificates made here by ``openssl`` (a CA, the
node's certificate for 127.0.0.1 and an admin certificate the plugin trusts for
its REST API), no default users; the fixture creates gatewatch's writer (only the
privileges gatewatch needs) and a user that may not write through that API.
Free ports chosen at run time; runs as ``nobody`` when started as root, like ``up.sh``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_elasticsearch import REPO, _free_port, find_java, make_certificates

VERSION = "2.19.4"
STARTUP_TIMEOUT_SECS = 240.0
PREFIX = "gwossec"
HOME = REPO / ".cache" / "opensearch-secure" / f"opensearch-{VERSION}"
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

# What gatewatch needs, and nothing more (each one dropped in turn makes connect, bulk or retention fail):
# health, templates, and on its own indices creating, writing, listing (retention) and deleting
# (retention without ISM, which this distribution lacks). No mapping updates: the templates are
# "dynamic": false.
WRITER_ROLE = {
    "cluster_permissions": ["cluster:monitor/health", "indices:admin/index_template/put", "cluster:monitor/state"],
    "index_permissions": [{
        "index_patterns": [f"{PREFIX}-*"],
        "allowed_actions": ["indices:admin/create", "indices:data/write/bulk*", "indices:data/write/index",
                            "indices:monitor/settings/get", "indices:monitor/stats", "indices:admin/delete"],
    }],
}  # fmt: skip
READ_ONLY_ROLE = {
    "cluster_permissions": WRITER_ROLE["cluster_permissions"],
    "index_permissions": [{"index_patterns": [f"{PREFIX}-*"], "allowed_actions": ["read", "indices:monitor/*"]}],
}


@dataclass
class SecureOpenSearch:
    """The running node: its URL, the CA file, the users' passwords, and the admin's REST API (by certificate)."""

    url: str
    ca: Path
    admin_cert: Path
    admin_key: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    folder: Path

    def request(self, method: str, path: str, body: Any = None, user: str | None = None) -> Any:
        """As the admin certificate, or as ``user`` with basic auth."""
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Content-Type": "application/json"}
        if user is None:
            context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        else:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{self.passwords[user]}".encode()).decode()
        request = urllib.request.Request(self.url + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())  # fmt: skip
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


def _mvn_copy(artifact: str, into: Path) -> Path:
    command = ["mvn", "-q", "-B", f"{_DEP_PLUGIN}:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={into}"]
    if repo := os.environ.get("GW_M2_REPO"):
        command.append(f"-Dmaven.repo.local={repo}")
    subprocess.run(command, check=True, capture_output=True)
    return next(into.glob("*.zip"))


def fetch() -> Path:
    """OpenSearch with the security plugin unpacked into ``plugins/`` (once; later calls reuse it)."""
    if (HOME / ".complete").exists():
        return HOME
    shutil.rmtree(HOME, ignore_errors=True)
    work = HOME.parent / f"tmp-{secrets.token_hex(4)}"
    try:
        distribution = _mvn_copy(f"org.opensearch.distribution.integ-test-zip:opensearch:{VERSION}:zip", work / "d")
        plugin = _mvn_copy(f"org.opensearch.plugin:opensearch-security:{VERSION}.0:zip", work / "p")
        subprocess.run(["unzip", "-q", str(distribution), "-d", str(work / "x")], check=True)
        (work / "x" / f"opensearch-{VERSION}").rename(HOME)
        # What `opensearch-plugin install` does, without its prompt: the plugin's files in plugins/,
        # its default security configuration beside the node's config.
        subprocess.run(["unzip", "-q", str(plugin), "-d", str(HOME / "plugins" / "opensearch-security")], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(HOME)], check=True)
        subprocess.run(["chmod", "a+x", *map(str, (HOME / "bin").iterdir())], check=True)
        (HOME / ".complete").touch()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return HOME


def _certificates(certs: Path) -> None:
    make_certificates(certs, "/CN=gwca", (
        # The node's certificate serves HTTP and both ends of the transport layer.
        ("node", "/CN=gwnode", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth"),
        ("admin", "/CN=gwadmin", "extendedKeyUsage=clientAuth"),
    ))  # fmt: skip


SECURITY_SETTINGS = """
plugins.security.ssl.transport.pemcert_filepath: certs/node.crt
plugins.security.ssl.transport.pemkey_filepath: certs/node.key
plugins.security.ssl.transport.pemtrustedcas_filepath: certs/ca.crt
plugins.security.ssl.transport.enforce_hostname_verification: false
plugins.security.ssl.http.enabled: true
plugins.security.ssl.http.pemcert_filepath: certs/node.crt
plugins.security.ssl.http.pemkey_filepath: certs/node.key
plugins.security.ssl.http.pemtrustedcas_filepath: certs/ca.crt
plugins.security.allow_default_init_securityindex: true
plugins.security.authcz.admin_dn: ["CN=gwadmin"]
plugins.security.nodes_dn: ["CN=gwnode"]
plugins.security.audit.type: noop
plugins.security.restapi.roles_enabled: []
"""


def _create_users(node: SecureOpenSearch) -> None:
    for role, user, definition in (("gatewatch_writer", "gw_writer", WRITER_ROLE),
                                   ("gatewatch_reader", "gw_reader", READ_ONLY_ROLE)):  # fmt: skip
        node.request("PUT", f"/_plugins/_security/api/roles/{role}", definition)
        node.request("PUT", f"/_plugins/_security/api/internalusers/{user}", {"password": node.passwords[user]})
        node.request("PUT", f"/_plugins/_security/api/rolesmapping/{role}", {"users": [user]})
    # The security plugin applies each change by reloading its configuration on every node, in the
    # background: under load a test could run before the roles held (a 403 on cluster health once).
    deadline = time.monotonic() + 60
    for user in ("gw_writer", "gw_reader"):
        while True:
            try:
                node.request("GET", "/_cluster/health", user=user)
                break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def start_secure_opensearch() -> SecureOpenSearch:
    """Start the node, wait until the admin certificate gets a yellow or green health, create the users."""
    home = fetch()
    folder = REPO / ".cache" / f"os-secure-{secrets.token_hex(4)}"  # not under pytest's 0700 tmp: nobody reads it
    config = folder / "config"
    shutil.copytree(home / "config", config)
    shutil.copytree(home / "plugins" / "opensearch-security" / "config", config / "opensearch-security")
    for sub in ("data", "logs"):
        (folder / sub).mkdir()
    jvm_options = config / "jvm.options"
    options = jvm_options.read_text().replace("logs/", f"{folder}/logs/")
    jvm_options.write_text(options.replace("HeapDumpPath=data", f"HeapDumpPath={folder}/data"))
    _certificates(config / "certs")
    # No default users (the plugin's sample file has well-known passwords): the admin certificate creates ours.
    (config / "opensearch-security" / "internal_users.yml").write_text(
        "_meta:\n  type: internalusers\n  config_version: 2\n"
    )
    with (config / "opensearch.yml").open("a") as settings:
        settings.write(SECURITY_SETTINGS)
    port, transport = _free_port(), _free_port()
    command = [
        str(home / "bin" / "opensearch"), "-E", "discovery.type=single-node",
        "-E", "cluster.routing.allocation.disk.threshold_enabled=false", "-E", "network.host=127.0.0.1",
        "-E", f"http.port={port}", "-E", f"transport.port={transport}",
        "-E", f"path.data={folder / 'data'}", "-E", f"path.logs={folder / 'logs'}",
    ]  # fmt: skip
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "65534:65534", str(folder)], check=True)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    heap = os.environ.get("GW_SERVICES_HEAP", "512m")
    java = find_java("OpenSearch 2.x needs a Java 17-23 JDK", 17, 23)
    env = {**os.environ, "OPENSEARCH_JAVA_HOME": java, "OPENSEARCH_PATH_CONF": str(config),
           "OPENSEARCH_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}"}  # fmt: skip
    with (folder / "logs" / "stdout.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    certs = config / "certs"
    passwords = {user: secrets.token_urlsafe(16) + "-Gw1" for user in ("gw_writer", "gw_reader")}
    node = SecureOpenSearch(f"https://127.0.0.1:{port}", certs / "ca.crt", certs / "admin.crt", certs / "admin.key",
                            passwords, process, folder)  # fmt: skip
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECS
    while True:
        try:
            if node.request("GET", "/_cluster/health")["status"] in ("yellow", "green"):
                _create_users(node)
                return node
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (folder / "logs" / "stdout.log").read_text(errors="replace")[-3000:]
            node.stop()
            raise RuntimeError(f"secure OpenSearch did not start:\n{tail}")
        time.sleep(1.0)
