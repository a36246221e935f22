"""Hunting queries over any store, for the analyst notebook and the HTML report.

Each store is first read into one *canonical* frame per kind — snake_case
columns, nullable dtypes, times in UTC milliseconds, rows sorted by time then
id — so every query below gives the same DataFrame whether the data sits in
DuckDB, Elasticsearch or OpenSearch:

    from gatewatch.hunt import load_events, incidents, route_rates, request_timeline
    events = load_events(open_store("duckdb:out/demo/gatewatch.duckdb"))
    incidents(events, config.trust, revocations)     # bypass + token incidents, from raw records

The incident queries read events only, never the alerts table: they are an
independent second look at what the detectors should have caught.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from detectors.gateway_bypass import attempt_slack_secs
from detectors.trust import is_network
from gatewatch.config import TrustConfig
from gatewatch.notebook import DuckDBStore, SearchStore
from ingest.addresses import parse_ip
from ingest.ecs import EVENT_FIELDS
from ingest.records import MAX_REQUEST_MS, Dataset
from ingest.routes import route_of

Store = DuckDBStore | SearchStore

# canonical column -> (search document field, type); DuckDB columns carry the canonical names.
EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("event.id", "str"),
    "dataset": ("event.dataset", "str"),
    "ts": ("@timestamp", "time"),
    **{
        name: (EVENT_FIELDS[name], kind)
        for name, kind in (
            ("request_id", "str"), ("method", "str"), ("path", "str"), ("status", "int"),
            ("route_name", "str"), ("upstream_cluster", "str"), ("authority", "str"), ("source_ip", "str"),
            ("peer_identity", "str"),
            ("user_agent", "str"), ("user_id", "str"), ("org_id", "str"), ("message", "str"),
            ("duration_ms", "float"), ("token_jti", "str"), ("token_sub", "str"), ("token_org", "str"),
        )
    },  # fmt: skip
    "token_exp": ("gatewatch.token.exp", "time"),
}
ALERT_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("id", "str"),
    "rule": ("rule", "str"),
    "severity": ("severity", "str"),
    "entity_type": ("entity.type", "str"),
    "entity_value": ("entity.value", "str"),
    "first_seen": ("first_seen", "time"),
    "last_seen": ("last_seen", "time"),
    "count": ("count", "int"),
    "request_ids": ("request_ids", "list"),
    "summary": ("summary", "str"),
    "reason": ("reason", "str"),
}
INCIDENT_COLUMNS = ["rule", "entity_type", "entity_value", "reason", "requests", "first_ts", "last_ts", "request_ids"]
TIMELINE_COLUMNS = ["ts", "offset_ms", "side", "source_ip", "peer_identity", "method", "path", "status",
                    "route", "duration_ms", "message", "id"]  # fmt: skip
NO_ROUTE = "(no route)"


def load_events(store: Store, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """Every event of ``store`` (in ``[start, end)``) as the canonical frame, with its ``route`` as the rules
    key it (:func:`ingest.routes.route_of`: under Envoy's default format, which logs no route name, Host and
    first path segment) beside the stored columns."""
    frame = _load(store, "events", EVENT_COLUMNS, start, end, "ts")
    return frame.assign(route=event_routes(frame))


def event_routes(events: pd.DataFrame) -> pd.Series:
    """Each event's route as the rules key it (:func:`ingest.routes.route_of`); a frame of :func:`load_events`
    has it already."""
    if "route" in events:
        return events["route"]
    fields = (events[c].astype("object").where(events[c].notna(), None)
              for c in ("route_name", "upstream_cluster", "authority", "path"))  # fmt: skip
    return pd.Series(list(map(route_of, *fields)), index=events.index, dtype="object").astype("string")


def load_alerts(store: Store) -> pd.DataFrame:
    """Every alert of ``store`` as the canonical frame, oldest first."""
    return _load(store, "alerts", ALERT_COLUMNS, None, None, "first_seen")


def _load(store: Store, kind: str, spec: Mapping[str, tuple[str, str]], start: str | None, end: str | None,
          order: str) -> pd.DataFrame:  # fmt: skip
    if isinstance(store, DuckDBStore):
        raw = store.query(kind, start=start, end=end, limit=None, columns=list(spec))
        names = {column: column for column in spec}
    else:
        raw = store.query(kind, start=start, end=end, limit=None, columns=[field for field, _ in spec.values()])
        names = {column: field for column, (field, _) in spec.items()}
    frame = pd.DataFrame(
        {column: _typed(raw[names[column]] if names[column] in raw else None, kind_, len(raw))
         for column, (_, kind_) in spec.items()}  # fmt: skip
    )
    return frame.sort_values([order, "id"], kind="stable").reset_index(drop=True)


def _typed(values: pd.Series | None, kind: str, length: int) -> pd.Series:
    if values is None:
        values = pd.Series([None] * length, dtype="object")
    values = values.reset_index(drop=True)
    if kind == "str":
        return values.astype("object").where(values.notna(), None).astype("string")
    if kind == "int":
        return pd.to_numeric(values, errors="coerce").astype("Int64")
    if kind == "float":
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if kind == "list":
        return pd.Series([tuple(str(v) for v in x) if _is_list(x) else () for x in values], dtype="object")
    return _milliseconds(values)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _milliseconds(values: pd.Series) -> pd.Series:
    """Times in UTC at millisecond precision, rounded as the search documents round them.

    Search documents carry ISO text already rounded to the millisecond
    (:func:`ingest.ecs.iso`: ``round(seconds * 1000)``); DuckDB keeps microseconds.
    Rounding DuckDB's value the same way makes both stores give equal frames.
    """
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
        return parsed.astype("datetime64[ms, UTC]")
    stamps = pd.to_datetime(values, utc=True)
    missing = stamps.isna()
    micros = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    seconds = micros.where(~missing, 0).astype("int64").to_numpy() / 1e6
    millis = np.round(seconds * 1000).astype("int64")
    result = pd.Series(pd.to_datetime(millis, unit="ms", utc=True)).astype("datetime64[ms, UTC]")
    return result.where(~missing.to_numpy(), pd.NaT)


# --- incidents from raw events ------------------------------------------------------------


def incidents(events: pd.DataFrame, trust: TrustConfig, revoked: Mapping[str, float],
              skew_allowance_secs: float = 30.0, join_window_secs: float = 30.0) -> pd.DataFrame:  # fmt: skip
    """Bypass and token incidents found in the events, one row per (rule, entity)."""
    frames = [bypass_incidents(events, trust, join_window_secs), token_incidents(events, revoked, skew_allowance_secs)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return _incident_frame([])
    return pd.concat(frames, ignore_index=True).sort_values(["first_ts", "rule", "entity_value"], kind="stable") \
        .reset_index(drop=True)  # fmt: skip


def bypass_incidents(events: pd.DataFrame, trust: TrustConfig, join_window_secs: float = 30.0) -> pd.DataFrame:
    """Requests Billing served that did not pass the gateway, per peer and reason.

    - ``no_request_id``: a peer that is not the gateway, and no request id;
    - ``untrusted_peer``: a peer that is not the gateway (mTLS identity, else network);
    - ``no_gateway_record``: the gateway's peer, but the gateway never logged the request id (or not
      within the slack of the line, ``correlate.join_window_secs`` and at least 30 s: a reused id).

    Health-check paths and internal callers are skipped, as the trust config says.
    """
    app = events[(events["dataset"] == str(Dataset.APP)) & _served(events)]
    path = app["path"].fillna("").str.split("?", n=1).str[0]
    internal = _matches(app, [c for c in trust.internal_callers if not is_network(c)],
                        [c for c in trust.internal_callers if is_network(c)])  # fmt: skip
    app = app[~path.isin(trust.allowlist_paths) & ~internal]
    by_identity = app["peer_identity"].notna() & bool(trust.gateway_identities)
    from_gateway = np.where(by_identity, app["peer_identity"].isin(trust.gateway_identities),
                            _in_networks(app["source_ip"], trust.gateway_networks))  # fmt: skip
    if not (trust.gateway_identities or trust.gateway_networks):
        from_gateway = np.ones(len(app), dtype=bool)  # nothing to judge a peer by: only the join can tell
    has_id = app["request_id"].notna()
    reason = pd.Series(
        np.select(
            [~from_gateway & ~has_id, ~from_gateway, has_id & ~_during_gateway_attempt(app, events, join_window_secs)],
            ["no_request_id", "untrusted_peer", "no_gateway_record"],
            default="",
        ),
        index=app.index,
    )
    found = app[reason != ""].assign(reason=reason[reason != ""])
    entity = found["source_ip"].fillna(found["peer_identity"])
    entity_type = np.where(found["source_ip"].notna(), "source.ip", "peer.identity")
    return _group(found.assign(rule="gateway_bypass", entity_type=entity_type, entity_value=entity))


def token_incidents(events: pd.DataFrame, revoked: Mapping[str, float], skew_allowance_secs: float = 30.0
                    ) -> pd.DataFrame:  # fmt: skip
    """Token misuse, per token (``token.jti``) or user (``token.sub``).

    - ``token_replay``: one token presented at the gateway from two or more addresses before it expired
      (the token of a gateway line that logs none is its request's app line's, as the rule joins them);
    - ``token_expired_accepted``: Billing answered 2xx to a request begun more than the skew allowance
      after its token expired;
    - ``token_revoked_used``: a revoked token used by a request begun at or after its revocation;
    - ``token_cross_org``: Billing answered 2xx where the token's org is not the resource's org.

    Entities and bounds are the rules': a token lives until ``exp`` plus the skew allowance; a token
    is named by its jti, else its subject (cross-org: its subject, else its jti, else its org).
    """
    gateway = _with_app_tokens(events)
    gateway = gateway[gateway["token_jti"].notna()]
    allowance = pd.Timedelta(seconds=skew_allowance_secs)
    live = gateway[gateway["token_exp"].isna() | (gateway["ts"] <= gateway["token_exp"] + allowance)]
    addresses = live.groupby("token_jti")["source_ip"].nunique()
    replayed = live[live["token_jti"].isin(addresses[addresses >= 2].index)]

    app = events[events["dataset"] == str(Dataset.APP)]
    answered = app[app["status"].between(200, 299).fillna(False).astype(bool)]
    late = (_request_start(answered) - answered["token_exp"]).dt.total_seconds() > skew_allowance_secs
    expired = answered[late.fillna(False).astype(bool)]

    revoked_at = events["token_jti"].map(lambda jti: revoked.get(jti) if isinstance(jti, str) else None)
    revoked_at = pd.to_datetime(revoked_at.astype("float64"), unit="s", utc=True)
    after = (_request_start(events) >= revoked_at).fillna(False).astype(bool)
    revoked_use = events[revoked_at.notna() & after]

    cross = answered[(answered["token_org"].notna() & answered["org_id"].notna()
                      & (answered["token_org"] != answered["org_id"])).fillna(False).astype(bool)]  # fmt: skip
    parts = [
        replayed.assign(rule="token_replay", entity_type="token.jti", entity_value=replayed["token_jti"]),
        _named_by(expired, ("token_jti", "token_sub")).assign(rule="token_expired_accepted"),
        revoked_use.assign(rule="token_revoked_used", entity_type="token.jti",
                           entity_value=revoked_use["token_jti"]),  # fmt: skip
        _named_by(cross, ("token_sub", "token_jti", "token_org")).assign(rule="token_cross_org"),
    ]
    parts = [p.assign(reason=pd.NA) for p in parts if len(p)]
    return _group(pd.concat(parts)) if parts else _incident_frame([])


def _request_start(events: pd.DataFrame) -> pd.Series:
    """When each row's request began, as the token rules judge it (:func:`detectors.base.request_start`):
    Billing writes its line when it answers, so the duration it logged is taken off."""
    duration = events["duration_ms"].astype("float64").clip(lower=0, upper=MAX_REQUEST_MS)
    app = (events["dataset"] == str(Dataset.APP)) & duration.notna()
    return events["ts"] - pd.to_timedelta(duration.where(app, 0.0), unit="ms")


def _named_by(found: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``found`` with its entity: the first of ``columns`` each row has (``token_sub`` -> ``token.sub``);
    rows with none are dropped, as the rules drop them."""
    entity_type = pd.Series(pd.NA, index=found.index, dtype="object")
    entity_value = pd.Series(pd.NA, index=found.index, dtype="object")
    for column in reversed(columns):
        has = found[column].notna()
        entity_type[has] = column.replace("_", ".", 1)
        entity_value[has] = found.loc[has, column]
    named = entity_value.notna()
    return found[named].assign(entity_type=entity_type[named], entity_value=entity_value[named])


