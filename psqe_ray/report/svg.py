"""Drawing primitives of report.html: escaping and number formats, the style sheet, tables and
inline SVG bar plots (each carries ``data-figure``, its name).  No JavaScript, nothing loaded.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; overflow-wrap: break-word; }
table.summary td { overflow-wrap: anywhere; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .25em .8em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
th { font-weight: 600; color: #444; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll tr.group th { background: #f4f4f4; color: #222; white-space: normal; }
td.mono, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; }
.note { color: #8a5a00; background: #fff7e0; padding: .4em .8em; border-left: 3px solid #e0a800; }
.sub { color: #666; }
.ok { color: #2d7a2d; } .bad { color: #b02a2a; }
.scroll, .fig { overflow-x: auto; max-width: 100%; }
.panels { display: flex; flex-wrap: wrap; column-gap: 1.5em; }
.panels .fig { flex: 0 1 auto; }
.fig svg { max-width: 100%; height: auto; display: block; margin: .5em 0 1em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
        gap: 0 1.5em; }
.grid svg { width: 100%; height: auto; display: block; margin: .3em 0 .8em; }
.meter { display: inline-block; height: .6em; background: #4e79a7; margin-left: .4em;
         vertical-align: middle; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg text.title { font-size: 13px; font-weight: 600; }
svg text.na { fill: #999; font-style: italic; }
svg line.grid { stroke: #e5e5e5; } svg line.axis { stroke: #888; }
details summary { cursor: pointer; font-weight: 600; }
@media (max-width: 600px) {
  body { margin: 1em auto; padding: 0 .6em; font-size: 13px; }
  th, td { padding: .2em .45em; }
}
"""

Number = float | None


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None as soon as a level is missing or is not a dict."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def number(x: Any) -> Number:
    # bool is an int subclass; a stray True must not be plotted as 1.
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def fmt_int(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{round(v):,}"


def fmt_frac(x: Any, digits: int = 3) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.{digits}f}"


def fmt_sec(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.1f} s"


def _text_w(labels: Sequence[str], px: float = 6.5) -> float:
    """Rough rendered width of the longest label; SVG cannot measure text without a script."""
    return max((len(s) for s in labels), default=0) * px


def note_html(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def svg_open(figure: str, title: str, width: float, height: float,
              min_scale: float | None = 0.8) -> list[str]:
    """An SVG plot's opening: ``data-figure`` names it; its viewBox lets it scale, but (with
    ``min_scale``) not below that share of its size, so that a phone scrolls it in its box
    rather than shrinking its text out of reach."""
    style = f' style="min-width:{width * min_scale:.0f}px"' if min_scale else ""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" data-figure="{esc(figure)}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"'
            f'{style}>',
            f'<title>{esc(title or figure)}</title>',
            *([f'<text class="title" x="4" y="16">{esc(title)}</text>'] if title else [])]


def _fig(svg: str) -> str:
    return f'<div class="fig">\n{svg}\n</div>'


def table_html(head: str, rows: Sequence[str], cls: str = "") -> str:
    """A table in a box that scrolls sideways when the table is wider than the page."""
    attr = f' class="{cls}"' if cls else ""
    return (f'<div class="scroll"><table{attr}>\n{head}\n' + "\n".join(rows)
            + "\n</table></div>")


# A panel of a horizontal bar chart: heading, one value per row (None: n/a), full-scale value,
# and how to print a value next to its bar.
Panel = tuple[str, Sequence[Number], float, Callable[[float], str]]


