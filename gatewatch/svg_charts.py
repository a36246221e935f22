"""Inline SVG charts for the HTML report: no library, no script, no fetch.

Every text that comes from data goes through :func:`esc` (log data is hostile);
coordinates are numbers this module computes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ingest.escape import visible

SEVERITY_COLORS = {"critical": "#b91c1c", "high": "#ea580c", "medium": "#ca8a04", "low": "#2563eb"}
SEVERITY_ORDER = ("critical", "high", "medium", "low")
COLOR_4XX = "#d97706"
COLOR_5XX = "#dc2626"
_TICK_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)


def esc(value: object) -> str:
    """``value`` as text safe inside HTML/SVG elements and quoted attributes.

    Control characters (ANSI escapes, CR, LF, C1, bidi overrides, line separators)
    are shown as escapes by :func:`ingest.escape.visible`, as in the terminal: an
    analyst should see that a log value carried them, and no viewer should act on them.
    """
    text = "" if value is None else str(value)
    return html.escape(visible(text), quote=True)


@dataclass(frozen=True)
class TimeAxis:
    """Maps epoch seconds in ``[start, end]`` onto ``[left, right]`` pixels."""

    start: float
    end: float
    left: float
    right: float

    def x(self, ts: float) -> float:
        span = max(self.end - self.start, 1.0)
        return self.left + (min(max(ts, self.start), self.end) - self.start) / span * (self.right - self.left)

    def ticks(self, target: int = 8) -> list[tuple[float, str]]:
        """Round-minute ticks, about ``target`` of them, labelled HH:MM UTC."""
        span_minutes = max((self.end - self.start) / 60.0, 1.0)
        step = next((m for m in _TICK_MINUTES if span_minutes / m <= target), _TICK_MINUTES[-1]) * 60
        first = (int(self.start) // step + 1) * step
        ticks = []
        for ts in range(first, int(self.end) + 1, step):
            label = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M")
            ticks.append((self.x(ts), label))
        return ticks


@dataclass(frozen=True)
class Span:
    """One alert drawn on the swimlane chart."""

    lane: str
    start: float
    end: float
    severity: str
    title: str
    anchor: str


def swimlanes(spans: Sequence[Span], lanes: Sequence[str], start: float, end: float, width: int = 1100) -> str:
    """One lane per rule; each alert a bar from first to last seen, coloured by severity, linked to its card.

    Alerts of one rule that overlap in time get rows of their own within the lane.
    """
    label_width, row_height, pad, top = 200, 20, 5, 10
    axis = TimeAxis(start, end, label_width, width - 12)
    placed: dict[str, list[tuple[Span, float, float, int]]] = {lane: [] for lane in lanes}
    for lane in lanes:
        own = sorted((s for s in spans if s.lane == lane), key=lambda s: (s.start, s.end))
        boxes = [(axis.x(s.start), max(axis.x(s.end), axis.x(s.start) + 7)) for s in own]
        for span, (x0, x1), row in zip(own, boxes, stack(boxes, gap=3)):
            placed[lane].append((span, x0, x1, row))
    heights = {lane: max([row for *_, row in placed[lane]] + [0]) * row_height + row_height + 2 * pad
               for lane in lanes}  # fmt: skip
    height = top + sum(heights.values()) + 28
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="alerts by rule over time">']  # fmt: skip
    bars = []
    y = top
    for i, lane in enumerate(lanes):
        fill = "#f8fafc" if i % 2 == 0 else "#ffffff"
        parts.append(f'<rect x="0" y="{y}" width="{width}" height="{heights[lane]}" fill="{fill}"/>')
        parts.append(f'<text x="8" y="{y + pad + 14}" class="lane">{esc(lane)}</text>')
        for span, x0, x1, row in placed[lane]:
            color = SEVERITY_COLORS.get(span.severity, "#64748b")
            bars.append(
                f'<a href="#{esc(span.anchor)}"><rect x="{x0:.1f}" y="{y + pad + row * row_height}" '
                f'width="{x1 - x0:.1f}" height="{row_height - 4}" rx="3" fill="{color}" fill-opacity="0.9">'
                f"<title>{esc(span.title)}</title></rect></a>"
            )
        y += heights[lane]
    parts.extend(_grid(axis, top, y))
    parts.extend(bars)
    parts.append("</svg>")
    return "".join(parts)


def stack(boxes: Sequence[tuple[float, float]], gap: float = 0.0) -> list[int]:
    """A row for each ``(x0, x1)`` box, in order, so that boxes in one row do not overlap."""
    row_ends: list[float] = []
    rows = []
    for x0, x1 in boxes:
        row = next((r for r, end in enumerate(row_ends) if end + gap <= x0), len(row_ends))
        if row == len(row_ends):
            row_ends.append(x1)
        else:
            row_ends[row] = x1
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Bucket:
    """One time bucket of a route: its start, requests and error counts."""

    start: float
    requests: int
    errors_4xx: int
    errors_5xx: int


@dataclass(frozen=True)
class Marker:
    """An alert marked on a route's rate chart."""

    ts: float
    severity: str
    label: str
    title: str
    anchor: str


