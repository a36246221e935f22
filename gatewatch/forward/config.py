"""The ``forward:`` section: a list of forwarders, each a frozen model picked by its ``type``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from detectors import registry
from detectors.base import Severity
from gatewatch.errors import ConfigError
from ingest.alerts import AlertState


class _Section(BaseModel):
    # No inf or nan: a timeout of .inf made every delivery fail, and a wait of .inf never ends.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# A destination is checked when the config loads: a bad one would otherwise pass, and serve would
# retry and dead-letter every alert (or, for an empty host, connect to localhost).
def _check_host(host: str) -> str:
    if not host:
        raise ValueError("needs a host name or address")
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError("a host name or address has no spaces or control characters")
    if "/" in host:
        raise ValueError("a host name or address, not a URL or path")
    return host


def _check_port(port: str) -> None:
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("the port must be 1-65535")


def _check_url(url: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("a URL has no spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed [IPv6] bracket
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("needs scheme http or https")
    # urllib sends no user:password@ as Basic auth: it reads it as part of the host, so no event would
    # ever be delivered, and the password would be printed with every failure.
    if "@" in parts.netloc:
        raise ValueError("no user:password@ in a webhook URL: give credentials in headers (e.g. Authorization)")
    if not parts.hostname:
        raise ValueError("needs a host: http(s)://HOST[:PORT]/PATH")
    try:
        port = parts.port  # ValueError for a port that is not a number or is past 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be 1-65535")
    return url


def check_bootstrap_server(server: str) -> str:
    """``server`` if it is a Kafka bootstrap address kafka-python takes, else a ValueError saying why."""
    # kafka-python's forms: HOST, HOST:PORT, [IPV6]:PORT, or a bare IPv6 address.
    host, port = server, None
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected HOST:PORT or [IPV6]:PORT")
            port = rest[1:]
    elif server.count(":") == 1:
        host, _, port = server.partition(":")
    _check_host(host)
    if port is not None:
        _check_port(port)
    return server


class ForwarderSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Unique name: metrics label, dead-letter file.")
    rules: list[str] = Field(default_factory=list, description="Forward only these rules' alerts (empty: all).")
    min_severity: Severity = Field(Severity.LOW, description="Forward alerts of at least this severity.")
    states: list[AlertState] = Field(
        default_factory=lambda: list(AlertState),
        description="Lifecycle transitions to forward (open, updated, resolved).",
    )
    queue_max_events: int = Field(10_000, gt=0, description="Events waiting for delivery; past this, dead letters.")
    max_attempts: int = Field(5, gt=0, description="Delivery attempts per event before it becomes a dead letter.")
    retry_backoff_secs: float = Field(0.5, gt=0, description="First wait between attempts; doubles each time.")
    retry_max_backoff_secs: float = Field(30.0, gt=0, description="Longest wait, Retry-After included.")
    timeout_secs: float = Field(10.0, gt=0, description="Connect/send timeout of one attempt.")
    drain_timeout_secs: float = Field(
        10.0,
        ge=0,
        description="On shutdown, how long queued events may still be delivered; the rest: dead letters. "
        "Short enough for serve to stop inside a 30 s termination grace period.",
    )
    dead_letters: Path | None = Field(
        None,
        description="NDJSON file for events that could not be delivered (default: forward-<name>.dead-letters.ndjson).",
    )

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules: list[str]) -> list[str]:
        unknown = sorted(set(rules) - set(registry()))
        if unknown:
            raise ValueError(f"unknown rule {', '.join(unknown)} (rules: {', '.join(sorted(registry()))})")
        return rules

    def dead_letter_path(self) -> Path:
        return self.dead_letters or Path(f"forward-{self.name}.dead-letters.ndjson")


class TlsSettings(_Section):
    ca_file: Path | None = Field(
        None, description="CA bundle that signed the receiver's certificate (default: system)."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM) when the receiver asks for one.")
    key_file: Path | None = Field(None, description="Its private key (PEM).")
    server_name: str | None = Field(None, description="Name to verify in the receiver's certificate (default: host).")
    verify: bool = Field(True, description="false accepts any certificate: testing only.")


class SyslogForwarderConfig(ForwarderSettings):
    type: Literal["syslog"]
    host: Annotated[str, AfterValidator(_check_host)] = Field(description="Receiver host name or address.")
    port: int = Field(ge=1, le=65535, description="514 (udp/tcp) or 6514 (tls) by convention.")
    transport: Literal["tcp", "tls", "udp"] = Field(
        "tcp", description="tcp/tls: RFC 6587 octet-counting framing (RFC 5425 for tls); udp: one datagram each."
    )
    format: Literal["rfc5424", "cef_syslog", "cef"] = Field(
        "rfc5424",
        description="rfc5424: alert fields as structured data, summary as MSG; cef_syslog: a CEF line as the "
        "RFC 5424 MSG; cef: bare CEF lines (newline-framed on tcp/tls).",
    )
    facility: int = Field(10, ge=0, le=23, description="Syslog facility (10: security/authorization).")
    hostname: str | None = Field(None, description="HOSTNAME field (default: this machine's name).")
    app_name: str = Field("gatewatch", pattern=r"^[!-~]{1,48}$")
    sd_id: str = Field(
        "gatewatch@32473", pattern=r"^[!#-<>-\[\\^-~]{1,32}$", description="SD-ID: name@<your IANA enterprise number>."
    )
    max_message_bytes: int = Field(
        8192,
        ge=2048,
        description="Longest message sent (UDP: at most 65,000); a longer one goes with its texts cut. Not above "
        "the receiver's own limit (rsyslog's maxMessageSize, 8 KiB by default): a receiver that cuts a message "
        "reads its rest as a message of its own.",
    )
    tls: TlsSettings = Field(default_factory=TlsSettings)


class WebhookForwarderConfig(ForwarderSettings):
    type: Literal["webhook"]
    url: Annotated[str, AfterValidator(_check_url)] = Field(
        pattern=r"^https?://", description="Where each event is POSTed as JSON."
    )
    format: Literal["ecs", "ocsf"] = Field(
        "ecs", description="ecs: ECS-shaped alert; ocsf: OCSF Detection Finding (2004)."
    )
    secret_env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the HMAC-SHA256 key of the X-Gatewatch-Signature header.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (e.g. an API key).")
    tls: TlsSettings = Field(default_factory=TlsSettings)


class KafkaForwarderConfig(ForwarderSettings):
    type: Literal["kafka"]
    topic: str = Field(description="Topic for lifecycle events, keyed by alert id.")
    bootstrap_servers: list[Annotated[str, AfterValidator(check_bootstrap_server)]] | None = Field(
        None, description="Default: kafka.bootstrap_servers (and its security and SASL credentials, in any case)."
    )


ForwarderConfig = Annotated[
    SyslogForwarderConfig | WebhookForwarderConfig | KafkaForwarderConfig, Field(discriminator="type")
]


def _unique_names(forwarders: list[ForwarderConfig]) -> list[ForwarderConfig]:
    names = [f.name for f in forwarders]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"forwarder names must be unique: {', '.join(repeated)}")
    return forwarders


ForwardSection = Annotated[list[ForwarderConfig], AfterValidator(_unique_names)]


_TLS_FILES = ("ca_file", "cert_file", "key_file")


def tls_files_from(base_dir: Path, forwarder: ForwarderConfig) -> ForwarderConfig:
    """``forwarder`` with its relative TLS files (``tls.ca_file``, ``cert_file``, ``key_file``) read from
    ``base_dir``, the config file's folder."""
    tls = getattr(forwarder, "tls", None)
    if tls is None:
        return forwarder
    update = {
        name: base_dir / path
        for name in _TLS_FILES
        if (path := getattr(tls, name)) is not None and not path.is_absolute()
    }
    return forwarder.model_copy(update={"tls": tls.model_copy(update=update)}) if update else forwarder