def _with_app_tokens(events: pd.DataFrame) -> pd.DataFrame:
    """The gateway's events, each missing token (``token_jti``, ``token_sub``, ``token_exp``) taken from its
    request's app line."""
    gateway = events[events["dataset"] == str(Dataset.GATEWAY)].copy()
    app = events[(events["dataset"] == str(Dataset.APP)) & events["token_jti"].notna() & events["request_id"].notna()]
    tokens = app.drop_duplicates("request_id").set_index("request_id")
    missing = gateway["token_jti"].isna() & gateway["request_id"].isin(tokens.index)
    for column in ("token_jti", "token_sub", "token_exp"):
        rows = missing & gateway[column].isna()
        if rows.any():  # an empty assignment would cast the datetime column to float and fail
            gateway.loc[rows, column] = gateway.loc[rows, "request_id"].map(tokens[column])
    return gateway


def _during_gateway_attempt(app: pd.DataFrame, events: pd.DataFrame, join_window_secs: float) -> pd.Series:
    """Per app row: a gateway line of its request id spans it (start to start + duration, give or take
    the slack; any time when the format logs no duration), as gateway_bypass judges."""
    gateway = events.loc[(events["dataset"] == str(Dataset.GATEWAY)) & events["request_id"].notna(),
                         ["request_id", "ts", "duration_ms"]]  # fmt: skip
    anytime = app["request_id"].isin(set(gateway.loc[gateway["duration_ms"].isna(), "request_id"]))
    timed = gateway[gateway["duration_ms"].notna()]
    if timed.empty:
        return anytime
    # Each request's spans merged, then each app row matched to the last merged span starting at or before it:
    # not every app row against every gateway row, which a request id held open (5,000 of each) made 25M pairs.
    slack = pd.Timedelta(seconds=attempt_slack_secs(join_window_secs))
    spans = pd.DataFrame({
        "request_id": timed["request_id"],
        "start": timed["ts"] - slack,
        "end": timed["ts"] + pd.to_timedelta(timed["duration_ms"].astype("float64"), unit="ms") + slack,
    }).sort_values(["request_id", "start"], kind="stable", ignore_index=True)  # fmt: skip
    reach = spans.groupby("request_id", sort=False)["end"].cummax()  # the end of the spans so far
    before = reach.groupby(spans["request_id"], sort=False).shift()
    merged = spans.groupby((before.isna() | (spans["start"] > before)).cumsum()).agg(
        request_id=("request_id", "first"), start=("start", "min"), end=("end", "max"))
    rows = app.loc[app["request_id"].notna(), ["request_id", "ts"]].reset_index().sort_values("ts", kind="stable")
    rows["ts"] = rows["ts"].astype(spans["start"].dtype)  # the spans' unit (a slack or a duration may be finer)
    found = pd.merge_asof(rows, merged.sort_values("start", kind="stable"), left_on="ts", right_on="start",
                          by="request_id", direction="backward")  # fmt: skip
    inside = found.loc[found["end"].notna() & (found["ts"] <= found["end"]), "index"]
    return anytime | pd.Series(app.index.isin(inside), index=app.index)


