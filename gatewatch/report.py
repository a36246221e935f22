"""The run summary printed after a replay or demo.

Everything here that came from data (entities, summaries, file names) is drawn
as :func:`cell` text: control characters escaped, never read as rich markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from detectors.alerts import Alert
from gatewatch.topology import RunStats
from ingest.escape import visible


def cell(value: object) -> Text:
    """``value`` as text to draw: control characters visible, brackets literal (no markup)."""
    return Text(visible(str(value)))


def shown(value: object) -> str:
    """``value`` for an f-string printed with markup on: escaped for rich, control characters visible."""
    return escape(visible(str(value)))


def alerts_table(alerts: Iterable[Alert], title: str = "Alerts") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("rule", "severity", "entity", "count", "summary"):
        table.add_column(column, overflow="fold")
    for alert in sorted(alerts, key=lambda a: (a.rule, a.first_seen)):
        table.add_row(
            cell(alert.rule),
            cell(alert.severity),
            cell(f"{alert.entity_type}={alert.entity_value}"),
            cell(alert.count),
            cell(alert.summary),
        )
    return table


def print_summary(console: Console, stats: RunStats, alerts: Iterable[Alert], dead_letter_path: Path) -> None:
    alerts = list(alerts)
    console.print(alerts_table(alerts))
    by_rule = Counter(a.rule for a in alerts)
    console.print(
        f"records {stats.records_in}  events {stats.events}  transactions {stats.transactions}  "
        f"late {stats.late_events}  alerts {len(alerts)} ({shown(', '.join(f'{r} {n}' for r, n in sorted(by_rule.items())))})"
    )
    if stats.ts_from_runtime:
        console.print(f"dated by the container runtime's timestamp (no date in the line): {stats.ts_from_runtime}")
    if stats.future_events:
        console.print(f"far-future events {stats.future_events} (stored, kept out of detection: their time moved no clock)")
    if stats.dead_letters:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.dead_letter_reasons.items()))
        console.print(f"dead letters {stats.dead_letters} ({shown(reasons)}) -> {shown(dead_letter_path)}")
    for note in stats.input_notes:
        console.print(f"[yellow]warning[/yellow]: {shown(note.message)}")
    if stats.detector_errors:
        errors = ", ".join(f"{rule} {n}" for rule, n in sorted(stats.detector_errors.items()))
        console.print(f"[yellow]detector errors[/yellow] {shown(errors)} (see the log)")
