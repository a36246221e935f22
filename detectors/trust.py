"""Who the gateway is, and which callers and paths may reach the app without it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.addresses import parse_ip
from ingest.records import Event


@dataclass(frozen=True)
class TrustPolicy:
    """The deployment's trust facts, from the ``trust`` config section.

    ``gateway_identities`` are mTLS identities (SPIFFE ids / URI SANs) of the
    gateway pods; ``gateway_networks`` are the CIDRs they connect from.
    ``internal_callers`` are identities or CIDRs allowed to call the app directly.
    """

    gateway_identities: frozenset[str] = frozenset()
    gateway_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowlist_paths: frozenset[str] = frozenset({"/healthz", "/readyz", "/livez", "/metrics"})
    internal_identities: frozenset[str] = frozenset()
    internal_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Verdicts by peer address: ``ip in network`` is Python code (~0.9 us), asked for every app record.
    _in_gateway_networks: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    _in_internal_networks: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        gateway_identities: Iterable[str] = (),
        gateway_networks: Iterable[str] = (),
        allowlist_paths: Iterable[str] = ("/healthz", "/readyz", "/livez", "/metrics"),
        internal_callers: Iterable[str] = (),
    ) -> TrustPolicy:
        internal = list(internal_callers)
        return cls(
            gateway_identities=frozenset(gateway_identities),
            gateway_networks=tuple(ipaddress.ip_network(n, strict=False) for n in gateway_networks),
            allowlist_paths=frozenset(allowlist_paths),
            internal_identities=frozenset(c for c in internal if not is_network(c)),
            internal_networks=tuple(ipaddress.ip_network(c, strict=False) for c in internal if is_network(c)),
        )

    @property
    def knows_gateway(self) -> bool:
        """Whether any gateway identity or network is configured, so peers can be judged at all."""
        return bool(self.gateway_identities or self.gateway_networks)

    def peer_is_gateway(self, event: Event) -> bool:
        """Whether the app's peer for ``event`` is the gateway.

        With identities configured, an mTLS identity decides; without one, the
        peer address must lie in a gateway network.
        """
        if event.peer_identity is not None and self.gateway_identities:
            return event.peer_identity in self.gateway_identities
        return _in_networks(event.source_ip, self.gateway_networks, self._in_gateway_networks)

    def is_internal_caller(self, event: Event) -> bool:
        if event.peer_identity is not None and event.peer_identity in self.internal_identities:
            return True
        return _in_networks(event.source_ip, self.internal_networks, self._in_internal_networks)

    def is_allowlisted_path(self, path: str | None) -> bool:
        if path is None:
            return False
        return path.split("?", 1)[0] in self.allowlist_paths


def is_network(text: str) -> bool:
    """Whether a trust entry is an address or CIDR (else it is an identity)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


VERDICTS_REMEMBERED = 65_536
"""Addresses whose verdict a policy remembers per network list; past it, it starts afresh."""


def _in_networks(
    address: str | None,
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    verdicts: dict[str, bool],
) -> bool:
    if not address or not networks:
        return False
    verdict = verdicts.get(address)
    if verdict is None:
        ip = parse_ip(address)  # an IPv4-mapped address as IPv4: a store written before they were
        verdict = ip is not None and any(ip in network for network in networks)
        if len(verdicts) >= VERDICTS_REMEMBERED:
            verdicts.clear()
        verdicts[address] = verdict
    return verdict


