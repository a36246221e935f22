"""A real Prometheus scrapes a running ``gatewatch serve`` fed by real Kafka.

Prometheus' view of the pipeline must agree with what the store holds and with
an uninterrupted replay of the same lines; the alerting rules of ``deploy/``
must evaluate without error on the live series, and every PromQL expression of
the Grafana dashboard must run and return data.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import duckdb
from prometheus_server import PrometheusServer
from test_serve import Serve, Topics, build_traffic, replay_alerts, topics, wait_for  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus-rules.yml"
DASHBOARD = REPO / "dashboards" / "grafana" / "gatewatch.json"
PARTITIONS_PER_TOPIC = 4


def _grafana_exprs() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            found.extend((panel["title"], target["expr"]) for target in panel.get("targets", []) if "expr" in target)

    walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
    return found


def _as_grafana_sends(expr: str, instance: str) -> str:
    # Grafana's own variables, as it expands them for a 1 s scrape interval and a 5 min time range;
    # one selected replica becomes a regex, escaped again for the PromQL string literal.
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    return expr.replace("$instance", re.escape(instance).replace("\\", "\\\\"))


def test_prometheus_agrees_with_the_store_and_runs_every_rule_and_panel(topics: Topics, tmp_path: Path) -> None:
    lines = build_traffic(400)
    topics.produce(lines)
    config = topics.config(tmp_path)
    (tmp_path / "replay").mkdir()
    expected_alerts = Counter(alert[1] for alert in replay_alerts(config, lines, tmp_path / "replay"))
    assert expected_alerts, "the traffic raises no alert: nothing to compare"
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve.log")
    instance = f"127.0.0.1:{serve.port}"
    prometheus = PrometheusServer(tmp_path / "prometheus", [instance], [RULES])
    try:
        sel = f'{{job="gatewatch", instance="{instance}"}}'

        def scalar(expr: str) -> float:
            return sum(prometheus.query(expr).values())

        def alerts_by_rule() -> Counter[str]:
            found = prometheus.query(f"sum by (rule) (gatewatch_alerts_total{sel})")
            return Counter({dict(labels)["rule"]: int(value) for labels, value in found.items() if value})

        # Records in and out of ingest, events into detect, alerts out of it: as Prometheus scraped them.
        wait_for(lambda: scalar(f"sum(component_received_events_total{sel})") == len(lines), 60,
                 "Prometheus to see every record received", serve)  # fmt: skip
        wait_for(lambda: alerts_by_rule() == expected_alerts, 60, "Prometheus to see the replay's alerts", serve)
        wait_for(lambda: scalar(f"time() - gatewatch_checkpoint_timestamp_seconds{sel}") < 30, 30,
                 "a recent checkpoint", serve)  # fmt: skip
        inputs = f'{{job="gatewatch", instance="{instance}", topic!~".+-(requests|keyed|findings)"}}'
        wait_for(lambda: scalar(f"sum(kafka_consumer_lag{inputs})") == 0, 30, "no input lag left", serve)
        received = prometheus.query(f"sum by (topic) (component_received_events_total{sel})")
        sent = prometheus.query(f"sum by (component, kind) (component_sent_events_total{sel})")
        dead_letters = prometheus.query(f"sum by (reason) (gatewatch_dead_letters_total{sel})")
        detect_in = scalar(f"gatewatch_detect_events_total{sel}")
        store_errors = prometheus.query(f'component_errors_total{{stage="store", instance="{instance}"}}')
        lag = prometheus.query(f"kafka_consumer_lag{sel}")
        checkpoint_age = scalar(f"time() - gatewatch_checkpoint_timestamp_seconds{sel}")
        rules = prometheus.api("rules")["groups"]
        # Every expression of the Grafana dashboard, as Grafana sends it for this replica, returns data.
        time.sleep(2)  # two more scrapes, so every rate() has two samples after the last change
        empty = []
        now = time.time()
        for title, expr in _grafana_exprs():
            data = prometheus.api("query_range", query=_as_grafana_sends(expr, instance),
                                  start=str(now - 60), end=str(now), step="5")  # fmt: skip
            if not data["result"]:
                empty.append(f"{title}: {expr}")
        instances = prometheus.api("series", **{"match[]": 'gatewatch_backpressure{job="gatewatch"}'})
        assert serve.stop() == 0, serve.output()
    finally:
        prometheus.close()

    with duckdb.connect(str(store), read_only=True) as con:
        stored_events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        stored_dead = dict(con.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())
        stored_rules = Counter(rule for (rule,) in con.execute("SELECT rule FROM alerts").fetchall())

    by_side = Counter(line.side for line in lines)
    assert {dict(k)["topic"]: v for k, v in received.items()} == {
        topics.names["gateway"]: by_side["gateway"],
        topics.names["app"]: by_side["app"],
    }
    sent_by = {(dict(k)["component"], dict(k)["kind"]): v for k, v in sent.items()}
    assert sent_by[("store", "events")] == stored_events
    assert sent_by[("store", "dead_letters")] == sum(stored_dead.values())
    assert stored_events + sum(stored_dead.values()) == len(lines)
    assert {dict(k)["reason"]: v for k, v in dead_letters.items() if v} == stored_dead  # the others exist at 0
    assert detect_in >= stored_events  # re-deliveries are counted too, never fewer
    assert stored_rules == expected_alerts
    assert {dict(k)["error_type"]: v for k, v in store_errors.items()} == {
        "unavailable": 0, "rejected": 0, "document_rejected": 0
    }  # fmt: skip
    # one series per input partition, all caught up, and one per internal partition (P requests, P keyed,
    # one findings; ingest's progress keeps a message or two in flight there)
    internal = {k: v for k, v in lag.items() if dict(k)["topic"].startswith(f"{topics.group}-")}
    inputs_lag = [v for k, v in lag.items() if k not in internal]
    assert len(inputs_lag) == 2 * PARTITIONS_PER_TOPIC and set(inputs_lag) == {0.0}
    assert len(internal) == 2 * PARTITIONS_PER_TOPIC + 1
    assert 0 <= checkpoint_age < 30
    # The deploy rules loaded and evaluated on the live series without error.
    loaded = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert len(loaded) >= 12
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert [series["instance"] for series in instances] == [instance]  # the dashboard's $instance variable
