"""The overview's charts as inline SVG, drawn on the server (no script needed to see them).

A chart is a polyline over a fixed viewBox; `points` is also what the live stream sends,
so the page's script only sets the polyline's ``points`` attribute and the axis label.
"""

from __future__ import annotations

from backbeat.dashboard.pages import esc

WIDTH, HEIGHT = 360.0, 100.0
MARGIN = 4.0  # a zero line stays visible above the bottom edge


def scale_top(values: list[float]) -> float:
    """The value at the top of the chart: the largest, at least a small positive floor."""
    return max([*values, 1e-9])


def points(values: list[float], slots: int) -> str:
    """The polyline's points: `slots` positions across, newest at the right edge."""
    if not values:
        return ""
    top = scale_top(values)
    step = WIDTH / max(slots - 1, 1)
    first = slots - len(values)
    return " ".join(
        f"{(first + n) * step:.1f},{HEIGHT - MARGIN - value / top * (HEIGHT - 2 * MARGIN):.1f}"
        for n, value in enumerate(values)
    )


def chart(name: str, title: str, values: list[float], slots: int, top_label: str) -> str:
    """`name` identifies the chart to the live updates (``data-chart``)."""
    shown = points(values, slots)
    empty = "" if values else '<text x="8" y="54" class="chart-empty">no data yet</text>'
    return (
        f'<figure class="chart"><figcaption>{esc(title)} '
        f'<span class="chart-top" data-chart-top="{esc(name)}">(top {esc(top_label)})</span>'
        "</figcaption>"
        f'<svg viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img" aria-label="{esc(title)}" '
        f'preserveAspectRatio="none"><rect x="0" y="0" width="{WIDTH:g}" height="{HEIGHT:g}" '
        f'class="chart-back"/>{empty}<polyline data-chart="{esc(name)}" fill="none" '
        f'stroke="currentColor" stroke-width="2" points="{shown}"/></svg></figure>'
    )
