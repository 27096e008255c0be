"""The week's orders and margin as inline SVG bar charts, drawn here on the server
(no JavaScript library): one bar per day, its value on hover (`<title>`)."""

from __future__ import annotations

from html import escape

from gateway.money import wire
from gateway.state.stats import Day

WIDTH, HEIGHT = 560, 180
PAD_L, PAD_R, PAD_T, PAD_B = 56, 8, 12, 28


def bars(title: str, labels: list[str], values: list[float], texts: list[str],
         colour: str = "#3b6ea8", negative: str = "#b04040") -> str:
    """A bar chart of `values` (negatives below a zero line); `texts` are the hover labels."""
    top = max([0.0, *values])
    bottom = min([0.0, *values])
    if top == bottom:  # nothing yet: the zero line at the bottom
        top = 1.0
    span = top - bottom
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def y(v: float) -> float:
        return PAD_T + (top - v) / span * inner_h

    slot = inner_w / max(len(values), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'class="chart">',
             f'<title>{escape(title)}</title>',
             f'<line x1="{PAD_L}" y1="{y(0):.1f}" x2="{WIDTH - PAD_R}" y2="{y(0):.1f}" '
             'stroke="#888" stroke-width="1"/>',
             f'<text x="{PAD_L - 6}" y="{y(top) + 4:.1f}" text-anchor="end" '
             f'font-size="11">{escape(_short(top))}</text>']
    if bottom < 0:
        parts.append(f'<text x="{PAD_L - 6}" y="{y(bottom):.1f}" text-anchor="end" '
                     f'font-size="11">{escape(_short(bottom))}</text>')
    for i, (label, v, hover) in enumerate(zip(labels, values, texts, strict=True)):
        x = PAD_L + i * slot + slot * 0.15
        y0, y1 = sorted((y(0), y(v)))
        fill = colour if v >= 0 else negative
        parts.append(f'<rect x="{x:.1f}" y="{y0:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(y1 - y0, 0.5):.1f}" fill="{fill}">'
                     f'<title>{escape(label)}: {escape(hover)}</title></rect>')
        parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                     f'font-size="11">{escape(label[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.2f}"


def orders_chart(days: list[Day]) -> str:
    return bars("Orders placed per day (UTC)", [d.day for d in days],
                [float(d.placed) for d in days], [f"{d.placed} orders" for d in days])


def margin_chart(days: list[Day], currency: str) -> str:
    return bars(f"Margin per day ({currency}, charged - cost)", [d.day for d in days],
                [float(d.margin) for d in days],
                [f"{wire(d.margin)} {currency} (charged {wire(d.charged)}, "
                 f"cost {wire(d.cost)})" for d in days], colour="#3a8a4f")