def _served(events: pd.DataFrame) -> pd.Series:
    return events["status"].notna() | events["method"].notna() | events["path"].notna()


def _in_networks(addresses: pd.Series, networks: list[str]) -> np.ndarray:
    parsed = [ipaddress.ip_network(n, strict=False) for n in networks]

    def inside(address: Any) -> bool:
        ip = parse_ip(address) if isinstance(address, str) else None
        return ip is not None and any(ip in network for network in parsed)

    cache = {a: inside(a) for a in addresses.dropna().unique()}
    return addresses.map(lambda a: cache.get(a, False)).astype(bool).to_numpy()


def _matches(frame: pd.DataFrame, identities: list[str], networks: list[str]) -> pd.Series:
    by_identity = frame["peer_identity"].isin(identities).fillna(False).astype(bool)
    return by_identity | pd.Series(_in_networks(frame["source_ip"], networks), index=frame.index)


def _group(found: pd.DataFrame) -> pd.DataFrame:
    if not len(found):
        return _incident_frame([])
    key = found["request_id"].fillna(found["id"])
    rows = []
    for (rule, entity_type, entity_value, reason), group in found.assign(key=key).groupby(
        ["rule", "entity_type", "entity_value", "reason"], dropna=False, sort=True
    ):
        rows.append({
            "rule": rule, "entity_type": entity_type, "entity_value": entity_value,
            "reason": None if pd.isna(reason) else reason, "requests": group["key"].nunique(),
            "first_ts": group["ts"].min(), "last_ts": group["ts"].max(),
            "request_ids": tuple(sorted(group["request_id"].dropna().unique())),
        })  # fmt: skip
    return _incident_frame(rows)


