"""Client addresses as logs write them: a port to drop, an X-Forwarded-For chain to read from the right,
and IPv6's many spellings of one address.

An address is stored in one form, so that a client is one key for the rules
that count clients: ``2001:DB8:0::A`` is ``2001:db8::a``, and an IPv4 peer that
a dual-stack server reports as ``::ffff:10.0.0.10`` (Node.js, Java) is
``10.0.0.10``, which ``trust.gateway_networks: [10.0.0.0/24]`` holds.
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, inet_pton
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def without_port(address: Any) -> str:
    """``10.0.0.1:443`` -> ``10.0.0.1``, ``[::1]:443`` -> ``::1``, an IPv6 address in its :func:`canonical`
    form; anything else unchanged."""
    text = address if type(address) is str else str(address)
    if text[:1] != "[":
        host, colon, port = text.rpartition(":")
        if not colon:
            return text
        has_port = port.isdigit() and port.isascii()
        if ":" not in host:  # one colon only: a bare IPv6 address has several and no port
            return host if has_port else text
        found = canonical(text)
        if found == text and has_port and "." in host and ":" not in (mapped := canonical(host)):
            return mapped  # ::ffff:10.0.0.7:5555, as Node.js writes an IPv4 peer with its port
        return found
    end = text.find("]")
    return canonical(text[1:end]) if end > 1 else text


def client_address(address: Any) -> str | None:
    """The IP address a downstream address names (:func:`without_port`), ``None`` if it names none.

    Envoy behind a proxy that connects over a unix socket or a pipe logs the socket's path
    (``/var/run/envoy/ingress.sock``, ``pipe:...``), and an internal listener ``envoy://...``:
    stored as the client, every request would come from that one "address". ``None`` lets
    X-Forwarded-For name the client instead, as when the line logs no address at all.
    """
    host = without_port(address)
    try:
        inet_pton(AF_INET, host)  # the common case in C: ipaddress costs ~3 us a line, 40% of a line's parse
        return host
    except (OSError, ValueError):  # not dotted-quad IPv4 (ValueError: a NUL in it)
        return host if parse_ip(host) is not None else None


def canonical(text: str) -> str:
    """An IPv6 address as Python and Envoy write it (RFC 5952), an IPv4-mapped one as IPv4; else ``text``."""
    if ":" not in text:
        return text  # IPv4 has one spelling (leading zeros are refused, not read as octal)
    ip = parse_ip(text)
    return text if ip is None else str(ip)


def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` names (an IPv4-mapped IPv6 address as its IPv4 address, an IPv6 one without its
    ``%zone``, which names an interface of the host that logged it); None if it names none."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def forwarded_client(forwarded_for: str, trusted_hops: int = 0) -> str | None:
    """The client an X-Forwarded-For chain names, read as Envoy reads it: from the right.

    Each proxy appends the address that connected to it, so only the right end was
    written by proxies; anything to its left came from the client, who can write any
    address there. With ``use_remote_address`` Envoy appends the peer it saw, and
    ``trusted_hops`` (its ``xff_num_trusted_hops``) more entries belong to proxies in front
    of it: the client is the entry that many places left of the right-most. A chain
    shorter than that gives its left-most entry. Empty entries are skipped, a port dropped.
    An entry that names no address (``unknown``, an obfuscated ``_hidden``: RFC 7239's
    spellings of a hidden peer) gives no client: the entries left of it are the client's own.
    """
    if "," not in forwarded_for:  # one entry, the common case: what the gateway appended
        entry = forwarded_for.strip()
        return client_address(entry) if entry else None
    entries = [entry for part in forwarded_for.split(",") if (entry := part.strip())]
    if not entries:
        return None
    return client_address(entries[max(0, len(entries) - 1 - trusted_hops)])
