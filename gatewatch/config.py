"""The one config file: a frozen pydantic model, every key with a default.

This model is the single place where keys and defaults are documented;
``schemas/config.schema.json`` is generated from it (``gatewatch schema``) and
a test fails when the two drift. Detector sections are assembled from each
detector's own ``Config`` so a new rule brings its settings with it.
"""

from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from detectors import registry
from detectors.alerts import check_suppression_window
from gatewatch.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    max_line_bytes: int = Field(65536, gt=0, description="Longer lines become dead letters (oversized).")

    @model_validator(mode="after")
    def _one_format(self) -> GatewayConfig:
        if self.format is not None and self.json_format is not None:
            raise ValueError("set either gateway.format or gateway.json_format, not both")
        return self


class AppConfig(_Section):
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="gatewatch field name -> dotted path where the app writes it; overrides single defaults.",
    )
    max_line_bytes: int = Field(65536, gt=0)


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
        default_factory=list, description="Identities or CIDRs allowed to call the app directly."
    )

    @field_validator("gateway_networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a CIDR such as 10.0.0.0/24") from None
        return networks


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
        10.0, gt=0, description="serve: an input silent this long is advanced with the wall clock."
    )


class AlertsConfig(_Section):
    suppression_window_secs: float = Field(
        600.0, gt=0, description="One alert per (rule, entity) per window; windows are aligned to the UTC day."
    )
    max_request_ids: int = Field(20, gt=0, description="Evidence request ids kept per alert.")

    @field_validator("suppression_window_secs")
    @classmethod
    def _divides_the_day(cls, secs: float) -> float:
        return check_suppression_window(secs)


class StoreConfig(_Section):
    url: str = Field("duckdb:gatewatch.duckdb", description="duckdb:PATH, elasticsearch:URL, opensearch:URL or none.")
    index_prefix: str = Field("gatewatch", description="Search indices are <prefix>-events-YYYY.MM.DD etc.")
    retention_days: int = Field(30, gt=0, description="Indices older than this are deleted.")
    bulk_max_docs: int = Field(5000, gt=0, description="Documents per bulk request.")
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
    hash_key_env: str = Field(
        "GATEWATCH_REDACT_KEY",
        description="Environment variable holding the HMAC key when neither hash_key nor hash_key_file is set. "
        "With no key at all, a random one per process: hashes then match within one process only.",
    )
    hash_hex_chars: int = Field(12, ge=8, le=64, description="Hex characters of the HMAC-SHA256 kept in a marker.")

    @model_validator(mode="after")
    def _one_key(self) -> RedactConfig:
        if self.hash_key is not None and self.hash_key_file is not None:
            raise ValueError("set either redact.hash_key or redact.hash_key_file, not both")
        return self


class KafkaTopics(_Section):
    gateway: str = "gatewatch-gateway"
    app: str = "gatewatch-app"
    alerts: str = "gatewatch-alerts"


class KafkaUnwrap(_Section):
    gateway: str | None = Field(None, description="null: the message is the log line; 'log': a JSON record's key.")
    app: str | None = None


class KafkaConfig(_Section):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"])
    group_id: str = "gatewatch"
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    unwrap: KafkaUnwrap = Field(default_factory=KafkaUnwrap)
    security: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to kafka-python as is: security_protocol, sasl_mechanism, ssl_cafile, ...",
    )
    checkpoint_interval_secs: float = Field(
        default=10.0,
        gt=0,
        description="How often serve's detect stage saves its state (stretched so saving takes <= 5% of its time); "
        "a restart re-reads the detect topic from the last save",
    )
    instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="serve: this process's static member name in both consumer groups (unique per process, stable "
        "across restarts, e.g. the pod name; or --instance-id). A restarted process gets its partitions back at once "
        "instead of after the session timeout (10 s); a stopped one keeps them until then.",
    )


@cache
def _detectors_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        rule_id: (cls.Config, Field(default_factory=cls.Config)) for rule_id, cls in registry().items()
    }
    return create_model("DetectorsConfig", __config__=ConfigDict(frozen=True, extra="forbid"), **fields)


@cache
def config_model() -> type[BaseModel]:
    """The whole config model (built once the detector registry is known)."""
    detectors_model = _detectors_model()
    return create_model(
        "GatewatchConfig",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        gateway=(GatewayConfig, Field(default_factory=GatewayConfig)),
        app=(AppConfig, Field(default_factory=AppConfig)),
        trust=(TrustConfig, Field(default_factory=TrustConfig)),
        tokens=(TokensConfig, Field(default_factory=TokensConfig)),
        correlate=(CorrelateConfig, Field(default_factory=CorrelateConfig)),
        alerts=(AlertsConfig, Field(default_factory=AlertsConfig)),
        store=(StoreConfig, Field(default_factory=StoreConfig)),
        redact=(RedactConfig, Field(default_factory=RedactConfig)),
        kafka=(KafkaConfig, Field(default_factory=KafkaConfig)),
        detectors=(detectors_model, Field(default_factory=detectors_model)),
    )


def parse_config(data: dict[str, Any] | None, base_dir: Path | None = None) -> Any:
    """Validate ``data``; relative paths resolve against ``base_dir`` (the file's folder)."""
    try:
        config = config_model().model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
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
    return config


# Files named in the config, read relative to the config file's folder.
_RELATIVE_PATHS = {
    "redact": ("hash_key_file",),
    "store": ("username_file", "password_file", "api_key_file", "ca_certs", "client_cert", "client_key"),
}


def with_instance_id(config: Any, instance_id: str) -> Any:
    """``config`` with ``kafka.instance_id`` set (``serve --instance-id``), validated like the file's keys."""
    try:
        kafka = KafkaConfig.model_validate({**config.kafka.model_dump(), "instance_id": instance_id})
    except ValidationError as error:
        raise ConfigError(f"--instance-id: {_describe(error)}") from None
    return config.model_copy(update={"kafka": kafka})


def load_config(path: str | Path | None) -> Any:
    """Read and validate the YAML file at ``path`` (None: all defaults)."""
    if path is None:
        return parse_config({})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (gateway, app, trust, ...)")
    return parse_config(data, base_dir=path.parent)


_SECRET_KEYS = frozenset({"password", "api_key", "hash_key"})


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (check the spelling; see schemas/config.schema.json)")
        elif item["loc"] and str(item["loc"][-1]) in _SECRET_KEYS:
            lines.append(f"{key}: {item['msg']} (value not shown: it is a secret)")
        elif isinstance(item.get("input"), dict):  # a whole section may hold secrets; the message names the keys
            lines.append(f"{key}: {item['msg']}")
        else:
            lines.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)