def check_tls_files(forwarder: ForwarderConfig) -> None:
    """A :class:`ConfigError` naming the first TLS file of ``forwarder`` that is not there, and where it was looked
    for (an older release read a relative path from the working directory)."""
    tls = getattr(forwarder, "tls", None)
    for name in _TLS_FILES if tls is not None else ():
        if (path := getattr(tls, name)) is not None and not path.is_file():
            raise ConfigError(f"forward.{forwarder.name}.tls.{name}: cannot read {path}: no such file "
                              "(a relative path is read from the config file's folder)")  # fmt: skip


def check_forwarder_brokers(forwarders: Sequence[ForwarderConfig], kafka_named: bool) -> None:
    """A :class:`ConfigError` for a ``kafka`` forwarder with no brokers: neither its own ``bootstrap_servers`` nor,
    ``kafka_named`` false, a kafka section naming some. It would dead-letter every alert, "Unable to bootstrap
    from ['127.0.0.1:9092']", the default's."""
    for n, forwarder in enumerate(forwarders):
        if forwarder.type == "kafka" and not getattr(forwarder, "bootstrap_servers", None) and not kafka_named:
            raise ConfigError(f"forward.{n} ({forwarder.name}): a kafka forwarder needs brokers: give its "
                              "bootstrap_servers, or a kafka section's")  # fmt: skip
