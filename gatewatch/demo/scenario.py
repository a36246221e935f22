"""What a generated run contains: injected incidents, benign look-alikes, revocations.

A :class:`Scenario` is planned from the generator's parameters before any
record exists, so a test can ask what to expect without generating anything.
Each :class:`Injection` names the rule that must fire, the entity its alert
must carry and the event-time span of the attack; ``required=False`` marks a
side effect that may also alert (a path scanner may trip ``http_4xx_burst``).
Each :class:`LookAlike` names an entity that must *not* alert for that rule.

The strictest end-to-end check is :meth:`Scenario.unexpected`: every alert
must be an expected or allowed one, and :meth:`Scenario.missing`: every
required injection must have alerted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from gatewatch.demo.world import AUTHORITY, iso

RULES: tuple[str, ...] = (
    "behaviour_outlier",
    "gateway_bypass",
    "http_4xx_burst",
    "http_5xx_burst",
    "token_cross_org",
    "token_expired_accepted",
    "token_replay",
    "token_revoked_used",
)


@dataclass(frozen=True, slots=True)
class Injection:
    """An attack in the generated traffic and the alert it must raise.

    ``start``/``end`` bound the attack's requests in event time (gateway
    clock; Billing's lines run 2.5 s ahead). ``reason`` is the detector's
    reason label where the rule has several (``gateway_bypass``).
    """

    rule: str
    entity_type: str
    entity_value: str
    start: float
    end: float
    description: str
    reason: str | None = None
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class LookAlike:
    """Benign traffic that resembles an attack: ``rule`` must not alert for this entity."""

    rule: str
    entity_type: str
    entity_value: str
    start: float
    end: float
    description: str

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One row of the revocation list: ``jti`` revoked at ``revoked_at`` (epoch seconds)."""

    jti: str
    revoked_at: float


@dataclass(frozen=True)
class Scenario:
    """The plan of one generated run (see :func:`gatewatch.demo.traffic.scenario`)."""

    seed: int
    start: float
    duration_secs: float
    requests_per_sec: float
    attacks: bool
    injections: tuple[Injection, ...]
    look_alikes: tuple[LookAlike, ...]
    revocations: tuple[Revocation, ...]
    # How to make the traffic (used by gatewatch.demo.traffic): the world, each
    # incident's source factory, the background's 5xx burst and traffic ramp.
    world: Any = field(default=None, repr=False, compare=False)
    sources: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    error_burst: tuple[str, float, float, float] | None = field(default=None, repr=False)
    ramp: tuple[str, float, float, float] | None = field(default=None, repr=False)

    @property
    def end(self) -> float:
        return self.start + self.duration_secs

    def expected(self, rule: str | None = None) -> tuple[Injection, ...]:
        """The required injections (of ``rule``, or all)."""
        return tuple(i for i in self.injections if i.required and (rule is None or i.rule == rule))

    def allowed(self, rule: str | None = None) -> tuple[Injection, ...]:
        """Injections that may alert but need not."""
        return tuple(i for i in self.injections if not i.required and (rule is None or i.rule == rule))

    def benign(self, rule: str | None = None) -> tuple[LookAlike, ...]:
        return tuple(a for a in self.look_alikes if rule is None or a.rule == rule)

    def by_rule(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per rule: ``expected``, ``allowed`` and ``benign`` entities, as plain dicts."""
        return {
            rule: {
                "expected": [i.to_dict() for i in self.expected(rule)],
                "allowed": [i.to_dict() for i in self.allowed(rule)],
                "benign": [a.to_dict() for a in self.benign(rule)],
            }
            for rule in RULES
        }

    def unexpected(self, alerts: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """The ``(rule, entity_type, entity_value)`` alerts that no injection explains."""
        known = {(i.rule, i.entity_type, i.entity_value) for i in self.injections}
        return sorted({a for a in alerts if tuple(a) not in known})

    def missing(self, alerts: Iterable[tuple[str, str, str]]) -> list[Injection]:
        """Required injections for which no alert ``(rule, entity_type, entity_value)`` was raised."""
        raised = {tuple(a) for a in alerts}
        return [i for i in self.expected() if (i.rule, i.entity_type, i.entity_value) not in raised]

    def false_positives(self, alerts: Iterable[tuple[str, str, str]]) -> list[LookAlike]:
        """Look-alikes that alerted for their rule."""
        raised = {tuple(a) for a in alerts}
        return [a for a in self.look_alikes if (a.rule, a.entity_type, a.entity_value) in raised]

    def for_gateway_format(self, gateway_format: str) -> Scenario:
        """These expectations as a pipeline reading gateway logs in ``gateway_format`` can meet them.

        Envoy's default format logs no route name, so ``http_5xx_burst`` keys a
        route by ``authority/first-path-segment``: every Billing route folds into
        ``api.billing.example/v1``. The burst is still expected there; the route
        look-alikes (ramp, blip) would name the same entity and are dropped.
        """
        if gateway_format != "default":
            return self
        folded = f"{AUTHORITY}/v1"
        return replace(
            self,
            injections=tuple(
                replace(i, entity_value=folded) if i.entity_type == "route" else i for i in self.injections
            ),
            look_alikes=tuple(a for a in self.look_alikes if a.entity_type != "route"),
        )

    def revocation_csv(self) -> str:
        """The revocation list as the pipeline reads it: ``jti,revoked_at`` with ISO 8601 times."""
        rows = ["jti,revoked_at"] + [f"{r.jti},{iso(r.revoked_at)}" for r in self.revocations]
        return "\n".join(rows) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start": iso(self.start),
            "end": iso(self.end),
            "duration_secs": self.duration_secs,
            "requests_per_sec": self.requests_per_sec,
            "attacks": self.attacks,
            "injections": [i.to_dict() for i in self.injections],
            "look_alikes": [a.to_dict() for a in self.look_alikes],
            "by_rule": self.by_rule(),
            "revocations": [{"jti": r.jti, "revoked_at": iso(r.revoked_at)} for r in self.revocations],
        }


def _as_dict(item: Injection | LookAlike) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(item, name) for name in item.__slots__}
    out["start"] = iso(item.start)
    out["end"] = iso(item.end)
    return out
