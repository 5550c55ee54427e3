"""Inline SVG line plots: baseline and impact series of one metric, with the deploy marked.

Written by hand rather than with matplotlib or a charting library: a report needs two
polylines, axes and a marker, and hand-written SVG is byte-for-byte deterministic, adds
no dependency, no fonts to embed and nothing to import (``afdp report`` starts fast), and
needs no JavaScript to display.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 36
MAX_POINTS = 1500
BASELINE_COLOR = "#2563eb"
IMPACT_COLOR = "#d9480f"
DEPLOY_COLOR = "#b91c1c"


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _time_label(t: float, span: float) -> str:
    if t < 1e9:  # sample indices, not unix times
        return _number(t)
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%H:%M:%S" if span < 86400 else "%m-%d %H:%M")


def line_plot(
    *,
    metric: str,
    unit: str,
    baseline: Sequence[tuple[float, float]],
    impact: Sequence[tuple[float, float]],
    deployed_at: float | None,
) -> str:
    """Return an ``<svg>`` element plotting ``baseline`` and ``impact`` (time, value) series.

    Times are unix seconds (or sample indices); ``deployed_at`` draws a dashed vertical
    marker when it falls inside (or next to) the plotted range.
    """
    baseline, impact = _thin(sorted(baseline)), _thin(sorted(impact))
    points = baseline + impact
    label = f"{metric} ({unit})" if unit else metric
    title = f"{label}: baseline {len(baseline)} sample(s), impact {len(impact)} sample(s)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-metric="{escape(metric)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold" fill="#111">{escape(label)}</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="12" '
            'fill="#555">no samples recorded</text></svg>'
        )
        return "".join(parts)
    xs = [t for t, _ in points] + ([deployed_at] if deployed_at is not None else [])
    ys = [v for _, v in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.08
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(t: float) -> float:
        return LEFT + (t - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return TOP + (1 - (v - y0) / (y1 - y0)) * plot_h

    # axes and grid
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999" stroke-width="1"/>'
    )
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        y = py(v)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e5e5e5" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#444">{escape(_number(v))}</text>'
        )
    span = x1 - x0
    for i in range(5):
        t = x0 + span * i / 4
        parts.append(
            f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="10" fill="#444">{escape(_time_label(t, span))}</text>'
        )
    if x0 >= 1e9:
        parts.append(
            f'<text x="{LEFT + plot_w}" y="{HEIGHT - 4}" text-anchor="end" font-size="10" fill="#666">UTC</text>'
        )
    # series
    for name, series, color in (
        ("baseline", baseline, BASELINE_COLOR),
        ("impact", impact, IMPACT_COLOR),
    ):
        if not series:
            continue
        coords = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in series)
        parts.append(
            f'<polyline class="series {name}" fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>'
        )
        if len(series) == 1:
            t, v = series[0]
            parts.append(f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
    if deployed_at is not None:
        x = px(deployed_at)
        parts.append(
            f'<line class="deploy-marker" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" '
            f'stroke="{DEPLOY_COLOR}" stroke-width="1.5" stroke-dasharray="5,4"/>'
            f'<text x="{x + 4:.1f}" y="{TOP + 12}" font-size="10" fill="{DEPLOY_COLOR}">deploy</text>'
        )
    # legend
    lx = WIDTH - RIGHT - 190
    parts.append(
        f'<line x1="{lx}" y1="14" x2="{lx + 18}" y2="14" stroke="{BASELINE_COLOR}" stroke-width="2"/>'
        f'<text x="{lx + 22}" y="18" font-size="10" fill="#222">baseline</text>'
        f'<line x1="{lx + 80}" y1="14" x2="{lx + 98}" y2="14" stroke="{IMPACT_COLOR}" stroke-width="2"/>'
        f'<text x="{lx + 102}" y="18" font-size="10" fill="#222">impact</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
