"""Inline SVG line plots: baseline and impact series of one metric, with the deploy marked.

Written by hand rather than with matplotlib or a charting library: a report needs two
polylines, axes and a marker, and hand-written SVG is byte-for-byte deterministic, adds
no dependency, no fonts to embed and nothing to import (``afdp report`` starts fast), and
needs no JavaScript to display.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from afdp.audit.report import units
from afdp.audit.report.units import Scale
from afdp.errors import visible_html as escape

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 36, 30, 40
#: Width of a 10px label character, to keep tick labels inside the image.
CHAR_WIDTH = 6.2
MAX_POINTS = 1500
BASELINE_COLOR = "#2563eb"
IMPACT_COLOR = "#d9480f"
DEPLOY_COLOR = "#b91c1c"


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


def line_plot(
    *,
    metric: str,
    unit: str,
    baseline: Sequence[tuple[float, float]],
    impact: Sequence[tuple[float, float]],
    deployed_at: float | None,
    scale: Scale | None = None,
) -> str:
    """Return an ``<svg>`` element plotting ``baseline`` and ``impact`` (time, value) series.

    Times are unix seconds (or sample indices); ``deployed_at`` draws a dashed vertical
    marker when it falls inside (or next to) the plotted range. Values are raw (in
    ``unit``) and drawn in ``scale`` (default: :func:`units.scale_for` the samples), so
    the axis reads ``ms`` or ``%`` like the table; the y axis has round ticks and starts
    at zero for non-negative data near zero; every label stays inside the image.
    """
    baseline, impact = _thin(sorted(baseline)), _thin(sorted(impact))
    points = baseline + impact
    if scale is None:
        scale = units.scale_for(unit, [v for _, v in points])
    shown_unit = scale.axis_label
    label = f"{metric} ({shown_unit})" if shown_unit else metric
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
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    axis = units.value_axis([scale.convert(v) for _, v in points])
    y0, y1 = axis.low, axis.high
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(t: float) -> float:
        return LEFT + (t - x0) / (x1 - x0) * plot_w

    def py(raw: float) -> float:
        return TOP + (1 - (scale.convert(raw) - y0) / (y1 - y0)) * plot_h

    # frame, horizontal grid and y labels at round values
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999" stroke-width="1"/>'
    )
    for tick in axis.ticks:
        y = TOP + (1 - (tick - y0) / (y1 - y0)) * plot_h
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e5e5e5" stroke-width="1"/>'
            f'<text class="ytick" x="{LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end" font-size="10" fill="#444">{escape(axis.label(tick))}</text>'
        )
    # x ticks at round instants (or sample numbers), labels kept inside the image
    timed = x0 >= 1e9
    if timed:
        ticks = units.time_ticks(x0, x1)
        span = x1 - x0
        step = ticks[1] - ticks[0] if len(ticks) > 1 else span
        fmt = (
            "%m-%d %H:%M"
            if span >= 86400
            else ("%H:%M" if step >= 60 and span >= 600 else "%H:%M:%S")
        )
        labels = [(t, datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in ticks]
    else:
        index_axis = units.value_axis([x0, x1], intervals=5)
        labels = [(t, index_axis.label(t)) for t in index_axis.ticks if x0 <= t <= x1]
    base = TOP + plot_h
    for t, text in labels:
        x = px(t)
        half = len(text) * CHAR_WIDTH / 2
        tx = min(max(x, half + 2), WIDTH - half - 2)
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#999" stroke-width="1"/>'
            f'<text class="xtick" x="{tx:.1f}" y="{base + 15}" text-anchor="middle" font-size="10" fill="#444">{escape(text)}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 4}" text-anchor="end" font-size="10" fill="#666">'
        f"{'time (UTC)' if timed else 'sample'}</text>"
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
    lx = WIDTH - RIGHT - 150
    parts.append(
        f'<line x1="{lx}" y1="14" x2="{lx + 18}" y2="14" stroke="{BASELINE_COLOR}" stroke-width="2"/>'
        f'<text x="{lx + 22}" y="18" font-size="10" fill="#222">baseline</text>'
        f'<line x1="{lx + 80}" y1="14" x2="{lx + 98}" y2="14" stroke="{IMPACT_COLOR}" stroke-width="2"/>'
        f'<text x="{lx + 102}" y="18" font-size="10" fill="#222">impact</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
