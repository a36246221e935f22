"""The deployment files agree with each other, with the code and with the README.

No container engine runs here, so nothing is started: docker-compose.yml, the
Dockerfile, deploy/ and dashboards/ are read and checked against the things
they name (services, ports, mounted files, config keys, index patterns, index
fields, metric names), and a record is taken the way Fluent Bit would ship it
through gatewatch's own Kafka source and parsers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gatewatch.config import DEFAULT_MAX_LINE_BYTES, load_config
from gatewatch.metrics import ServeMetrics
from ingest.parsers import build_app_parser, build_gateway_parser
from ingest.sources.revocations import load_revocations
from schemas.templates import INDEX_KINDS, index_template

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
README = REPO / "README.md"
DEPLOY = REPO / "deploy"
GATEWATCH_CONFIG = DEPLOY / "gatewatch.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
PROMETHEUS_RULES = DEPLOY / "prometheus-rules.yml"
FLUENT_BIT_CONFIG = DEPLOY / "fluent-bit.conf"
KIBANA_OBJECTS = REPO / "dashboards" / "kibana" / "gatewatch.ndjson"
GRAFANA_DASHBOARD = REPO / "dashboards" / "grafana" / "gatewatch.json"

GATEWATCH_SERVICES = ("gatewatch-1", "gatewatch-2")
LISTEN_PORT = 8080
INPUT_PARTITIONS = 4
ES_VERSION = "9.2.0"
REQUEST_ID_OPERATOR = "%REQ(X-REQUEST-ID)%"
# Series Prometheus itself adds to every scrape; any other name must come from gatewatch/metrics.py.
SCRAPE_SERIES = frozenset({"up"})


# -- helpers -------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _published(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each published port, short or long syntax."""
    pairs = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} publishes no fixed host port"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount; named volumes are left out."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((entry["source"], entry["target"]))
            continue
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return "\n".join(command) if isinstance(command, list) else str(command)


def _option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def _deploy_config() -> Any:
    return load_config(GATEWATCH_CONFIG)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _readme_section(text: str, title: str) -> str | None:
    """The body of the first Markdown heading named ``title``, up to the next heading of its level or above."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(#+)\s+(.*?)\s*$", line)
        if match and match.group(2).lower().startswith(title.lower()):
            level = len(match.group(1))
            body = []
            for following in lines[i + 1 :]:
                heading = re.match(r"(#+)\s", following)
                if heading and len(heading.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    return None


def _mapped_fields(kind: str) -> dict[str, str]:
    """Dotted field name -> mapping type of the ``kind`` index template (what Kibana can query)."""
    fields: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, mapping in properties.items():
            path = f"{prefix}{name}"
            if "properties" in mapping:
                walk(mapping["properties"], f"{path}.")
            else:
                fields[path] = mapping["type"]
                for sub in mapping.get("fields", {}):
                    fields[f"{path}.{sub}"] = mapping["fields"][sub]["type"]

    walk(index_template(kind)["template"]["mappings"]["properties"], "")
    return fields


def _kql_fields(query: str) -> set[str]:
    """Field names a KQL query compares (``field : value``, ``field >= n``)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    return set(re.findall(r"([A-Za-z_@][\w.@]*)\s*(?::|>=|<=|>|<)", without_strings))


_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    | {"inf", "nan"}
)