def rate_chart(buckets: Sequence[Bucket], markers: Sequence[Marker], start: float, end: float,
               bucket_secs: float, width: int = 540) -> str:  # fmt: skip
    """Requests per bucket as grey bars; 4xx and 5xx rates as lines (left axis, %); alerts as flagged lines."""
    left, right = 44, width - 64
    axis = TimeAxis(start, end, left, right)
    markers = sorted(markers, key=lambda m: m.ts)
    labels = [(axis.x(m.ts), axis.x(m.ts) + 10 + 5.6 * len(m.label)) for m in markers]
    label_rows = stack(labels)
    top = 18 + 11 * max(label_rows + [0])
    bottom = top + 128
    height = bottom + 22
    peak_rate = max([0.05] + [max(b.errors_4xx, b.errors_5xx) / b.requests for b in buckets if b.requests])
    peak_rate = _nice_ceiling(peak_rate)
    peak_requests = max([1] + [b.requests for b in buckets])

    def y_rate(rate: float) -> float:
        return bottom - rate / peak_rate * (bottom - top)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="4xx and 5xx rate per minute">']  # fmt: skip
    for fraction in (0.0, 0.5, 1.0):
        y = y_rate(peak_rate * fraction)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{peak_rate * fraction * 100:g}%</text>')  # fmt: skip
    parts.append(f'<text x="{right + 6}" y="{top + 4}" class="axis">{peak_requests}/min</text>')
    bar_width = max((axis.x(start + bucket_secs) - axis.x(start)) - 1, 1)
    for b in buckets:
        bar = b.requests / peak_requests * (bottom - top) * 0.9
        parts.append(f'<rect x="{axis.x(b.start):.1f}" y="{bottom - bar:.1f}" width="{bar_width:.1f}" '
                     f'height="{bar:.1f}" class="volume"/>')  # fmt: skip
    for attribute, color in (("errors_4xx", COLOR_4XX), ("errors_5xx", COLOR_5XX)):
        points = " ".join(
            f"{axis.x(b.start + bucket_secs / 2):.1f},{y_rate(getattr(b, attribute) / b.requests):.1f}"
            for b in buckets if b.requests
        )
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    for marker, row in zip(markers, label_rows):
        x = axis.x(marker.ts)
        flag_y = 18 + 11 * row
        color = SEVERITY_COLORS.get(marker.severity, "#64748b")
        parts.append(
            f'<a href="#{esc(marker.anchor)}"><g><title>{esc(marker.title)}</title>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{flag_y - 6}" y2="{bottom}" stroke="{color}" stroke-width="1.5" '
            f'stroke-dasharray="4 3"/><path d="M{x:.1f},{flag_y - 6} l6,3 l-6,3 z" fill="{color}"/>'
            f'<text x="{x + 8:.1f}" y="{flag_y}" class="flag" fill="{color}">{esc(marker.label)}</text></g></a>'
        )
    parts.extend(_grid(axis, bottom, bottom, labels_only=True))
    parts.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" class="baseline"/></svg>')
    return "".join(parts)


def _grid(axis: TimeAxis, top: float, bottom: float, labels_only: bool = False) -> list[str]:
    parts = []
    for x, label in axis.ticks():
        if not labels_only:
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" class="axis" text-anchor="middle">{label}</text>')
    return parts


def _nice_ceiling(value: float) -> float:
    for nice in (0.05, 0.1, 0.2, 0.4, 0.6, 1.0):
        if value <= nice:
            return nice
    return 1.0


def minutes(secs: float) -> str:
    """A duration as ``1h 05m`` / ``4m 10s`` / ``12.3s``."""
    delta = timedelta(seconds=round(secs, 1))
    total = delta.total_seconds()
    if total >= 3600:
        return f"{int(total // 3600)}h {int(total % 3600 // 60):02d}m"
    if total >= 60:
        return f"{int(total // 60)}m {int(total % 60):02d}s"
    return f"{total:.1f}s"
