"""The one config file: a frozen pydantic model, every key with a default.

This model is the single place where keys and defaults are documented;
``schemas/config.schema.json`` is generated from it (``gatewatch schema``) and
a test fails when the two drift. The model is declared, class by class
(:class:`GatewatchConfig` at the top), so a type checker sees every key; the
``detectors`` section holds each rule's own ``Config``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from detectors import registry
from detectors.alerts import check_suppression_window
from detectors.base import DetectorConfig
from detectors.behaviour_outlier import BehaviourOutlier
from detectors.gateway_bypass import GatewayBypass
from detectors.http_4xx_burst import Http4xxBurst
from detectors.http_5xx_burst import Http5xxBurst
from detectors.token_cross_org import TokenCrossOrg
from detectors.token_expired_accepted import TokenExpiredAccepted
from detectors.token_replay import TokenReplay
from detectors.token_revoked_used import TokenRevokedUsed
from gatewatch.config_durations import check_durations
from gatewatch.config_kafka import KafkaSecurity, check_security_files, check_security_keys, security_files_from
from gatewatch.config_text import describe_error, load_yaml, yaml_problem
from gatewatch.errors import ConfigError
from gatewatch.forward.config import (
    ForwardSection, check_bootstrap_server, check_forwarder_brokers, check_tls_files, tls_files_from,
)
from ingest.parsers.app_json import APP_FIELDS, canonical_app_fields
from ingest.parsers.check import check_gateway_format
from ingest.sources.unwrap import RUNTIME_WRAPPERS

log = logging.getLogger(__name__)

UNWRAP_DESCRIPTION = (
    "How the log line is wrapped: 'none' (the line itself), 'docker' (json-file: "
    '{"log": ..., "time": ...}), \'cri\' (containerd / CRI-O: \'<time> stdout F <line>\'), '
    "or the name of the JSON key that holds the line (Fluent Bit, Fluentd). docker and cri keep the "
    "runtime's timestamp as event.created, and use it as the event time when the format has no date."
)

FILE_UNWRAP_DESCRIPTION = (
    "Files (replay): " + UNWRAP_DESCRIPTION + " Split lines (CRI P pieces, Docker's 16 KiB pieces) are joined."
)


def check_unwrap(value: str | None) -> str | None:
    """An unwrap setting: ``none``, ``docker``, ``cri`` or a JSON key (no spaces)."""
    if value is not None and (not value or re.search(r"\s", value)):
        raise ValueError("expected none, docker, cri or the JSON key that holds the line")
    return value


MAX_LINE_BYTES_LIMIT = 16 * 1024 * 1024
"""Largest ``max_line_bytes`` accepted: a line is held whole in memory, and Envoy's own limit on
request headers (60 KiB by default, 8 MiB at most) keeps a real line far below this."""
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
"""Default ``max_line_bytes``. A client's headers are the bulk of a long line: Envoy takes 60 KiB of them by
default, and its JSON format escapes each ``"`` as two bytes (a flood trial's 33,000-byte User-Agent of quotes made
a 66 KB line, over the 64 KiB this once was: the request's gateway line became a dead letter, its token replay went
unseen and Billing's line became a false bypass). A MiB holds 60 KiB of headers escaped six-fold, request and
response both, with room to spare; Kafka's default message limit is about that."""
class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class GatewayConfig(_Section):
    format: str | None = Field(
        None,
        description="Envoy text access-log format string, exactly as in the Envoy/Ambassador config. "
        "Unset (and no json_format): Envoy's default format, with or without Ambassador's 'ACCESS ' prefix.",
    )
    json_format: dict[str, Any] | None = Field(
        None,
        description="Envoy json_format / typed_json_format mapping (key -> command operator, nesting allowed).",
    )
    max_line_bytes: int = Field(
        DEFAULT_MAX_LINE_BYTES, gt=0, le=MAX_LINE_BYTES_LIMIT,
        description="Longer lines become dead letters (oversized).",
    )
    xff_num_trusted_hops: int = Field(
        0, ge=0, le=64, strict=True,  # `true` is no count of proxies
        description="The gateway's own xff_num_trusted_hops: proxies in front of it that append to X-Forwarded-For. "
        "Without the downstream address in the line the client is read from X-Forwarded-For from the right, this "
        "many entries left of the last (the left end is whatever the client sent).",
    )  # fmt: skip
    unwrap: str = Field("none", description=FILE_UNWRAP_DESCRIPTION)

    _unwrap = field_validator("unwrap")(check_unwrap)

    @model_validator(mode="after")
    def _one_format(self) -> GatewayConfig:
        if self.format is not None and self.json_format is not None:
            raise ValueError("set either gateway.format or gateway.json_format, not both")
        return self