def _incident_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=INCIDENT_COLUMNS)
    for column in ("rule", "entity_type", "entity_value", "reason"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None).astype("string")
    frame["requests"] = frame["requests"].astype("int64")
    for column in ("first_ts", "last_ts"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ms, UTC]")
    return frame.sort_values(["first_ts", "rule", "entity_value"], kind="stable").reset_index(drop=True)


# --- rates, clients, timelines ------------------------------------------------------------


def route_rates(events: pd.DataFrame, bucket: str = "1min") -> pd.DataFrame:
    """Per ``bucket`` and route, the gateway's requests, 4xx and 5xx counts and rates."""
    gateway = events[events["dataset"] == str(Dataset.GATEWAY)]
    status = gateway["status"]
    frame = pd.DataFrame({
        "bucket": gateway["ts"].dt.floor(bucket),
        "route": event_routes(gateway).fillna(NO_ROUTE),
        "requests": 1,
        "errors_4xx": status.between(400, 499).fillna(False).astype("int64"),
        "errors_5xx": status.between(500, 599).fillna(False).astype("int64"),
    })  # fmt: skip
    rates = frame.groupby(["bucket", "route"], sort=True).sum().reset_index()
    rates["rate_4xx"] = rates["errors_4xx"] / rates["requests"]
    rates["rate_5xx"] = rates["errors_5xx"] / rates["requests"]
    return rates


