"""``gatewatch demo``: generate traffic with attacks, replay it, and show what was caught."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from detectors.alerts import Alert
from gatewatch.config import load_config
from gatewatch.demo.files import GatewayFormat, write_demo
from gatewatch.demo.scenario import Scenario
from gatewatch.html_report import load_report_data, write_report
from gatewatch.replay import replay
from gatewatch.report import alerts_table, cell, shown
from ingest.sinks.base import Sink
from ingest.sinks.duckdb import DuckDBSink
from ingest.sinks.ndjson import AlertFile, DeadLetterFile


def run_demo(
    console: Console, out: Path, minutes: float, rate: float, seed: int, gateway_format: GatewayFormat
) -> int:
    """Write the demo logs under ``out``, run the pipeline over them, print the verdict.

    Ends with the path of the HTML report of the store (``out/report.html``).
    Returns 0 when every injected attack alerted and no benign look-alike did, 1 otherwise.
    """
    with console.status(f"generating {minutes:g} min of traffic at {rate:g} req/s (seed {seed})"):
        files = write_demo(out, seed=seed, duration_secs=minutes * 60, requests_per_sec=rate,
                           gateway_format=gateway_format)  # fmt: skip
    total = sum(files.expected.records.values()) + sum(
        sum(reasons.values()) for reasons in files.expected.dead_letters.values()
    )
    console.print(
        f"wrote {shown(files.gateway_log)} and {shown(files.app_log)} ({total} lines), config {shown(files.config_yaml)}"
    )

    config = load_config(files.config_yaml)
    store_path = out / "gatewatch.duckdb"
    store_path.unlink(missing_ok=True)
    alert_file = AlertFile(out / "alerts.ndjson")
    sinks: list[Sink] = [DuckDBSink(store_path), alert_file, DeadLetterFile(out / "dead-letters.ndjson")]
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        task = progress.add_task("replay", total=total)
        try:
            stats = replay(config, [files.gateway_log], [files.app_log], sinks,
                           on_progress=lambda n: progress.advance(task, n))  # fmt: skip
        finally:
            for sink in sinks:
                sink.close()

    alerts = list(alert_file.alerts.values())
    console.print(alerts_table(alerts))
    verdict = _verdict_table(files.expected.scenario, alerts)
    console.print(verdict.table)
    console.print(
        f"records {stats.records_in}  events {stats.events}  transactions {stats.transactions}  "
        f"dead letters {stats.dead_letters} {shown(dict(sorted(stats.dead_letter_reasons.items())))}  "
        f"late {stats.late_events}"
    )
    console.print(
        f"store: {shown(store_path)} (tables events, transactions, alerts, dead_letters); alerts: {shown(alert_file.path)}"
    )
    with console.status("writing the HTML report"):
        report_path = write_report(load_report_data(f"duckdb:{store_path}"), out / "report.html")
    if verdict.ok:
        console.print("[green]every injected attack alerted; no benign look-alike did[/green]")
    else:
        console.print("[red]the demo's expectations were not met (see the table above)[/red]")
    console.print(f"report: {report_path.resolve()} (open it in a browser)")
    return 0 if verdict.ok else 1


class _Verdict:
    def __init__(self, table: Table, ok: bool) -> None:
        self.table, self.ok = table, ok


def _verdict_table(plan: Scenario, alerts: list[Alert]) -> _Verdict:
    raised = [(a.rule, a.entity_type, a.entity_value) for a in alerts]
    missing = {(i.rule, i.entity_type, i.entity_value) for i in plan.missing(raised)}
    # An injection with a reason (gateway_bypass's three) is met only by an alert with that reason.
    reasons = {(a.rule, a.entity_type, a.entity_value, a.reason) for a in alerts}
    missing |= {(i.rule, i.entity_type, i.entity_value) for i in plan.expected()
                if i.reason is not None and (i.rule, i.entity_type, i.entity_value, i.reason) not in reasons}
    false_positives = {(a.rule, a.entity_type, a.entity_value) for a in plan.false_positives(raised)}
    unexplained = plan.unexpected(raised)
    table = Table(title="Injected vs detected", title_justify="left")
    for column in ("rule", "entity", "injected", "result"):
        table.add_column(column, overflow="fold")
    for injection in plan.injections:
        key = (injection.rule, injection.entity_type, injection.entity_value)
        if not injection.required:
            result = "alerted (allowed)" if key in raised else "quiet (allowed)"
        else:
            result = "[red]MISSED[/red]" if key in missing else "[green]alerted[/green]"
        table.add_row(cell(injection.rule), cell(f"{key[1]}={key[2]}"), cell(injection.description), result)
    for look_alike in plan.look_alikes:
        key = (look_alike.rule, look_alike.entity_type, look_alike.entity_value)
        result = "[red]FALSE POSITIVE[/red]" if key in false_positives else "[green]quiet[/green]"
        table.add_row(cell(look_alike.rule), cell(f"{key[1]}={key[2]}"), cell(f"benign: {look_alike.description}"), result)
    for rule, entity_type, entity_value in unexplained:
        table.add_row(cell(rule), cell(f"{entity_type}={entity_value}"), "(nothing injected)", "[red]UNEXPLAINED[/red]")
    return _Verdict(table, ok=not missing and not false_positives and not unexplained)
