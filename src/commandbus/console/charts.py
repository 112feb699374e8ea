"""The dashboard's charts, drawn on the server as inline SVG (no JavaScript, nothing from
a CDN): commands per minute (completed and failed, stacked), the send-to-completion
latency per minute (median and 95th percentile), and bars for process and step
durations.

Every text that reaches the SVG (labels, tooltips) is escaped here; the templates insert
the result as markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from commandbus.activity import Durations, MinuteActivity

__all__ = ["duration_bar", "fmt_seconds", "latency_chart", "throughput_chart"]

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 10, 24
COMPLETED, FAILED = "#3c9d5d", "#d9534f"
P50, P95 = "#1d5bd8", "#e8a33d"


def fmt_seconds(seconds: float) -> str:
    """A duration for people: 850 ms, 3.2 s, 12 s, 4.5 min, 2.1 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``value`` (the axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class _Frame:
    """The plot area and its scale: ``n`` slots across, 0..``top`` up."""

    n: int
    top: float

    @property
    def plot_width(self) -> float:
        return WIDTH - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return HEIGHT - TOP - BOTTOM

    def x(self, slot: float) -> float:
        return LEFT + self.plot_width * slot / self.n

    def y(self, value: float) -> float:
        return TOP + self.plot_height * (1 - min(value, self.top) / self.top)


def _svg(label: str, body: list[str], frame: _Frame, minutes: Sequence[MinuteActivity],
         axis: str) -> str:  # fmt: skip
    parts = [
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    # The frame: a base line, the top of the scale, and the time every 15 minutes.
    base, high = frame.y(0), frame.y(frame.top)
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{base:.1f}" x2="{WIDTH - RIGHT}" y2="{base:.1f}"/>'
    )
    parts.append(
        f'<line class="grid" x1="{LEFT}" y1="{high:.1f}" x2="{WIDTH - RIGHT}" y2="{high:.1f}"/>'
    )
    parts.append(
        f'<text class="tick" x="{LEFT - 4}" y="{high + 4:.1f}" text-anchor="end">'
        f"{escape(axis)}</text>"
    )
    parts.append(f'<text class="tick" x="{LEFT - 4}" y="{base:.1f}" text-anchor="end">0</text>')
    for slot, minute in enumerate(minutes):
        if slot % 15 == 0 or slot == len(minutes) - 1:
            x = frame.x(slot + 0.5)
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                f"{minute.start:%H:%M}</text>"
            )
    parts.extend(body)
    parts.append("</svg>")
    return "".join(parts)


def throughput_chart(domain: str, minutes: Sequence[MinuteActivity]) -> str:
    """Commands completed (green) and failed (red) per minute, stacked."""
    frame = _Frame(max(len(minutes), 1), _nice_ceiling(max(
        (m.completed + m.failed for m in minutes), default=0)))  # fmt: skip
    width = frame.plot_width / frame.n
    body = []
    for slot, m in enumerate(minutes):
        if not m.completed and not m.failed:
            continue
        x = frame.x(slot) + width * 0.1
        tip = escape(f"{m.start:%H:%M} UTC: {m.completed} completed, {m.failed} failed")
        body.append(f'<g class="minute"><title>{tip}</title>')
        done_top = frame.y(m.completed)
        body.append(
            f'<rect class="completed" x="{x:.1f}" y="{done_top:.1f}" width="{width * 0.8:.1f}" '
            f'height="{frame.y(0) - done_top:.1f}" fill="{COMPLETED}"/>'
        )
        if m.failed:
            failed_top = frame.y(m.completed + m.failed)
            body.append(
                f'<rect class="failed" x="{x:.1f}" y="{failed_top:.1f}" '
                f'width="{width * 0.8:.1f}" height="{done_top - failed_top:.1f}" '
                f'fill="{FAILED}"/>'
            )
        body.append("</g>")
    label = f"{domain}: commands completed and failed per minute"
    return _svg(label, body, frame, minutes, f"{frame.top:g}/min")


def latency_chart(domain: str, minutes: Sequence[MinuteActivity]) -> str:
    """The send-to-completion latency per minute: the median (blue) and the 95th
    percentile (orange); a minute without completions leaves a gap."""
    top = _nice_ceiling(max((m.latency.p95 for m in minutes if m.latency), default=0.0))
    frame = _Frame(max(len(minutes), 1), top)
    body = []
    for name, colour, pick in (("p95", P95, _p95), ("p50", P50, _p50)):
        for run in _runs(minutes):
            points = " ".join(
                f"{frame.x(slot + 0.5):.1f},{frame.y(pick(d)):.1f}" for slot, d in run
            )
            if len(run) > 1:
                body.append(
                    f'<polyline class="{name}" points="{points}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
            for slot, d in run:
                tip = escape(
                    f"{minutes[slot].start:%H:%M} UTC: median {fmt_seconds(d.p50)}, "
                    f"95th percentile {fmt_seconds(d.p95)}, longest {fmt_seconds(d.max)} "
                    f"({d.count} completed)"
                )
                body.append(
                    f'<circle class="{name}" cx="{frame.x(slot + 0.5):.1f}" '
                    f'cy="{frame.y(pick(d)):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{tip}</title></circle>"
                )
    label = f"{domain}: send-to-completion latency per minute (median, 95th percentile)"
    return _svg(label, body, frame, minutes, fmt_seconds(top))


def _p50(d: Durations) -> float:
    return d.p50


def _p95(d: Durations) -> float:
    return d.p95


def _runs(minutes: Sequence[MinuteActivity]) -> list[list[tuple[int, Durations]]]:
    """Consecutive minutes that have a latency, as runs (a line is broken at a gap)."""
    runs: list[list[tuple[int, Durations]]] = []
    current: list[tuple[int, Durations]] = []
    for slot, m in enumerate(minutes):
        if m.latency is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((slot, m.latency))
    if current:
        runs.append(current)
    return runs


def duration_bar(durations: Durations, longest: float) -> str:
    """One horizontal bar on a common scale (``longest``): the median solid, up to the
    95th percentile lighter, a tick at the longest."""
    width, height = 220, 14
    scale = width / longest if longest > 0 else 0.0

    def at(value: float) -> float:
        return min(value * scale, width)

    tip = escape(
        f"median {fmt_seconds(durations.p50)}, 95th percentile {fmt_seconds(durations.p95)}, "
        f"longest {fmt_seconds(durations.max)}"
    )
    return (
        f'<svg class="bar-svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{tip}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{tip}</title>"
        f'<rect x="0" y="3" width="{at(durations.p95):.1f}" height="8" fill="{P95}" '
        f'opacity="0.45"/>'
        f'<rect x="0" y="3" width="{at(durations.p50):.1f}" height="8" fill="{P50}"/>'
        f'<line x1="{at(durations.max):.1f}" y1="0" x2="{at(durations.max):.1f}" '
        f'y2="{height}" stroke="#1d2330" stroke-width="1.5"/>'
        "</svg>"
    )