def _promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels, keywords and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (and Grafana's $variables in them)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors, $__rate_interval, $__range
    text = re.sub(r"\boffset\s+-?\w+", "", text)  # offset 15m
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def _defined_metrics() -> set[str]:
    """Every series name gatewatch/metrics.py exposes (counters with _total, histograms' _bucket/_sum/_count)."""
    names = set()
    for family in ServeMetrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _grafana_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            queries.extend(target["expr"] for target in panel.get("targets", []) if target.get("expr"))
            panels(panel.get("panels", []))

    panels(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        queries.append(label_values.group(1) if label_values else query)
    return queries


# -- docker-compose.yml -------------------------------------------------------------------


def test_compose_has_the_whole_stack_with_pinned_images() -> None:
    services = _services()
    expected = {"kafka", "kafka-init", "elasticsearch", "kibana", "prometheus", *GATEWATCH_SERVICES}
    assert expected <= set(services), f"missing services: {expected - set(services)}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    assert services["elasticsearch"]["image"] == f"docker.elastic.co/elasticsearch/elasticsearch:{ES_VERSION}"
    assert services["kibana"]["image"] == f"docker.elastic.co/kibana/kibana:{ES_VERSION}"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: pin a version, not {image}"


def test_kafka_is_a_single_node_kraft_broker_and_controller() -> None:
    env = {k: str(v) for k, v in _services()["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = dict(re.match(r"(\w+)://(.*)", item).groups() for item in env["KAFKA_LISTENERS"].split(","))
    controller_port = listeners[controller].rpartition(":")[2]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{controller_port}"
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols), "every listener needs a security protocol"
    advertised = dict(re.match(r"(\w+)://(.*)", item).groups() for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert controller not in advertised
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "kafka:9092"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single node"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from kafka-init with 4 partitions"


def test_kafka_init_creates_the_topics_gatewatch_reads_and_writes() -> None:
    services = _services()
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"
    created = {
        topic: int(partitions)
        for topic, partitions in re.findall(
            r"--create\b[^\n]*?--topic\s+(\S+)\s+--partitions\s+(\d+)", _command_text(init)
        )
    }
    topics = _deploy_config().kafka.topics
    assert set(created) == {topics.gateway, topics.app, topics.alerts}
    # A request's two records meet only on the same partition number of both topics.
    assert created[topics.gateway] == created[topics.app] == INPUT_PARTITIONS


def test_gatewatch_replicas_serve_the_deploy_config() -> None:
    services = _services()
    host_ports = []
    for name in GATEWATCH_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        assert (REPO / service["build"].get("dockerfile", "Dockerfile")).is_file()
        command = service["command"]
        assert command[0] == "serve"
        assert _option(command, "--listen") == f"0.0.0.0:{LISTEN_PORT}"
        config_path = _option(command, "--config")
        mounts = dict((target, source) for source, target in _bind_mounts(service))
        assert (REPO / mounts[config_path]).resolve() == GATEWATCH_CONFIG.resolve()
        store = _option(command, "--store")
        assert store == _deploy_config().store.url, "--store and deploy/gatewatch.yaml store.url disagree"
        published = _published(service)
        assert [container for _, container in published] == [LISTEN_PORT]
        host_ports.extend(host for host, _ in published)
        check = " ".join(service["healthcheck"]["test"])
        assert f":{LISTEN_PORT}/healthz" in check
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert len(set(host_ports)) == len(GATEWATCH_SERVICES), f"replicas must publish distinct ports: {host_ports}"


def test_every_dependency_has_a_condition_it_can_meet() -> None:
    services = _services()
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for other, spec in depends_on.items():
            assert other in services, f"{name} depends on unknown service {other}"
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other} to be healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert services[other].get("restart", "no") == "no", f"{other} is one-shot"


def test_published_ports_are_distinct_and_mounted_paths_exist() -> None:
    services = _services()
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host, _ in _published(service):
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
        for source, _ in _bind_mounts(service):
            assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repo"
    for source in {source for s in services.values() for source, _ in _bind_mounts(s)}:
        assert not Path(source).is_absolute(), f"{source}: mount repo files by relative path"


def test_dockerfile_installs_the_package_with_gatewatch_as_entrypoint() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r'^ENTRYPOINT \["gatewatch"\]', text, re.M)
    copied = {Path(line.split()[1]).parts[0] for line in text.splitlines() if line.startswith("COPY ")}
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repo"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    packages = re.search(r"include\s*=\s*\[(.*?)\]", pyproject).group(1)
    needed = {name.strip(' "*') for name in packages.split(",")}
    assert needed | {"pyproject.toml"} <= copied, f"the image lacks {needed - copied}"


def test_readme_deploy_section_names_the_command_and_every_published_port() -> None:
    section = _readme_section(README.read_text(encoding="utf-8"), "Deploy")
    assert section is not None, "README.md has no 'Deploy' section"
    assert "docker compose up -d" in section
    for name, service in _services().items():
        for host, _ in _published(service):
            mentioned = re.search(rf"(?<!\d){host}(?!\d)", section)
            assert mentioned, f"README Deploy section does not mention {name}'s port {host}"


# -- deploy/gatewatch.yaml ----------------------------------------------------------------


def test_deploy_config_validates_and_points_at_the_compose_services() -> None:
    config = _deploy_config()
    services = _services()
    kafka_env = services["kafka"]["environment"]
    internal = next(
        item.split("://")[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        if item.startswith(f"{kafka_env['KAFKA_INTER_BROKER_LISTENER_NAME']}://")
    )  # fmt: skip
    assert list(config.kafka.bootstrap_servers) == [internal]
    assert _host_port(internal)[0] == "kafka"
    kind, _, url = config.store.url.partition(":")
    assert kind == "elasticsearch"
    parts = urlsplit(url)
    assert parts.hostname == "elasticsearch" and parts.hostname in services
    assert (9200, 9200) in _published(services["elasticsearch"]) or parts.port == 9200
    assert config.kafka.unwrap.gateway == config.kafka.unwrap.app == "log", "Fluent Bit sends the line in 'log'"
    # Every rule is listed, so a new one is a deliberate choice here.
    assert set(config.detectors.model_fields_set) == set(type(config.detectors).model_fields)
    # The revocation list is mounted next to the config, where the relative path points.
    for name in GATEWATCH_SERVICES:
        mounts = {target: source for source, target in _bind_mounts(services[name])}
        config_dir = Path(_option(services[name]["command"], "--config")).parent
        revoked_in_container = str(config_dir / config.tokens.revoked.relative_to(GATEWATCH_CONFIG.parent))
        assert (REPO / mounts[revoked_in_container]).resolve() == config.tokens.revoked.resolve()
    assert load_revocations(config.tokens.revoked) == {}


def test_deploy_config_keeps_the_line_limit_the_code_documents() -> None:
    """A 64 KiB limit here undid the raise to 1 MiB: a 33,000-byte User-Agent of quotes, escaped by Envoy's JSON
    format, made a 66 KB gateway line, a dead letter, a token replay unseen and a false gateway_bypass."""
    config = _deploy_config()
    assert config.gateway.max_line_bytes >= DEFAULT_MAX_LINE_BYTES
    assert config.app.max_line_bytes >= DEFAULT_MAX_LINE_BYTES


def test_deploy_config_builds_its_parsers() -> None:
    config = _deploy_config()
    build_gateway_parser(config.gateway.format, config.gateway.json_format, config.gateway.max_line_bytes)
    build_app_parser(config.app.fields, config.app.max_line_bytes)


# -- Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrapes_both_replicas_and_loads_the_rules() -> None:
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    job = jobs["gatewatch"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    assert targets == {f"{name}:{LISTEN_PORT}" for name in GATEWATCH_SERVICES}
    service = _services()["prometheus"]
    mounts = {target: source for source, target in _bind_mounts(service)}
    config_path = next(arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config.file="))
    assert (REPO / mounts[config_path]).resolve() == PROMETHEUS_CONFIG.resolve()
    rule_globs = prometheus.get("rule_files", [])
    rules_mount = next(
        target for target, source in mounts.items() if (REPO / source).resolve() == PROMETHEUS_RULES.resolve()
    )
    assert any(Path(rules_mount).match(pattern) for pattern in rule_globs), f"{rules_mount} is not in {rule_globs}"


def test_prometheus_rules_use_only_gatewatch_metrics() -> None:
    rules = yaml.safe_load(PROMETHEUS_RULES.read_text(encoding="utf-8"))
    defined = _defined_metrics() | SCRAPE_SERIES
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert exprs
    for expr in exprs:
        unknown = _promql_metrics(expr) - defined
        assert not unknown, f"rule {expr!r} uses metrics gatewatch does not define: {unknown}"


# -- Grafana ------------------------------------------------------------------------------


def test_grafana_dashboard_queries_only_gatewatch_metrics() -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    queries = _grafana_queries(dashboard)
    assert len(queries) >= 10
    defined = _defined_metrics() | SCRAPE_SERIES
    used: set[str] = set()
    for query in queries:
        names = _promql_metrics(query)
        assert names, f"query {query!r} selects no metric"
        unknown = names - defined
        assert not unknown, f"query {query!r} uses metrics gatewatch/metrics.py does not define: {unknown}"
        used |= names
    # The metrics the brief names are all on the dashboard.
    for name in (
        "component_received_events_total",
        "component_sent_events_total",
        "component_errors_total",
        "gatewatch_dead_letters_total",
        "gatewatch_alerts_total",
        "kafka_consumer_lag",
        "store_bulk_duration_seconds_bucket",
    ):
        assert name in used, f"no panel shows {name}"


def test_grafana_dashboard_is_importable() -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = []
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            uid = panel["datasource"]["uid"]
            assert uid.startswith("${") and uid[2:-1] in variables, "panels use the datasource variable"
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_promql_metric_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(store_bulk_duration_seconds_bucket{instance=~"$instance"}'
        "[$__rate_interval]))) / on (job) group_left up and time() - max(gatewatch_watermark_seconds > 0) > 1e3"
    )
    assert _promql_metrics(expr) == {"store_bulk_duration_seconds_bucket", "up", "gatewatch_watermark_seconds"}


# -- Kibana -------------------------------------------------------------------------------


def _kibana_objects() -> list[dict[str, Any]]:
    lines = KIBANA_OBJECTS.read_text(encoding="utf-8").splitlines()
    objects = []
    for number, line in enumerate(lines, start=1):
        assert line.strip(), f"gatewatch.ndjson:{number} is empty"
        obj = json.loads(line)
        assert {"type", "id", "attributes", "references"} <= set(obj), f"line {number}: not a saved object"
        objects.append(obj)
    return objects


def test_kibana_data_views_cover_every_index_kind() -> None:
    prefix = _deploy_config().store.index_prefix
    views = {o["id"]: o["attributes"] for o in _kibana_objects() if o["type"] == "index-pattern"}
    assert {v["title"] for v in views.values()} == {f"{prefix}-{kind}-*" for kind in INDEX_KINDS}
    for view in views.values():
        kind = view["title"][len(prefix) + 1 : -2]
        assert view["timeFieldName"] == "@timestamp"
        assert _mapped_fields(kind)["@timestamp"] == "date", f"{kind}: @timestamp is not a date"


def test_kibana_objects_reference_existing_objects_and_mapped_fields() -> None:
    prefix = _deploy_config().store.index_prefix
    objects = _kibana_objects()
    by_key = {(o["type"], o["id"]): o for o in objects}
    assert len(by_key) == len(objects), "duplicate saved object ids"
    kinds = {o["id"]: o["attributes"]["title"][len(prefix) + 1 : -2] for o in objects if o["type"] == "index-pattern"}
    titles = {o["attributes"]["title"] for o in objects if o["type"] in ("search", "lens")}
    for wanted in ("alerts by rule", "top", "5xx by route", "bypass"):
        assert any(wanted in title.lower() for title in titles), f"no saved search or visualization for {wanted!r}"
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in by_key, f"{obj['id']} references missing {ref['type']} {ref['id']}"
        views = [ref["id"] for ref in obj["references"] if ref["type"] == "index-pattern"]
        attributes = obj["attributes"]
        if obj["type"] == "search":
            (view,) = views
            source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert source["indexRefName"] in {ref["name"] for ref in obj["references"]}
            used = set(attributes["columns"]) | _kql_fields(source["query"]["query"])
            used |= {field for field, _ in attributes["sort"]}
        elif obj["type"] == "lens":
            (view,) = views
            state = attributes["state"]
            layers = state["datasourceStates"]["formBased"]["layers"]
            for layer_id, layer in layers.items():
                assert f"indexpattern-datasource-layer-{layer_id}" in {ref["name"] for ref in obj["references"]}
                assert set(layer["columnOrder"]) == set(layer["columns"])
            used = {
                column["sourceField"]
                for layer in layers.values()
                for column in layer["columns"].values()
                if column["sourceField"] != "___records___"
            } | _kql_fields(state["query"]["query"])
        elif obj["type"] == "dashboard":
            panels = json.loads(attributes["panelsJSON"])
            names = {ref["name"] for ref in obj["references"]}
            for panel in panels:
                assert f"{panel['panelIndex']}:{panel['panelRefName']}" in names
            continue
        else:
            continue
        mapped = _mapped_fields(kinds[view])
        unmapped = used - set(mapped)
        assert not unmapped, f"{obj['id']} uses fields {unmapped} that {prefix}-{kinds[view]}-* does not map"


def test_kibana_visualizations_use_the_fields_they_are_named_for() -> None:
    objects = {o["id"]: o for o in _kibana_objects()}

    def source_fields(obj_id: str) -> set[str]:
        layers = objects[obj_id]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        return {c["sourceField"] for layer in layers.values() for c in layer["columns"].values()}

    assert {"@timestamp", "rule"} <= source_fields("gatewatch-alerts-by-rule")
    assert "entity.value" in source_fields("gatewatch-top-entities")
    assert "gatewatch.route" in source_fields("gatewatch-5xx-by-route")  # filled under Envoy's default format too
    five_xx = objects["gatewatch-5xx-by-route"]["attributes"]["state"]["query"]["query"]
    assert "http.response.status_code >= 500" in five_xx
    bypass = json.loads(objects["gatewatch-bypass-alerts"]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert bypass["query"]["query"] == 'rule : "gateway_bypass"'


def test_kibana_setup_imports_the_ndjson_after_kibana_is_healthy() -> None:
    setup = _services()["kibana-setup"]
    assert setup["depends_on"]["kibana"]["condition"] == "service_healthy"
    mounts = {target: source for source, target in _bind_mounts(setup)}
    ((target, source),) = mounts.items()
    assert (REPO / source).resolve() == KIBANA_OBJECTS.resolve()
    command = _command_text(setup)
    assert "/api/saved_objects/_import" in command and f"file=@{target}" in command


# -- Fluent Bit: keyed by request id ------------------------------------------------------


def test_the_replicas_share_one_redaction_key_and_keep_their_dead_letters() -> None:
    """Without a shared key each replica hashed a secret with a random key of its own; a forwarder's
    dead-letter file lived in the container and went with it."""
    config, services = _deploy_config(), _services()
    key_file = config.redact.hash_key_file
    assert key_file is not None
    maker = services["redact-key"]
    (made,) = [entry.split(":") for entry in maker["volumes"]]
    assert f"/{made[1].strip('/')}/redact-key" in "\n".join(maker["command"]) and "token_hex(32)" in maker["command"][0]
    for name in GATEWATCH_SERVICES:
        service = services[name]
        named = {target: source for source, target, *_ in (str(v).split(":") for v in service["volumes"])}
        assert named[str(Path(key_file).parent)] == made[0], f"{name} does not mount the shared key"
        assert service["depends_on"]["redact-key"]["condition"] == "service_completed_successfully"
        assert named["/var/lib/gatewatch"] == f"{name}-data"  # the image's WORKDIR, where dead letters go
    assert "WORKDIR /var/lib/gatewatch" in (REPO / "Dockerfile").read_text()