def hbar_chart(figure: str, title: str, labels: Sequence[str],
                panels: Sequence[Panel]) -> str:
    """Horizontal bars, one row per label, one plot per measure (``data-figure``
    "<figure>: <heading>"), each with the row labels: side by side on a wide page, so that a
    stage's count and precision read on one line, one under the other on a phone."""
    row_h, bar_h, panel_w, gap, top = 26, 16, 260, 80, 46
    label_w = _text_w(labels) + 14
    width = label_w + panel_w + gap
    height = top + len(labels) * row_h + 12
    plots = []
    for p, (heading, values, vmax, fmt) in enumerate(panels):
        out = svg_open(f"{figure}: {heading}", title if p == 0 else "", width, height)
        for i, label in enumerate(labels):
            y = top + i * row_h + row_h / 2 + 4
            out.append(f'<text x="{label_w - 8:.1f}" y="{y:.1f}" text-anchor="end">'
                       f'{esc(label)}</text>')
        x0 = label_w
        color = COLORS[p % len(COLORS)]
        out.append(f'<text x="{x0:.1f}" y="{top - 10}" font-weight="600">{esc(heading)}</text>')
        out.append(f'<line class="axis" x1="{x0:.1f}" y1="{top - 4}" x2="{x0:.1f}" '
                   f'y2="{top + len(labels) * row_h}"/>')
        for i, (label, v) in enumerate(zip(labels, values)):
            y = top + i * row_h + (row_h - bar_h) / 2
            if v is None:
                out.append(f'<text class="na" x="{x0 + 4:.1f}" y="{y + bar_h - 4:.1f}">n/a</text>')
                continue
            w = panel_w * max(0.0, min(v, vmax)) / vmax if vmax > 0 else 0.0
            out.append(f'<rect class="bar" data-panel="{esc(heading)}" data-label="{esc(label)}" '
                       f'x="{x0:.2f}" y="{y:.2f}" width="{w:.3f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{x0 + w + 4:.2f}" y="{y + bar_h - 4:.1f}">{esc(fmt(v))}</text>')
        out.append("</svg>")
        plots.append(_fig("\n".join(out)))
    return '<div class="panels">\n' + "\n".join(plots) + "\n</div>"


def grouped_chart(figure: str, title: str, groups: Sequence[str], series: Sequence[str],
                   values: Sequence[Sequence[Number]], y_label: str, vmax: float = 1.0) -> str:
    """Vertical bars: one cluster per group, one coloured bar per series, with a legend and a
    y axis from 0 to ``vmax``; a None value is written as n/a on the baseline."""
    bar_w, inner, group_gap, plot_h, left, top = 24, 3, 22, 200, 58, 56
    group_w = len(series) * (bar_w + inner) - inner
    # Long group names (e.g. "l2r/csls/test") would overlap when written flat under the bars.
    rotate = _text_w(groups) > group_w + group_gap - 4
    bottom = (_text_w(groups) * 0.6 + 24) if rotate else 30
    plot_w = group_gap + len(groups) * (group_w + group_gap)
    legend_w = sum(len(s) * 7 + 34 for s in series)
    width = max(left + plot_w + 12, left + legend_w)
    height = top + plot_h + bottom
    base = top + plot_h
    out = svg_open(figure, title, width, height)
    lx = left
    for s, name in enumerate(series):
        out.append(f'<rect class="legend" x="{lx}" y="28" width="12" height="12" '
                   f'fill="{COLORS[s % len(COLORS)]}"/>')
        out.append(f'<text x="{lx + 16}" y="38">{esc(name)}</text>')
        lx += len(name) * 7 + 34
    for k in range(5):
        t = vmax * k / 4
        y = base - plot_h * k / 4
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.2f}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{esc(y_label)}</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"/>')
    for g, (group, row) in enumerate(zip(groups, values)):
        gx = left + group_gap + g * (group_w + group_gap)
        for s, (name, v) in enumerate(zip(series, row)):
            x = gx + s * (bar_w + inner)
            cx = x + bar_w / 2
            if v is None:
                out.append(f'<text class="na" x="{cx:.1f}" y="{base - 4}" '
                           f'text-anchor="middle">n/a</text>')
                continue
            h = plot_h * max(0.0, min(v, vmax)) / vmax if vmax > 0 else 0.0
            out.append(f'<rect class="bar" data-group="{esc(group)}" data-series="{esc(name)}" '
                       f'x="{x:.2f}" y="{base - h:.3f}" width="{bar_w}" height="{h:.3f}" '
                       f'fill="{COLORS[s % len(COLORS)]}"/>')
            out.append(f'<text x="{cx:.1f}" y="{base - h - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:.2f}</text>')
        gc, ly = gx + group_w / 2, base + 14
        if rotate:
            out.append(f'<text x="{gc:.1f}" y="{ly}" text-anchor="end" '
                       f'transform="rotate(-35 {gc:.1f} {ly})">{esc(group)}</text>')
        else:
            out.append(f'<text x="{gc:.1f}" y="{ly}" text-anchor="middle">{esc(group)}</text>')
    out.append("</svg>")
    return _fig("\n".join(out))
