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
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

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


TokenSha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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
        description="Bodies being read and produced at once; a request beyond it is answered 429 with Retry-After.",
    )  # fmt: skip
    produce_timeout_secs: float = Field(
        30.0, gt=0, description="Kafka must acknowledge a batch within this, else 503 with Retry-After."
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
        kafka=(KafkaConfig, Field(default_factory=KafkaConfig)),
        http_ingest=(HttpIngestConfig, Field(default_factory=HttpIngestConfig)),
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
    return config


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


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (check the spelling; see schemas/config.schema.json)")
        else:
            lines.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)
