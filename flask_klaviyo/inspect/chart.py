"""Operations per minute, by stage and by metric or kind: inline SVG, drawn on the server.

One stacked bar chart per stage (queued, sent, parked...), a colour per metric or kind; the
page's own small script switches between stages. Nothing is loaded from anywhere else.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from .journal import STAGES

__all__ = ["render_chart"]

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, BOTTOM, TOP = 36, 20, 22, 8
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _bars(
    minutes: Sequence[tuple[int, dict[str, int]]], stage: str, colours: dict[str, str]
) -> str:
    """One stage's stacked bars (an <svg>), its y axis scaled to its busiest minute."""
    columns = [
        {k.split("|", 1)[1]: v for k, v in counts.items() if k.split("|", 1)[0] == stage}
        for _, counts in minutes
    ]
    peak = max((sum(column.values()) for column in columns), default=0) or 1
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(minutes))
    scale = (HEIGHT - BOTTOM - TOP) / peak
    parts = [
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 10}" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>',
    ]
    for index, ((minute, _), column) in enumerate(zip(minutes, columns, strict=True)):
        x = LEFT + index * slot
        y = HEIGHT - BOTTOM
        for label in sorted(column):
            height = column[label] * scale
            y -= height
            title = f"{_clock(minute)} {stage} {label}: {column[label]}"
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, slot - 2):.1f}" '
                f'height="{height:.1f}" fill="{colours[label]}">'
                f"<title>{html.escape(title)}</title></rect>"
            )
        if index % 5 == 0 or index == len(minutes) - 1:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                f"{_clock(minute)}</text>"
            )
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{stage} per minute">' + "".join(parts) + "</svg>"
    )


def _clock(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")


def render_chart(minutes: Sequence[tuple[int, dict[str, int]]]) -> str:
    """The chart section: a stage picker, one SVG per stage (the first busy one shown) and a
    legend of metrics and kinds (UTC minutes)."""
    labels = sorted({key.split("|", 1)[1] for _, counts in minutes for key in counts})
    if not labels:
        return "<p class=empty>No operations in the last 30 minutes.</p>"
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    busy = [s for s in STAGES if any(k.startswith(s + "|") for _, c in minutes for k in c)]
    shown = "queued" if "queued" in busy else busy[0]
    options = "".join(
        f'<option value="{s}"{" selected" if s == shown else ""}>{s}</option>' for s in busy
    )
    charts = "".join(
        f'<div class="chart" data-stage="{stage}"{"" if stage == shown else " hidden"}>'
        f"{_bars(minutes, stage, colours)}</div>"
        for stage in busy
    )
    legend = "".join(
        f'<span><i style="background:{colours[label]}"></i>{html.escape(label)}</span>'
        for label in labels
    )
    return (
        f'<p><label>stage <select id="stage">{options}</select></label> '
        "per minute (UTC), by metric or kind</p>"
        f'<div class="charts">{charts}</div><p class="legend">{legend}</p>'
    )
