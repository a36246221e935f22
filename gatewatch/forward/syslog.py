"""Syslog forwarder: RFC 5424 messages over TCP (RFC 6587 octet counting), TLS (RFC 5425) or UDP (RFC 5426).

Formats (``format``):

- ``rfc5424``: the alert's fields as structured data (one SD-ELEMENT, SD-ID
  ``sd_id``; PARAM-VALUEs escape ``"``, ``\\`` and ``]``), the summary as MSG;
- ``cef_syslog``: the same header, no structured data, a CEF line as MSG;
- ``cef``: bare CEF lines, newline-framed on TCP/TLS (CEF escapes CR/LF, so a
  line is always one event), one datagram each on UDP.

Every value is :func:`~gatewatch.forward.fields.neutral` first. TCP gives no
application-level acknowledgement: a message written just before the
connection broke may be lost without an error (RELP would close that gap).
A write that fails reconnects and sends the same event again.
"""

from __future__ import annotations

import errno
import socket
import ssl

from detectors.base import Severity
from gatewatch.errors import DeliveryError
from gatewatch.forward.cef import cef_line
from gatewatch.forward.config import SyslogForwarderConfig
from gatewatch.forward.fields import alert_fields, neutral, shortened
from ingest.alerts import AlertEvent
from ingest.ecs import iso

# Syslog severity (RFC 5424 6.2.1): critical 2, error 3, warning 4, notice 5.
SYSLOG_SEVERITY: dict[str, int] = {Severity.CRITICAL: 2, Severity.HIGH: 3, Severity.MEDIUM: 4, Severity.LOW: 5}
BOM = "\ufeff"
MAX_DATAGRAM_BYTES = 65_000
"""The most a UDP message can be (IPv4's limit is 65,507), whatever ``max_message_bytes`` says."""
# Texts cut to these many characters and request ids kept, in turn, until a message fits.
_SHORTER = ((1023, 10), (256, 3), (64, 1))


def escape_param(value: str) -> str:
    return neutral(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or NILVALUE."""
    token = "".join(c if "!" <= c <= "~" else "_" for c in value)[:limit]
    return token or "-"


def structured_data(event: AlertEvent, sd_id: str) -> str:
    """``[sd_id name="value" ...]`` with every alert field; request ids repeat ``request_id``."""
    alert = event.alert
    fields = alert_fields(alert)
    params: list[tuple[str, str]] = [
        ("event_id", event.id),
        ("state", str(event.state)),
        ("sequence", str(event.sequence)),
        ("alert_id", alert.id),
        ("rule", alert.rule),
        ("severity", str(alert.severity)),
        ("entity_type", alert.entity_type),
        ("entity_value", alert.entity_value),
        ("first_seen", iso(alert.first_seen)),
        ("last_seen", iso(alert.last_seen)),
        ("count", str(alert.count)),
        ("summary", alert.summary),
    ]
    if alert.reason is not None:
        params.append(("reason", alert.reason))
    for name, value in (
        ("source_ip", fields.source_ip),
        ("user", fields.user),
        ("http_method", fields.http_method),
        ("url_path", fields.url_path),
        ("user_agent", fields.user_agent),
        ("http_status", None if fields.http_status is None else str(fields.http_status)),
    ):
        if value is not None:
            params.append((name, value))
    params += [("request_id", request_id) for request_id in alert.request_ids]
    return "[" + sd_id + "".join(f' {name}="{escape_param(value)}"' for name, value in params) + "]"


def syslog_message(event: AlertEvent, config: SyslogForwarderConfig, hostname: str) -> bytes:
    """The message without transport framing."""
    if config.format == "cef":
        return cef_line(event).encode()
    pri = config.facility * 8 + SYSLOG_SEVERITY[event.alert.severity]
    header = (
        f"<{pri}>1 {iso(event.at)} {_header_token(hostname, 255)} {config.app_name} - "
        f"{_header_token('alert-' + str(event.state), 32)}"
    )
    if config.format == "cef_syslog":
        return f"{header} - {cef_line(event)}".encode()
    return f"{header} {structured_data(event, config.sd_id)} {BOM}{neutral(event.alert.summary)}".encode()


def fitted_message(event: AlertEvent, config: SyslogForwarderConfig, hostname: str) -> bytes:
    """The message, no longer than ``max_message_bytes``: its texts cut shorter in turn until it fits.

    A receiver cuts a longer message and reads what is left as a message of its own (rsyslog does,
    at its ``maxMessageSize``, 8 KiB by default): a path in a log could then forge a whole alert.
    """
    limit = min(config.max_message_bytes, MAX_DATAGRAM_BYTES) if config.transport == "udp" else config.max_message_bytes
    message = syslog_message(event, config, hostname)
    for text_chars, request_ids in _SHORTER:
        if len(message) <= limit:
            return message
        message = syslog_message(shortened(event, text_chars, request_ids), config, hostname)
    if len(message) <= limit:
        return message
    # Texts of 64 characters, each escape doubling them, still too long for a small limit: cut the bytes,
    # on a character, never after a lone backslash (it would escape what the receiver reads next).
    cut = message[:limit].decode("utf-8", "ignore").encode()
    while (len(cut) - len(cut.rstrip(b"\\"))) % 2:
        cut = cut[:-1]
    return cut


class SyslogForwarder:
    """Sends each event as one syslog message; one connection, re-opened after a failure."""

    def __init__(self, config: SyslogForwarderConfig) -> None:
        self.config = config
        self.hostname = config.hostname or socket.gethostname()
        self._sock: socket.socket | None = None
        self._ssl: ssl.SSLContext | None = _tls_context(config) if config.transport == "tls" else None

    def send(self, event: AlertEvent) -> None:
        message = fitted_message(event, self.config, self.hostname)
        try:
            if self.config.transport == "udp":
                self._send_udp(message)
                return
            if self.config.format == "cef":
                frame = message + b"\n"
            else:
                frame = str(len(message)).encode() + b" " + message  # RFC 6587 3.4.1 octet counting
            self._connection().sendall(frame)
        except (OSError, ssl.SSLError) as error:
            self.close()
            config = self.config
            # A datagram too big for UDP stays too big: no point retrying it.
            retryable = getattr(error, "errno", None) != errno.EMSGSIZE
            raise DeliveryError(f"syslog {config.transport}://{config.host}:{config.port}: {error}", retryable) from None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock = sock.unwrap()  # close_notify, so the receiver sees an orderly end of the session
            except (OSError, ssl.SSLError):
                pass
        sock.close()

    def _connection(self) -> socket.socket:
        if self._sock is None:
            config = self.config
            sock = socket.create_connection((config.host, config.port), timeout=config.timeout_secs)
            if self._ssl is not None:
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=config.tls.server_name or config.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        return self._sock

    def _send_udp(self, message: bytes) -> None:
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.config.host, self.config.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.config.timeout_secs)
            sock.connect(address)
            self._sock = sock
        self._sock.send(message)


def _tls_context(config: SyslogForwarderConfig) -> ssl.SSLContext:
    tls = config.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