class AppConfig(_Section):
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Billing field -> dotted path where the app writes it (\"\" drops it); overrides single "
        "defaults, which are the names themselves (token.jti is at token.jti). The fields: " + ", ".join(APP_FIELDS),
        json_schema_extra={"propertyNames": {"enum": list(APP_FIELDS)}},
    )
    max_line_bytes: int = Field(DEFAULT_MAX_LINE_BYTES, gt=0, le=MAX_LINE_BYTES_LIMIT)
    unwrap: str = Field("none", description=FILE_UNWRAP_DESCRIPTION)

    _unwrap = field_validator("unwrap")(check_unwrap)

    @field_validator("fields")
    @classmethod
    def _documented_names(cls, fields: dict[str, str]) -> dict[str, str]:
        canonical, notices = canonical_app_fields(fields)
        for notice in notices:
            log.warning("config_deprecated: %s", notice)
        return canonical


class TrustConfig(_Section):
    gateway_identities: list[str] = Field(
        default_factory=list, description="mTLS identities (SPIFFE ids / URI SANs) of the gateway pods."
    )
    gateway_networks: list[str] = Field(default_factory=list, description="CIDRs the gateway pods connect from.")
    allowlist_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/livez", "/metrics"],
        description="Paths the app may serve without the gateway (health checks, metrics).",
    )
    internal_callers: list[str] = Field(
        default_factory=list,
        description="Identities or CIDRs allowed to call the app directly. An entry written in address notation "
        "(starts with a digit or holds ':', and only hex digits, '.', ':' and '/') must be a valid CIDR or address; "
        "anything else (spiffe://..., a DNS name) is an identity.",
    )

    @field_validator("gateway_networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        for network in networks:
            _check_network(network)
        return networks

    @field_validator("internal_callers")
    @classmethod
    def _callers(cls, callers: list[str]) -> list[str]:
        for caller in callers:
            if looks_like_network(caller):
                _check_network(caller)
        return callers


class TokensConfig(_Section):
    revoked: Path | None = Field(None, description="CSV with header 'jti,revoked_at' (ISO 8601 or epoch seconds).")


class CorrelateConfig(_Section):
    join_window_secs: float = Field(
        30.0, gt=0, description="A request's records are joined until event time passes its last one by this."
    )
    allowed_lateness_secs: float = Field(
        120.0, ge=0, description="How far behind the slowest input a record may arrive and still be put in order."
    )
    idle_timeout_secs: float = Field(
        10.0, gt=0, description="serve: an input read to its end and silent this long stops holding the watermark."
    )
    max_future_secs: float = Field(
        86400.0,
        gt=0,
        description="A record further than this ahead of the newest credible event time moves no clock and waits "
        "out of detection until another record within this distance vouches for it (ingest/order.py).",
    )


class AlertsConfig(_Section):
    suppression_window_secs: float = Field(
        600.0, gt=0, description="One alert per (rule, entity) per window; windows are aligned to the UTC day."
    )
    max_request_ids: int = Field(20, gt=0, le=10_000, description="Evidence request ids kept per alert.")
    update_interval_secs: float = Field(
        60.0, gt=0, description="An alert that grew sends at most one 'updated' event per this much event time."
    )
    resolve_after_secs: dict[str, float] = Field(
        default_factory=dict,
        description="rule_id -> event-time seconds without a new finding before its alerts are 'resolved'. "
        "Rules not listed keep their default: 300 for the bursts, 900 for behaviour_outlier, 600 for the others.",
    )

    @field_validator("suppression_window_secs")
    @classmethod
    def _divides_the_day(cls, secs: float) -> float:
        return check_suppression_window(secs)

    @field_validator("resolve_after_secs")
    @classmethod
    def _known_rules(cls, secs: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(secs) - set(registry()))
        if unknown:
            raise ValueError(f"unknown rule {', '.join(unknown)} (rules: {', '.join(sorted(registry()))})")
        bad = {rule: value for rule, value in secs.items() if not value > 0}
        if bad:
            raise ValueError(f"must be > 0 seconds: {bad}")
        return secs


class StoreConfig(_Section):
    url: str = Field("duckdb:gatewatch.duckdb", description="duckdb:PATH, elasticsearch:URL, opensearch:URL or none.")
    index_prefix: str = Field("gatewatch", description="Search indices are <prefix>-events-YYYY.MM.DD etc.")
    retention_days: int = Field(30, gt=0, description="Indices older than this are deleted.")
    bulk_max_docs: int = Field(5000, gt=0, le=100_000, description="Documents per bulk request.")
    username: str | None = Field(None, description="Search store user (basic auth). Or username_env / username_file.")
    username_env: str | None = Field(None, description="Environment variable holding the user name.")
    username_file: Path | None = Field(None, description="File holding the user name.")
    password: SecretStr | None = Field(
        None,
        description="Password of store.username. Prefer password_env or password_file: a config file is read by many.",
    )
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File holding the password (e.g. a mounted secret).")
    api_key: SecretStr | None = Field(
        None, description="API key (the base64 'encoded' form Elasticsearch returns), instead of user and password."
    )
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    api_key_file: Path | None = Field(None, description="File holding the API key.")
    ca_certs: Path | None = Field(None, description="PEM file of the CA(s) that signed the store's certificate.")
    client_cert: Path | None = Field(None, description="PEM client certificate, for stores that require one.")
    client_key: Path | None = Field(None, description="PEM private key of client_cert.")
    verify_certs: bool = Field(True, description="Check the store's TLS certificate; false only for tests.")
    duckdb_memory_limit: str = Field(
        "512MB", pattern=r"^[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="Memory the DuckDB store may use (DuckDB's own default, 80% of RAM, it fills with cached "
        "blocks as the store grows). E.g. 256MB, 2GiB.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_source_each(self) -> StoreConfig:
        for name in ("username", "password", "api_key"):
            given = [key for key in (name, f"{name}_env", f"{name}_file") if getattr(self, key) is not None]
            if len(given) > 1:
                raise ValueError(f"give store.{name} one way, not {' and '.join(given)}")
        has_user = any(getattr(self, k) is not None for k in ("username", "username_env", "username_file"))
        has_password = any(getattr(self, k) is not None for k in ("password", "password_env", "password_file"))
        has_key = any(getattr(self, k) is not None for k in ("api_key", "api_key_env", "api_key_file"))
        if has_key and (has_user or has_password):
            raise ValueError("give store.api_key or store.username/password, not both")
        if has_password and not has_user:
            raise ValueError("store.password needs store.username")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("store.client_key needs store.client_cert")
        return self


class RedactConfig(_Section):
    enabled: bool = Field(True, description="Replace secrets in every record before it is stored, alerted or logged.")
    query_params: list[str] = Field(
        default_factory=lambda: ["password", "token", "secret", "api_key"],
        description="NAME=value pairs (query strings, form bodies, key=value logs) whose value is replaced; "
        "a name matches when it ends with one of these ('-' and '_' alike, any case).",
    )
    json_keys: list[str] = Field(
        default_factory=lambda: ["password", "token", "secret", "api_key"],
        description='"NAME": value pairs (JSON, NAME: value text) and labels whose value is replaced; same matching.',
    )
    headers: list[str] = Field(
        default_factory=lambda: ["authorization", "proxy-authorization", "cookie", "set-cookie"],
        description="Header names whose value is replaced (an Authorization scheme such as 'Bearer' is kept).",
    )
    hash_key: SecretStr | None = Field(
        None, description="HMAC key of the hash in each marker. Prefer hash_key_file or the hash_key_env variable."
    )
    hash_key_file: Path | None = Field(None, description="File holding the HMAC key (relative to the config file).")
    hash_key_env: str | None = Field(
        None,
        description="Environment variable holding the HMAC key when neither hash_key nor hash_key_file is set; "
        "unset or empty, the start stops. Not given: GATEWATCH_REDACT_KEY if set, else a random key per process "
        "(hashes then match within one process only).",
    )
    hash_hex_chars: int = Field(12, ge=8, le=64, description="Hex characters of the HMAC-SHA256 kept in a marker.")

    @model_validator(mode="after")
    def _one_key(self) -> RedactConfig:
        if self.hash_key is not None and self.hash_key_file is not None:
            raise ValueError("set either redact.hash_key or redact.hash_key_file, not both")
        if self.hash_key is not None and not self.hash_key.get_secret_value().strip():
            # An empty template value: each process would hash with a random key of its own, without a word.
            raise ValueError("redact.hash_key is empty: give the key, or hash_key_file / hash_key_env instead")
        return self


class KafkaTopics(_Section):
    gateway: str = "gatewatch-gateway"
    app: str = "gatewatch-app"
    alerts: str = "gatewatch-alerts"


class KafkaUnwrap(_Section):
    gateway: str | None = Field(None, description="Kafka (serve), per message; null is 'none'. " + UNWRAP_DESCRIPTION)
    app: str | None = Field(None, description="Kafka (serve), per message; null is 'none'. " + UNWRAP_DESCRIPTION)

    _unwrap = field_validator("gateway", "app")(check_unwrap)


class KafkaConfig(_Section):
    bootstrap_servers: list[Annotated[str, AfterValidator(check_bootstrap_server)]] = Field(
        default_factory=lambda: ["127.0.0.1:9092"]
    )
    group_id: str = "gatewatch"
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    unwrap: KafkaUnwrap = Field(default_factory=KafkaUnwrap)
    security: Annotated[KafkaSecurity, BeforeValidator(check_security_keys)] = Field(
        default_factory=lambda: KafkaSecurity(),
        description="kafka-python's security settings, passed to every Kafka client gatewatch builds "
        "(not the SASL user or password: kafka.sasl_username / kafka.sasl_password).",
    )
    sasl_username: str | None = Field(None, description="SASL user. Or sasl_username_env / sasl_username_file.")
    sasl_username_env: str | None = Field(None, description="Environment variable holding the SASL user.")
    sasl_username_file: Path | None = Field(None, description="File holding the SASL user.")
    sasl_password: SecretStr | None = Field(
        None, description="Password of kafka.sasl_username. Prefer sasl_password_env or sasl_password_file."
    )
    sasl_password_env: str | None = Field(None, description="Environment variable holding the SASL password.")
    sasl_password_file: Path | None = Field(None, description="File holding the SASL password (e.g. a mounted secret).")
    checkpoint_interval_secs: float = Field(
        default=10.0,
        gt=0,
        description="How often serve's detect stage saves its state (stretched so saving takes <= 5% of its time); "
        "a restart re-reads each detect task's partition from its last save",
    )
    detect_partitions: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="serve: partitions of the internal topics <group_id>-requests and <group_id>-keyed, so the most "
        "processes detection splits over; null: the larger partition count of the two input topics, read at start. "
        "Fixed once the topics exist (a different value refuses to start: changing it needs a new group_id)",
    )
    instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="serve: this process's static member name in both consumer groups (unique per process, stable "
        "across restarts, e.g. the pod name; or --instance-id). A restarted process gets its partitions back at once "
        "instead of after the session timeout (10 s); a stopped one keeps them until then.",
    )

    @model_validator(mode="after")
    def _sasl_credentials(self) -> KafkaConfig:
        # One way to give each (kafka.security refuses sasl_plain_username and sasl_plain_password).
        for name in ("sasl_username", "sasl_password"):
            given = [key for key in (name, f"{name}_env", f"{name}_file") if getattr(self, key) is not None]
            if len(given) > 1:
                raise ValueError(f"give kafka.{name} one way, not {' and '.join(given)}")
        has_user = any(
            getattr(self, k) is not None for k in ("sasl_username", "sasl_username_env", "sasl_username_file")
        )
        has_password = any(
            getattr(self, k) is not None for k in ("sasl_password", "sasl_password_env", "sasl_password_file")
        )
        if has_user != has_password:
            raise ValueError("kafka.sasl_username and kafka.sasl_password go together")
        return self


_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:/")


def looks_like_network(entry: str) -> bool:
    """Whether a trust entry is written as an address or CIDR (so it must be one), not an identity.

    ``10.3.0.0/99`` and ``fe80::/10`` look like networks; ``spiffe://...``
    (letters beyond hex) and ``reconciler.ops`` (no leading digit, no colon) do not.
    """
    return bool(entry) and set(entry) <= _ADDRESS_CHARS and (entry[0].isdigit() or ":" in entry)


def _check_network(network: str) -> None:
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ValueError(f"{network!r} is not a CIDR such as 10.0.0.0/24") from None


def _token_sha256(value: object) -> object:
    """A token's sha256 hex digest, any case; else a message that says what to give (never the value)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    raise ValueError("must be the sha256 hex digest of a token, not the token: printf %s TOKEN | sha256sum")


TokenSha256 = Annotated[str, BeforeValidator(_token_sha256)]


class HttpIngestTokens(_Section):
    gateway: list[TokenSha256] = Field(
        default_factory=list,
        description="sha256 hex digests of the bearer tokens that may POST /v1/ingest/gateway "
        "(printf %s TOKEN | sha256sum); none: that source answers 401.",
    )
    app: list[TokenSha256] = Field(default_factory=list, description="The same for POST /v1/ingest/app.")


class HttpIngestUnwrap(_Section):
    gateway: str | None = Field(
        "log", description="Key of a posted JSON record that holds the log line (Fluent Bit: log, Fluentd/Vector: "
        "message); a record without it is the log record itself. null: always the record itself.",
    )  # fmt: skip
    app: str | None = "log"


class HttpIngestConfig(_Section):
    tokens: HttpIngestTokens = Field(default_factory=HttpIngestTokens)
    unwrap: HttpIngestUnwrap = Field(default_factory=HttpIngestUnwrap)
    max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="A larger request body (as sent, and once gunzipped) is answered 413."
    )
    max_in_flight_bytes: int = Field(
        64 * 1024 * 1024, gt=0,
        description="Bodies being read and produced at once, and 1 KiB a record of them; a request beyond it is "
        "answered 429 with Retry-After, a batch that alone holds more 413.",
    )  # fmt: skip
    produce_timeout_secs: float = Field(
        30.0, gt=0, description="Kafka must acknowledge a batch within this, else 503 with Retry-After."
    )


class DetectorsConfig(BaseModel):
    """One section per detection rule, named after it, with the rule's own settings."""

    # A new rule adds its line here: tests/gatewatch/test_config_declared.py fails while
    # these sections and detectors.registry() differ.
    model_config = ConfigDict(frozen=True, extra="forbid")

    behaviour_outlier: BehaviourOutlier.Config = Field(default_factory=BehaviourOutlier.Config)
    gateway_bypass: GatewayBypass.Config = Field(default_factory=GatewayBypass.Config)
    http_4xx_burst: Http4xxBurst.Config = Field(default_factory=Http4xxBurst.Config)
    http_5xx_burst: Http5xxBurst.Config = Field(default_factory=Http5xxBurst.Config)
    token_cross_org: TokenCrossOrg.Config = Field(default_factory=TokenCrossOrg.Config)
    token_expired_accepted: TokenExpiredAccepted.Config = Field(default_factory=TokenExpiredAccepted.Config)
    token_replay: TokenReplay.Config = Field(default_factory=TokenReplay.Config)
    token_revoked_used: TokenRevokedUsed.Config = Field(default_factory=TokenRevokedUsed.Config)

    def section(self, rule_id: str) -> DetectorConfig:
        """The settings of rule ``rule_id``."""
        section: DetectorConfig = getattr(self, rule_id)
        return section


class GatewatchConfig(BaseModel):
    """The whole config file: one frozen model, every key with a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    app: AppConfig = Field(default_factory=AppConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    tokens: TokensConfig = Field(default_factory=TokensConfig)
    correlate: CorrelateConfig = Field(default_factory=CorrelateConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    redact: RedactConfig = Field(default_factory=RedactConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    forward: ForwardSection = Field(default_factory=list, description="Forwarders of alert lifecycle events.")
    http_ingest: HttpIngestConfig = Field(default_factory=HttpIngestConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)


def config_model() -> type[GatewatchConfig]:
    """The whole config model (kept for callers that ask for it by function)."""
    return GatewatchConfig


def parse_config(data: dict[str, Any] | None, base_dir: Path | None = None) -> GatewatchConfig:
    """Validate ``data``; relative paths resolve against ``base_dir`` (the file's folder)."""
    try:
        config = GatewatchConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None
    check_durations(config)
    revoked = config.tokens.revoked
    if revoked is not None and base_dir is not None and not revoked.is_absolute():
        config = config.model_copy(update={"tokens": TokensConfig(revoked=base_dir / revoked)})
    if base_dir is not None:
        for section, names in _RELATIVE_PATHS.items():
            current = getattr(config, section)
            update = {
                name: base_dir / path
                for name in names
                if (path := getattr(current, name)) is not None and not path.is_absolute()
            }
            if update:
                config = config.model_copy(update={section: current.model_copy(update=update)})
        if config.forward:
            config = config.model_copy(update={"forward": [tls_files_from(base_dir, f) for f in config.forward]})
        kafka = config.kafka
        security = security_files_from(base_dir, kafka.security)
        if security != kafka.security:  # a copy marks the section as set: serve would then want Kafka
            config = config.model_copy(update={"kafka": kafka.model_copy(update={"security": security})})
    _check_inputs(config, check_files=base_dir is not None)
    return config


# Files named in the config, read relative to the config file's folder.
_RELATIVE_PATHS = {
    "redact": ("hash_key_file",),
    "store": ("username_file", "password_file", "api_key_file", "ca_certs", "client_cert", "client_key"),
    "kafka": ("sasl_username_file", "sasl_password_file"),
}


def kafka_configured(config: GatewatchConfig) -> bool:
    """Whether the config has a ``kafka`` section naming at least one broker (``serve`` then reads Kafka)."""
    return "kafka" in config.model_fields_set and bool(config.kafka.bootstrap_servers)


def _check_inputs(config: GatewatchConfig, check_files: bool) -> None:
    """What the model cannot see alone: formats that cannot work, files that are not there."""
    revoked = config.tokens.revoked
    if check_files and revoked is not None and not revoked.is_file():
        raise ConfigError(f"tokens.revoked: cannot read {revoked}: no such file")
    if check_files:
        check_security_files(config.kafka.security)
    for forwarder in config.forward if check_files else ():
        check_tls_files(forwarder)
    check_forwarder_brokers(config.forward, kafka_configured(config))
    gateway = config.gateway
    dated_by_runtime = bool({gateway.unwrap, config.kafka.unwrap.gateway} & RUNTIME_WRAPPERS)
    try:
        warnings = check_gateway_format(gateway.format, gateway.json_format, runtime_time=dated_by_runtime)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.app.fields.get("ts") == "" and not {config.app.unwrap, config.kafka.unwrap.app} & RUNTIME_WRAPPERS:
        warnings.append("app.fields.ts is dropped: every app line will be a missing_timestamp dead letter")
    for warning in warnings:
        log.warning("config_format: %s", warning)


def with_instance_id(config: GatewatchConfig, instance_id: str) -> GatewatchConfig:
    """``config`` with ``kafka.instance_id`` set (``serve --instance-id``), validated like the file's keys."""
    try:
        kafka = KafkaConfig.model_validate({**config.kafka.model_dump(), "instance_id": instance_id})
    except ValidationError as error:
        raise ConfigError(f"--instance-id: {describe_error(error)}") from None
    return config.model_copy(update={"kafka": kafka})


def load_config(path: str | Path | None) -> GatewatchConfig:
    """Read and validate the YAML file at ``path`` (None: all defaults)."""
    if path is None:
        return parse_config({})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}") from None
    except RecursionError:  # thousands of nested brackets
        raise ConfigError(f"{path} is not valid YAML: nested too deeply") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (gateway, app, trust, ...)")
    return parse_config(data, base_dir=path.parent)
