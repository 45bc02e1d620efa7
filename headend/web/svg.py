"""Charts drawn on the server as SVG: a day's load curve (one circle per reading) and daily
consumption bars. Styling is by class (static/console.css): the page's CSP allows no inline styles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 24, 12, 28


@dataclass(frozen=True, slots=True)
class Point:
    """One reading on the load curve: when, average demand since the reading before, its quality."""

    ts: datetime
    kw: float
    quality: str


def _nice_max(value: float) -> float:
    """A round upper bound for an axis (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value)))
    for step in (0.1, 0.2, 0.5, 1.0):
        if value <= magnitude * step:
            return magnitude * step
    return float(magnitude)


def _frame(top: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    parts = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
    ]
    for i in range(5):
        y = TOP + plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        label = top * (4 - i) / 4
        parts.append(f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{label:g}</text>')
    parts.append(f'<text class="unit" x="{LEFT}" y="{TOP - 2}" text-anchor="start">{escape(unit)}</text>')
    return parts


def load_curve(points: Sequence[Point], start: datetime, end: datetime, unit: str = "kW") -> Markup:
    """The demand of one day, ``start`` to ``end``: a line through one ``circle.point`` per reading."""
    span = (end - start).total_seconds()
    top = _nice_max(max((p.kw for p in points), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(p: Point) -> tuple[float, float]:
        x = LEFT + plot_w * (p.ts - start).total_seconds() / span
        y = TOP + plot_h * (1 - max(p.kw, 0.0) / top)
        return x, y

    parts = _frame(top, unit)
    for hour in range(0, 25, 3):
        x = LEFT + plot_w * hour * 3600 / span
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{hour:02d}:00</text>'
        )
    coords = [xy(p) for p in points]
    if len(coords) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline class="curve" points="{line}"/>')
    shown_unit = escape(unit)
    qualities = {q: escape(q) for q in {p.quality for p in points}}  # a few kinds for many points
    for p, (x, y) in zip(points, coords, strict=True):
        quality = qualities[p.quality]
        parts.append(
            f'<circle class="point q-{quality}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
            f'data-ts="{escape(p.ts.isoformat())}" data-kw="{p.kw:.4f}">'
            f"<title>{p.ts:%H:%M} {p.kw:.3f} {shown_unit} ({quality})</title></circle>"
        )
    body = "".join(parts)
    return Markup(
        f'<svg class="chart load-curve" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-points="{len(points)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _tick(day: date, period: str) -> str:
    """A bar's label: the day of month, a week's Monday as MM-DD, a month as YYYY-MM."""
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "week":
        return f"{day.month:02d}-{day.day:02d}"
    return str(day.day)


def daily_bars(days: Sequence[tuple[date, float | None]], unit: str = "kWh", period: str = "day") -> Markup:
    """One ``rect.bar`` per period (day, week or month, by its first day) with a known consumption."""
    known = [(d, v) for d, v in days if v is not None]
    top = _nice_max(max((v for _, v in known), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    parts = _frame(top, unit)
    for i, (day, value) in enumerate(days):
        x = LEFT + slot * i
        middle = x + slot / 2
        label = _tick(day, period)
        parts.append(
            f'<text class="tick" x="{middle:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>'
        )
        if value is None:
            continue
        h = plot_h * max(value, 0.0) / top
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}" data-day="{day.isoformat()}" data-kwh="{value:.4f}">'
            f"<title>{day.isoformat()} {value:.3f} {escape(unit)}</title></rect>"
        )
    body = "".join(parts)
    return Markup(
        f'<svg class="chart daily-bars" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-period="{escape(period)}" data-days="{len(known)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )
