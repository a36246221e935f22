"""The hunting queries and the report over Elasticsearch and OpenSearch equal those over DuckDB.

The shared demo run (``demo_out``) is replayed into each search store under an
index prefix of its own, from the same log files, so every record keeps its id.
The canonical frames, the incidents found from raw events, the route rates, the
top clients, request timelines, the notebook's findings and the whole HTML page
must then be the same as over the demo's DuckDB store: paging with a point in
time and a tiebreaker sort loses and repeats nothing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import yaml

from gatewatch.cli import main
from gatewatch.config import load_config
from gatewatch.html_report import searched
from gatewatch.hunt import incidents, load_alerts, load_events, request_timeline, route_rates, top_clients
from gatewatch.notebook import open_store
from gatewatch.svg_charts import esc
from ingest.sources.revocations import load_revocations

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from test_hunt_notebook import findings, run_notebook  # noqa: E402


class SearchCopy:
    """The demo's logs replayed into one search store under a fresh index prefix."""

    def __init__(self, flavor: str, url: str, demo_out: Path, tmp_path: Path) -> None:
        self.url, self.store_url = url, f"{flavor}:{url}"
        self.prefix = f"gw-hunt-{uuid.uuid4().hex[:8]}"
        data = yaml.safe_load((demo_out / "gatewatch.yaml").read_text())
        data["store"] = {"index_prefix": self.prefix, "retention_days": 3650}  # the demo is dated 2026-03-02
        # Next to the demo's config, so its relative revocation list path still resolves.
        self.config = demo_out / f"{self.prefix}.yaml"
        self.config.write_text(yaml.safe_dump(data))
        assert main([
            "replay", "--config", str(self.config), "--gateway", str(demo_out / "gateway.log"),
            "--app", str(demo_out / "app.log"), "--alerts-out", str(tmp_path / "alerts.ndjson"),
            "--store", self.store_url,
        ]) == 0  # fmt: skip
        self.http = httpx.Client(base_url=url, timeout=60.0)
        self.http.post(f"/{self.prefix}-*/_refresh").raise_for_status()

    def cleanup(self) -> None:
        response = self.http.get(f"/_cat/indices/{self.prefix}-*", params={"format": "json", "h": "index"})
        names = [row["index"] for row in response.json()] if response.is_success else []
        if names:
            self.http.delete("/" + ",".join(names))
        for kind in ("events", "deadletter", "transactions", "alerts"):
            self.http.delete(f"/_index_template/{self.prefix}-{kind}")
        self.http.close()
        self.config.unlink(missing_ok=True)


@pytest.fixture(scope="module", params=["elasticsearch", "opensearch"])
def copy(request: pytest.FixtureRequest, demo_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchCopy]:
    url = request.getfixturevalue(f"{request.param}_url")
    search_copy = SearchCopy(request.param, url, demo_out, tmp_path_factory.mktemp(request.param))
    yield search_copy
    search_copy.cleanup()


def test_hunting_frames_equal_duckdb(copy: SearchCopy, demo_out: Path) -> None:
    duck = open_store(f"duckdb:{demo_out / 'gatewatch.duckdb'}")
    search = open_store(copy.store_url, copy.prefix)
    events, search_events = load_events(duck), load_events(search)
    pd.testing.assert_frame_equal(search_events, events)
    pd.testing.assert_frame_equal(load_alerts(search), load_alerts(duck))

    config = load_config(demo_out / "gatewatch.yaml")
    revoked = load_revocations(config.tokens.revoked)
    found = incidents(events, config.trust, revoked)
    assert len(found) == 7
    pd.testing.assert_frame_equal(incidents(search_events, config.trust, revoked), found)
    pd.testing.assert_frame_equal(route_rates(search_events), route_rates(events))
    for by in ("requests", "errors"):
        pd.testing.assert_frame_equal(top_clients(search_events, by=by), top_clients(events, by=by))
    for request_id in found["request_ids"].explode().dropna().unique()[:20]:
        pd.testing.assert_frame_equal(request_timeline(search_events, request_id), request_timeline(events, request_id))


def test_a_time_range_cuts_every_store_at_the_same_record(copy: SearchCopy, demo_out: Path) -> None:
    """An analyst's trial: DuckDB cut on microseconds and the search stores on the rounded milliseconds, so an
    event at 09:08:59.999655 (stored 09:09:00.000 there) fell in another minute: 7,592 rows against 7,591."""
    duck = open_store(f"duckdb:{demo_out / 'gatewatch.duckdb'}")
    search = open_store(copy.store_url, copy.prefix)
    raw = duck.events(limit=None, columns=["id", "ts"])
    edge = raw[raw["ts"].dt.microsecond % 1000 >= 500].iloc[0]  # stored just before the millisecond it rounds to
    bound = edge.ts.ceil("ms")
    for start, end in ((bound, bound + pd.Timedelta(minutes=1)), (bound - pd.Timedelta(minutes=1), bound),
                       ("2026-03-02 09:09:00", "2026-03-02T04:10:00-05:00")):  # fmt: skip
        pd.testing.assert_frame_equal(load_events(search, start, end), load_events(duck, start, end))
    assert edge.id in set(load_events(duck, bound, bound + pd.Timedelta(minutes=1))["id"])
    # Times come back as times from either store, not as the documents' text.
    found = search.events(start="2026-03-02 09:00:00", limit=10)
    assert str(found["@timestamp"].dtype) == "datetime64[ms, UTC]"
    assert str(search.alerts()["first_seen"].dtype) == "datetime64[ms, UTC]"