def top_clients(events: pd.DataFrame, limit: int = 10, by: str = "requests") -> pd.DataFrame:
    """The gateway's top client addresses by ``by`` (``requests`` or ``errors``), with their errors,
    distinct tokens, users and paths (a token the gateway does not log is its request's app line's)."""
    gateway = _with_app_tokens(events)
    gateway = gateway[gateway["source_ip"].notna()]
    status = gateway["status"]
    frame = gateway.assign(
        errors_4xx=status.between(400, 499).fillna(False).astype("int64"),
        errors_5xx=status.between(500, 599).fillna(False).astype("int64"),
    )
    clients = frame.groupby("source_ip").agg(
        requests=("id", "size"), errors_4xx=("errors_4xx", "sum"), errors_5xx=("errors_5xx", "sum"),
        tokens=("token_jti", "nunique"), users=("token_sub", "nunique"), paths=("path", "nunique"),
    )  # fmt: skip
    clients = clients.reset_index()
    clients["errors"] = clients["errors_4xx"] + clients["errors_5xx"]
    clients = clients.sort_values([by, "requests", "source_ip"], ascending=[False, False, True], kind="stable")
    return clients.head(limit).reset_index(drop=True)


def request_timeline(events: pd.DataFrame, request_id: str) -> pd.DataFrame:
    """Every record of one request across gateway and Billing, in time order."""
    rows = events[events["request_id"] == request_id].sort_values(["ts", "id"], kind="stable")
    return timeline(rows)


def timeline(rows: pd.DataFrame) -> pd.DataFrame:
    """Records as timeline rows: side, offset from the first and what each side saw."""
    side = np.where(rows["dataset"] == str(Dataset.GATEWAY), "gateway", "billing")
    offset = (rows["ts"] - rows["ts"].min()).dt.total_seconds() * 1000 if len(rows) else rows["ts"]
    out = rows.assign(side=side, offset_ms=offset, route=event_routes(rows))
    return out[TIMELINE_COLUMNS].reset_index(drop=True)
