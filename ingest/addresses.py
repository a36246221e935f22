"""Client addresses as logs write them: a port to drop, an X-Forwarded-For chain to read from the right."""

from __future__ import annotations

from typing import Any


def without_port(address: Any) -> str:
    """``10.0.0.1:443`` -> ``10.0.0.1``, ``[::1]:443`` -> ``::1``; anything else unchanged."""
    text = address if type(address) is str else str(address)
    if text[:1] != "[":
        host, colon, port = text.rpartition(":")
        # One colon only: a bare IPv6 address has several and no port.
        return host if colon and port.isdigit() and ":" not in host else text
    end = text.find("]")
    return text[1:end] if end > 0 else text


def forwarded_client(forwarded_for: str, trusted_hops: int = 0) -> str | None:
    """The client an X-Forwarded-For chain names, read as Envoy reads it: from the right.

    Each proxy appends the address that connected to it, so only the right end was
    written by proxies; anything to its left came from the client, who can write any
    address there. With ``use_remote_address`` Envoy appends the peer it saw, and
    ``trusted_hops`` (its ``xff_num_trusted_hops``) more entries belong to proxies in front
    of it: the client is the entry that many places left of the right-most. A chain
    shorter than that gives its left-most entry. Empty entries are skipped, a port dropped.
    """
    if "," not in forwarded_for:  # one entry, the common case: what the gateway appended
        entry = forwarded_for.strip()
        return without_port(entry) if entry else None
    entries = [entry for part in forwarded_for.split(",") if (entry := part.strip())]
    if not entries:
        return None
    return without_port(entries[max(0, len(entries) - 1 - trusted_hops)])