def test_a_stored_dead_letter_names_its_file(copy: SearchCopy, demo_out: Path) -> None:
    """An upgrade trial: the index template maps ``file``, but replay's dead letters reached the search stores
    with their file:<fingerprint> stream only (the NDJSON file named the path)."""
    letters = open_store(copy.store_url, copy.prefix).dead_letters(limit=None)
    assert len(letters) and set(letters["file"]) <= {str(demo_out / "gateway.log"), str(demo_out / "app.log")}


def test_small_pages_lose_and_repeat_nothing(copy: SearchCopy, demo_out: Path) -> None:
    search = open_store(copy.store_url, copy.prefix)
    paged = search.events(limit=None, page_size=333, columns=["@timestamp", "event.id"])
    total = len(open_store(f"duckdb:{demo_out / 'gatewatch.duckdb'}").events(limit=None, columns=["id"]))
    assert len(paged) == total and paged["event.id"].is_unique
    assert paged["@timestamp"].is_monotonic_increasing
    assert paged["@timestamp"].duplicated().any()  # timestamps repeat: only the id tiebreaker orders them
    assert len(search.events(limit=1000, page_size=333)) == 1000


def test_the_report_over_a_search_store_is_the_duckdb_report(copy: SearchCopy, demo_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", "--config", str(copy.config), "--store", copy.store_url, "--out", str(out)]) == 0
    duck_page = (demo_out / "report.html").read_text(encoding="utf-8")
    search_page = out.read_text(encoding="utf-8")
    assert search_page.replace(esc(searched(copy.store_url, copy.prefix)), "STORE") == \
        duck_page.replace(esc(f"duckdb:{demo_out / 'gatewatch.duckdb'}"), "STORE")  # fmt: skip
    assert f"(indices {copy.prefix}-*)" in search_page  # where it looked, for a misspelt prefix


def test_the_notebook_over_a_search_store(
    copy: SearchCopy, demo_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = findings(run_notebook(tmp_path, monkeypatch, copy.store_url, copy.config))
    config = load_config(demo_out / "gatewatch.yaml")
    events = load_events(open_store(f"duckdb:{demo_out / 'gatewatch.duckdb'}"))
    expected = incidents(events, config.trust, load_revocations(config.tokens.revoked))
    hunted = {(i["rule"], i["entity_value"], tuple(i["request_ids"])) for i in found["incidents"]}
    assert hunted == set(zip(expected["rule"], expected["entity_value"], expected["request_ids"]))
    assert len(hunted) == 7 and set(found["timeline"]["sides"]) == {"gateway", "billing"}


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_the_dashboards_route_field_is_the_route_the_rules_alert_on(
    flavor: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An analyst's trial: under Envoy's default format (no %ROUTE_NAME%) the Kibana panel "gateway 5xx by
    route" grouped by gatewatch.envoy.route_name and found 0 buckets for 893 5xx documents, while
    http_5xx_burst alerted on route=api.billing.example/v1. Documents now carry gatewatch.route."""
    from gatewatch.demo.files import write_demo

    files = write_demo(tmp_path / "default", gateway_format="default", seed=11, duration_secs=600.0,
                       requests_per_sec=8.0)  # fmt: skip
    copy = SearchCopy(flavor, request.getfixturevalue(f"{flavor}_url"), files.config_yaml.parent, tmp_path)
    try:
        answer = copy.http.post(f"/{copy.prefix}-events-*/_search", json={
            "size": 0, "query": {"bool": {"filter": [{"term": {"event.dataset": "envoy.access"}},
                                                     {"range": {"http.response.status_code": {"gte": 500}}}]}},
            "aggs": {"routes": {"terms": {"field": "gatewatch.route", "size": 100, "missing": "(no route)"}}},
        })  # fmt: skip
        answer.raise_for_status()
        buckets = {b["key"]: b["doc_count"] for b in answer.json()["aggregations"]["routes"]["buckets"]}
        rates = route_rates(load_events(open_store(copy.store_url, copy.prefix)), "1h")
        expected = rates.groupby("route")["errors_5xx"].sum()
        assert buckets == {route: n for route, n in expected.items() if n}
        assert "(no route)" not in buckets and sum(buckets.values()) > 0
        alerted = {a["entity"]["value"] for a in map(orjson.loads, (tmp_path / "alerts.ndjson").read_bytes().splitlines())
                   if a["rule"] == "http_5xx_burst" and a["entity"]["type"] == "route"}  # fmt: skip
        assert alerted and alerted <= set(buckets)
        # A review: transactions carried route_name only, so under this format none had a route.
        routeless = copy.http.post(f"/{copy.prefix}-transactions-*/_count", json={"query": {"bool": {
            "filter": [{"range": {"gatewatch.transaction.gateway_attempts": {"gte": 1}}}],
            "must_not": [{"exists": {"field": "gatewatch.route"}}]}}})  # fmt: skip
        assert routeless.json()["count"] == 0
    finally:
        copy.cleanup()
