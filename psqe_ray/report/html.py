"""One self-contained HTML page for a ``psqe-ray run`` report (the pipeline's ``report.json``).

The page shows, top to bottom:

* a summary table: dataset, output, recipe, seed method and modalities, entity counts, gold
  links, seed count with precision / recall, graph edge coverage, the headline Hits@1 / Hits@10
  / MRR, and the seconds spent per pipeline step;
* plot 1: seeds per PSQE stage (cumulative count) next to each stage's seed precision;
* plot 2, one small plot per stage: the score histogram of the candidate pairs the stage
  accepted (up) and rejected (down) (``seeds.stages[].scores``);
* PSQE vs UVP at equal size (``seeds.uvp_comparison``: the seed run computes UVP's seeds at
  PSQE's count when gold links exist): a table and a grouped bar plot;
* plot 3: coverage per degree bucket: the seeded fraction of each bucket, left vs right graph;
* plot 4: Hits@1, Hits@10 and MRR for every evaluation variant (direction / CSLS / split);
* sample aligned pairs with their names (``align.samples``): the best, the borderline and,
  with gold links, wrong ones;
* seconds and peak memory per step (``profile`` of the pipeline, the seeds and the aligner);
* the Ray nodes table (jobs only) and a collapsed section listing the configuration, flattened
  to dotted keys.

The page carries no JavaScript and loads nothing: the style sheet is inline and the plots are
inline SVG drawn here (each carries ``data-figure``, its name).  Any part of the report may be
missing or ``None``: a plot that cannot be drawn is replaced by a one-line note saying why (e.g.
no gold links), and a section whose fields an older report lacks is left out.  Every piece of
text taken from the report is HTML-escaped.  At phone width the page does not overflow: wide
tables and plots scroll inside their own box, and plots keep a legible size.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["render_html"]

_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")
_CSS = """
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


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None as soon as a level is missing or is not a dict."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _num(x: Any) -> Number:
    # bool is an int subclass; a stray True must not be plotted as 1.
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _fmt_int(x: Any) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{round(v):,}"


def _fmt_frac(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_sec(x: Any) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{v:.1f} s"


def _text_w(labels: Sequence[str], px: float = 6.5) -> float:
    """Rough rendered width of the longest label; SVG cannot measure text without a script."""
    return max((len(s) for s in labels), default=0) * px


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _svg_open(figure: str, title: str, width: float, height: float,
              min_scale: float | None = 0.8) -> list[str]:
    """An SVG plot's opening: ``data-figure`` names it; its viewBox lets it scale, but (with
    ``min_scale``) not below that share of its size, so that a phone scrolls it in its box
    rather than shrinking its text out of reach."""
    style = f' style="min-width:{width * min_scale:.0f}px"' if min_scale else ""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" data-figure="{_esc(figure)}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"'
            f'{style}>',
            f'<title>{_esc(title or figure)}</title>',
            *([f'<text class="title" x="4" y="16">{_esc(title)}</text>'] if title else [])]


def _fig(svg: str) -> str:
    return f'<div class="fig">\n{svg}\n</div>'


def _table(head: str, rows: Sequence[str], cls: str = "") -> str:
    """A table in a box that scrolls sideways when the table is wider than the page."""
    attr = f' class="{cls}"' if cls else ""
    return (f'<div class="scroll"><table{attr}>\n{head}\n' + "\n".join(rows)
            + "\n</table></div>")


# A panel of a horizontal bar chart: heading, one value per row (None: n/a), full-scale value,
# and how to print a value next to its bar.
Panel = tuple[str, Sequence[Number], float, Callable[[float], str]]


def _hbar_chart(figure: str, title: str, labels: Sequence[str],
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
        out = _svg_open(f"{figure}: {heading}", title if p == 0 else "", width, height)
        for i, label in enumerate(labels):
            y = top + i * row_h + row_h / 2 + 4
            out.append(f'<text x="{label_w - 8:.1f}" y="{y:.1f}" text-anchor="end">'
                       f'{_esc(label)}</text>')
        x0 = label_w
        color = _COLORS[p % len(_COLORS)]
        out.append(f'<text x="{x0:.1f}" y="{top - 10}" font-weight="600">{_esc(heading)}</text>')
        out.append(f'<line class="axis" x1="{x0:.1f}" y1="{top - 4}" x2="{x0:.1f}" '
                   f'y2="{top + len(labels) * row_h}"/>')
        for i, (label, v) in enumerate(zip(labels, values)):
            y = top + i * row_h + (row_h - bar_h) / 2
            if v is None:
                out.append(f'<text class="na" x="{x0 + 4:.1f}" y="{y + bar_h - 4:.1f}">n/a</text>')
                continue
            w = panel_w * max(0.0, min(v, vmax)) / vmax if vmax > 0 else 0.0
            out.append(f'<rect class="bar" data-panel="{_esc(heading)}" data-label="{_esc(label)}" '
                       f'x="{x0:.2f}" y="{y:.2f}" width="{w:.3f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{x0 + w + 4:.2f}" y="{y + bar_h - 4:.1f}">{_esc(fmt(v))}</text>')
        out.append("</svg>")
        plots.append(_fig("\n".join(out)))
    return '<div class="panels">\n' + "\n".join(plots) + "\n</div>"


def _grouped_chart(figure: str, title: str, groups: Sequence[str], series: Sequence[str],
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
    out = _svg_open(figure, title, width, height)
    lx = left
    for s, name in enumerate(series):
        out.append(f'<rect class="legend" x="{lx}" y="28" width="12" height="12" '
                   f'fill="{_COLORS[s % len(_COLORS)]}"/>')
        out.append(f'<text x="{lx + 16}" y="38">{_esc(name)}</text>')
        lx += len(name) * 7 + 34
    for k in range(5):
        t = vmax * k / 4
        y = base - plot_h * k / 4
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.2f}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{_esc(y_label)}</text>')
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
            out.append(f'<rect class="bar" data-group="{_esc(group)}" data-series="{_esc(name)}" '
                       f'x="{x:.2f}" y="{base - h:.3f}" width="{bar_w}" height="{h:.3f}" '
                       f'fill="{_COLORS[s % len(_COLORS)]}"/>')
            out.append(f'<text x="{cx:.1f}" y="{base - h - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:.2f}</text>')
        gc, ly = gx + group_w / 2, base + 14
        if rotate:
            out.append(f'<text x="{gc:.1f}" y="{ly}" text-anchor="end" '
                       f'transform="rotate(-35 {gc:.1f} {ly})">{_esc(group)}</text>')
        else:
            out.append(f'<text x="{gc:.1f}" y="{ly}" text-anchor="middle">{_esc(group)}</text>')
    out.append("</svg>")
    return _fig("\n".join(out))


def _stage_section(seeds: Any) -> str:
    stages = _get(seeds, "stages")
    if not isinstance(stages, list) or not stages:
        return _note("no per-stage seed records in this report: stage plot not available")
    # The feature step runs before any seed exists; a row of zeros would only add noise.
    rows = [s for s in stages if isinstance(s, Mapping)
            and (_num(s.get("count")) or _num(s.get("added")) or _num(s.get("precision")))]
    if not rows:
        return _note("no PSQE stage produced seeds: stage plot not available")
    labels = [str(s.get("name", f"stage {i + 1}")) for i, s in enumerate(rows)]
    counts = [_num(s.get("count")) for s in rows]
    precs = [_num(s.get("precision")) for s in rows]
    panels: list[Panel] = [("seeds (cumulative)", counts,
                            max((c for c in counts if c is not None), default=0.0),
                            lambda v: f"{round(v):,}")]
    notes = ""
    if any(p is not None for p in precs):
        panels.append(("precision", precs, 1.0, lambda v: f"{v:.3f}"))
    else:
        notes = _note("no gold links: precision not measured")
    return _hbar_chart("stages", "Seeds and precision per PSQE stage", labels, panels) + notes


def _counts(x: Any) -> list[float] | None:
    if not isinstance(x, list):
        return None
    vals = [_num(v) for v in x]
    return [max(0.0, v) if v is not None else 0.0 for v in vals]


def _histogram_svg(name: str, rec: Mapping[str, Any]) -> str | None:
    """One stage's score histogram: accepted counts up, rejected counts down, each half scaled
    to its own largest bin (both maxima written on the axis); None when nothing was scored."""
    acc, rej = _counts(rec.get("accepted")), _counts(rec.get("rejected"))
    start, width = _num(rec.get("start")), _num(rec.get("width"))
    n = max(len(acc or []), len(rej or []))
    if acc is None or start is None or width is None or width <= 0 or n == 0:
        return None
    acc = acc + [0.0] * (n - len(acc))
    if rej is not None:
        rej = rej + [0.0] * (n - len(rej))
    w, left, right, top, half = 320, 46, 8, 44, 56
    plot_w = w - left - right
    base = top + half
    height = base + half + 30
    out = _svg_open(f"scores-{name}", name, w, height, min_scale=None)
    n_acc, n_rej = sum(acc), (sum(rej) if rej is not None else None)
    out.append(f'<rect x="{left}" y="24" width="10" height="10" fill="{_COLORS[0]}"/>')
    out.append(f'<text x="{left + 14}" y="33">accepted {round(n_acc):,}</text>')
    rej_text = f"rejected {round(n_rej):,}" if n_rej is not None else "rejected: not recorded"
    out.append(f'<rect x="{left + 130}" y="24" width="10" height="10" fill="{_COLORS[1]}"/>')
    out.append(f'<text x="{left + 144}" y="33">{_esc(rej_text)}</text>')
    bw = plot_w / n
    pad = min(0.5, bw * 0.15)
    for kind, counts, sign, color in (("accepted", acc, -1, _COLORS[0]),
                                      ("rejected", rej, 1, _COLORS[1])):
        if counts is None:
            out.append(f'<text class="na" x="{left + 6}" y="{base + 20}">candidates the stage '
                       f'rejected are not recorded</text>')
            continue
        cmax = max(counts)
        y_label = base + sign * half
        out.append(f'<text x="{left - 5}" y="{y_label + (4 if sign < 0 else 0):.0f}" '
                   f'text-anchor="end">{round(cmax):,}</text>')
        if cmax <= 0:
            out.append(f'<text class="na" x="{left + 6}" y="{base + sign * 20 + 4}">none '
                       f'{kind}</text>')
            continue
        for i, c in enumerate(counts):
            if c <= 0:
                continue
            h = max(half * c / cmax, 0.8)
            y = base - h if sign < 0 else base
            lo = start + i * width
            out.append(f'<rect class="bar" data-stage="{_esc(name)}" data-kind="{kind}" '
                       f'data-bin="{lo:.2f}" data-count="{round(c)}" x="{left + i * bw + pad:.2f}" '
                       f'y="{y:.2f}" width="{max(bw - 2 * pad, 0.5):.2f}" height="{h:.2f}" '
                       f'fill="{color}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base + half}"/>')
    ly = base + half + 14
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        out.append(f'<text x="{left + frac * plot_w:.1f}" y="{ly}" text-anchor="{anchor}">'
                   f'{start + frac * n * width:.2f}</text>')
    out.append(f'<text class="sub" x="{left + plot_w / 2:.1f}" y="{ly + 13}" '
               f'text-anchor="middle">score</text>')
    out.append("</svg>")
    return "\n".join(out)


def _scores_section(seeds: Any) -> str:
    """Score histograms per stage (``seeds.stages[].scores``); "" for a report without them."""
    stages = _get(seeds, "stages")
    recs = [(str(s.get("name", f"stage {i + 1}")), s.get("scores"))
            for i, s in enumerate(stages or []) if isinstance(s, Mapping)] \
        if isinstance(stages, list) else []
    recs = [(name, rec) for name, rec in recs if isinstance(rec, Mapping)]
    if not recs:
        return ""
    plots, empty = [], []
    for name, rec in recs:
        svg = _histogram_svg(name, rec)
        if svg is None:
            empty.append(name)
        else:
            plots.append(svg)
    out = ["<h2>Seed scores per stage: accepted and rejected</h2>",
           '<p class="sub">Scores of the candidate pairs each stage accepted (up) and rejected '
           '(down), in bins of the score; each half is scaled to its own largest bin (written '
           'on the axis). MIC and the recheck judge the seeds already taken.</p>']
    if plots:
        out.append('<div class="grid">\n' + "\n".join(plots) + "\n</div>")
    if empty:
        out.append(_note("no candidate scored in " + ", ".join(empty)))
    return "\n".join(out)


_UVP_ROWS = (("count", "seeds", _fmt_int), ("precision", "precision", _fmt_frac),
             ("judged_precision", "judged precision", _fmt_frac),
             ("recall", "recall", _fmt_frac), ("edge_coverage", "edge coverage", _fmt_frac),
             ("entity_coverage", "entity coverage", _fmt_frac),
             ("degree_gap", "degree gap (lower: better spread)", _fmt_frac))


def _uvp_section(seeds: Any) -> str:
    """PSQE vs UVP at equal size (``seeds.uvp_comparison``); "" for a report without it."""
    comp = _get(seeds, "uvp_comparison")
    if not isinstance(comp, Mapping):
        return ""
    head = "<h2>PSQE vs UVP at equal size</h2>"
    if comp.get("skipped"):
        return head + _note(f"UVP baseline not computed: {comp['skipped']}")
    psqe, uvp = comp.get("psqe"), comp.get("uvp")
    if not isinstance(psqe, Mapping) or not isinstance(uvp, Mapping):
        return head + _note("the comparison holds no figures")
    pivot = str(comp.get("pivot") or "?")
    uvp_name = f"UVP ({pivot})"
    rows = []
    for key, label, fmt in _UVP_ROWS:
        a, b = psqe.get(key), uvp.get(key)
        rows.append(f"<tr><th>{_esc(label)}</th><td class=\"num\">{fmt(a)}</td>"
                    f"<td class=\"num\">{fmt(b)}</td></tr>")
    table = _table(f'<tr><th></th><th class="num">PSQE</th><th class="num">'
                   f'{_esc(uvp_name)}</th></tr>', rows)
    metrics = [(k, label) for k, label, _ in _UVP_ROWS[1:6]]
    values = [[_num(psqe.get(k)), _num(uvp.get(k))] for k, _ in metrics]
    chart = _grouped_chart("uvp", f"PSQE vs UVP at {_fmt_int(comp.get('count'))} seeds",
                           [label for _, label in metrics], ["PSQE", uvp_name], values, "value")
    return "\n".join([
        head,
        f'<p class="sub">UVP\'s seeds (greedy one-to-one on the {_esc(pivot)} features, the '
        f'<span class="mono">method=uvp</span> baseline) at PSQE\'s seed count, judged against '
        'the gold links after the run: evaluation only, the seeds used are PSQE\'s.</p>',
        table, chart])


_STEP_LABELS = {
    "encode": "encode (models)", "load": "load the dataset",
    "prepare": "features: rows, fill, signal test", "features": "features: fusion",
    "stage1-cluster": "Stage I: clusters, greedy", "stage2-train": "Stage II: training",
    "stage2-global": "Stage II: global sampling", "stage2-mic": "Stage II: MIC",
    "stage3-expansion": "Stage III: expansion", "stage3-recheck": "Stage III: recheck",
    "uvp": "UVP greedy", "multimodal-greedy": "Type II greedy",
    "inputs": "inputs: features", "train": "training", "search": "search (top-k)",
    "matching": "one-to-one matching", "evaluation": "evaluation (gold links)",
}


def _profile_section(report: Mapping[str, Any]) -> str:
    """Seconds and peak memory per step (``profile`` lists); "" for a report without them."""
    groups = [("pipeline", report.get("profile")), ("seeds", _get(report, "seeds", "profile")),
              ("aligner", _get(report, "align", "profile"))]
    groups = [(g, [e for e in p if isinstance(e, Mapping)]) for g, p in groups
              if isinstance(p, list)]
    groups = [(g, p) for g, p in groups if p]
    if not groups:
        return ""
    longest = max((_num(e.get("seconds")) or 0.0 for _, p in groups for e in p), default=0.0)
    ray = any(_get(report, part, "engine") == "ray" for part in ("seeds", "align"))
    workers = any(_num(e.get("worker_peak_rss_bytes")) for _, p in groups for e in p)
    rows = []
    for group, entries in groups:
        rows.append(f'<tr class="group"><th colspan="{4 if workers else 3}">{_esc(group)}</th>'
                    "</tr>")
        for e in entries:
            step = str(e.get("step", "?"))
            label = _STEP_LABELS.get(step, step)
            sec = _num(e.get("seconds"))
            bar = (f'<span class="meter" style="width:{3 * sec / longest:.2f}em"></span>'
                   if sec is not None and longest > 0 else "")
            peak = _fmt_bytes(e.get("peak_rss_bytes"))
            if e.get("peak_rss_sampled") and peak != "-":
                peak = "≈ " + peak
            notes = " <span class=\"sub\">(resumed: loaded from its commit)</span>" \
                if e.get("resumed") else ""
            secs = "n/a" if sec is None else f"{sec:.2f} s" if sec < 10 else f"{sec:,.1f} s"
            row = (f"<tr><td>{_esc(label)}{notes}</td><td class=\"num\">{secs}{bar}</td>"
                   f'<td class="num">{_esc(peak)}</td>')
            if workers:
                row += f'<td class="num">{_esc(_fmt_bytes(e.get("worker_peak_rss_bytes")))}</td>'
            rows.append(row + "</tr>")
    who = "the driver's" if ray else "this process's"
    head = ('<tr><th>step</th><th class="num">seconds</th><th class="num">peak RSS</th>'
            + ('<th class="num">workers\' peak</th>' if workers else "") + "</tr>")
    note = (f"Peak RSS: {who} resident memory at its highest during the step (≈: sampled "
            "every 20 ms, the step stayed under an earlier peak).")
    if workers:
        note += (" Workers' peak: the largest peak reported by the step's Ray tasks and actors "
                 "(a worker process's peak over its life), where known.")
    return "\n".join(["<h2>Seconds and peak memory per step</h2>", _table(head, rows),
                      f'<p class="sub">{_esc(note)}</p>'])


def _entity(name: Any, ident: Any) -> str:
    ident = _fmt_int(ident)
    if name is None or name == "":
        return f'<span class="mono">#{ident}</span>'
    return f'{_esc(name)} <span class="sub">#{ident}</span>'


def _samples_section(align: Any) -> str:
    """Sample aligned pairs with names (``align.samples``); "" for a report without them."""
    sm = _get(align, "samples")
    if not isinstance(sm, Mapping):
        return ""
    score_name = str(sm.get("score") or "score")
    thr = _num(sm.get("threshold"))
    near = (f"nearest the acceptance threshold {thr:g}" if thr is not None
            else "the lowest scores")
    parts = [("best", "best", "the highest scores"), ("borderline", "borderline", near),
             ("wrong", "wrong", "the highest-scored pairs a gold link contradicts")]
    rows, notes = [], []
    for key, title, what in parts:
        items = sm.get(key)
        if key == "wrong" and items is None:
            notes.append("no gold links: wrong pairs are not known")
            continue
        if not isinstance(items, list):
            continue
        rows.append(f'<tr class="group"><th colspan="4">{_esc(title)} '
                    f'<span class="sub">({_esc(what)})</span></th></tr>')
        if not items:
            rows.append('<tr><td colspan="4" class="sub">none</td></tr>')
        for it in items:
            if not isinstance(it, Mapping):
                continue
            verdict = it.get("verdict")
            if verdict == "wrong":
                gold = it.get("gold_right_id")
                v = '<span class="bad">wrong</span>'
                if gold is not None:
                    v += ('<br><span class="sub">gold:</span> '
                          + _entity(it.get("gold_right_name"), gold))
            elif verdict == "correct":
                v = '<span class="ok">correct</span>'
            elif verdict:
                v = f'<span class="sub">{_esc(verdict)}</span>'
            else:
                v = '<span class="sub">-</span>'
            score = _fmt_frac(it.get("score"))
            sim = _num(it.get("similarity"))
            if sim is not None:
                score += f'<br><span class="sub">cos {sim:.3f}</span>'
            rows.append(f"<tr><td>{_entity(it.get('left_name'), it.get('left_id'))}</td>"
                        f"<td>{_entity(it.get('right_name'), it.get('right_id'))}</td>"
                        f'<td class="num">{score}</td><td>{v}</td></tr>')
    head = (f'<tr><th>left entity</th><th>right entity</th>'
            f'<th class="num">{_esc(score_name)}</th><th>gold says</th></tr>')
    src = str(sm.get("source") or "pairs")
    return "\n".join([
        "<h2>Sample aligned pairs</h2>",
        f'<p class="sub">From the {_esc(src)}: {_fmt_int(sm.get("pairs"))} pairs; '
        f'{_esc(score_name)} of each, and the aligner\'s cosine.</p>',
        _table(head, rows) if rows else "", *(_note(n) for n in notes)])


def _bucket_key(label: str) -> tuple[int, float]:
    # Buckets are written "lo-hi"; order by lo so that left and right interleave correctly.
    m = re.match(r"\s*(\d+)", label)
    return (0, float(m.group(1))) if m else (1, 0.0)


def _coverage_section(seeds: Any) -> str:
    buckets = _get(seeds, "coverage", "degree_buckets")
    sides = [side for side in ("left", "right") if isinstance(_get(buckets, side), list)]
    if not sides:
        return _note("no degree-bucket coverage in this report: coverage plot not available")
    by_side: dict[str, dict[str, Number]] = {}
    for side in sides:
        by_side[side] = {str(b.get("degrees")): _num(b.get("seeded_fraction"))
                         for b in buckets[side] if isinstance(b, Mapping)}
    labels = sorted({lab for d in by_side.values() for lab in d}, key=_bucket_key)
    if not labels:
        return _note("degree buckets are empty: coverage plot not available")
    values = [[by_side[side].get(lab) for side in sides] for lab in labels]
    return _grouped_chart("coverage", "Seeded fraction per degree bucket",
                          [f"deg {lab}" for lab in labels], sides, values, "seeded fraction")


_METRICS = (("hits@1", "Hits@1"), ("hits@10", "Hits@10"), ("mrr", "MRR"))


def _hits_section(align: Any) -> str:
    if not isinstance(align, Mapping):
        return _note("no alignment result in this report: Hits@k not measured")
    variants = align.get("variants")
    if isinstance(variants, Mapping) and variants:
        items = [(str(k), v) for k, v in variants.items() if isinstance(v, Mapping)]
    elif _num(align.get("hits@1")) is not None:
        items = [("headline", align)]
    else:
        items = []
    if not items:
        return _note("no gold links: Hits@k not measured")
    values = [[_num(v.get(key)) for key, _ in _METRICS] for _, v in items]
    return _grouped_chart("hits", "Alignment quality per evaluation variant",
                          [k for k, _ in items], [name for _, name in _METRICS], values, "score")


def _summary_rows(report: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    seeds, align = report.get("seeds"), report.get("align")
    yield "dataset", _esc(report.get("dataset") or "n/a")
    if report.get("out"):
        yield "output", _esc(report["out"])
    yield "recipe", _esc(report.get("recipe") or _get(align, "recipe") or "n/a")
    yield "seed method", _esc(_get(seeds, "method") or "n/a")
    mods = _get(seeds, "modalities")
    yield "modalities", _esc(", ".join(map(str, mods)) if isinstance(mods, list) and mods else "n/a")
    skipped = _get(seeds, "skipped_modalities")
    if isinstance(skipped, Mapping) and skipped:
        yield "modalities left out", "<br>".join(f"{_esc(m)}: {_esc(why)}"
                                                 for m, why in skipped.items())
    ents = _get(seeds, "entities")
    yield "entities", (f"{_fmt_int(_get(ents, 'left'))} left · {_fmt_int(_get(ents, 'right'))} right"
                       if isinstance(ents, Mapping) else "n/a")
    gold = _get(seeds, "gold")
    yield "gold links", _fmt_int(gold) if _num(gold) is not None else "none"
    s = _get(seeds, "seeds")
    if isinstance(s, Mapping):
        prec, rec = _num(s.get("precision")), _num(s.get("recall"))
        quality = (f"precision {_fmt_frac(prec)}, recall {_fmt_frac(rec)}"
                   if prec is not None or rec is not None else "precision not measured")
        yield "seeds", f'{_fmt_int(s.get("count"))} <span class="sub">({quality})</span>'
    edge = _get(seeds, "coverage", "edge_coverage")
    if isinstance(edge, Mapping):
        yield "edge coverage", " · ".join(f"{k} {_fmt_frac(edge.get(k))}"
                                          for k in ("left", "right", "mean"))
    if isinstance(align, Mapping):
        if _num(align.get("hits@1")) is None:
            yield "alignment", "Hits@k not measured (no gold links)"
        else:
            yield "alignment", " · ".join(f"{name} <b>{_fmt_frac(align.get(key))}</b>"
                                          for key, name in _METRICS)
        match = align.get("matching")
        if isinstance(match, Mapping):
            head = f"{_fmt_int(match.get('matches'))} pairs ({_esc(match.get('method'))})"
            if _num(match.get("f1")) is not None:
                head += " · " + " · ".join(f"{k} <b>{_fmt_frac(match.get(k))}</b>"
                                           for k in ("precision", "recall", "f1"))
            else:
                head += ' <span class="sub">(not scored: no gold links)</span>'
            yield "one-to-one matches", head
            rank = match.get("ranking")
            if isinstance(rank, Mapping):
                yield "balanced ranking", " · ".join(
                    f"{name} <b>{_fmt_frac(rank.get(key))}</b>" for key, name in _METRICS)
        added = align.get("pairs_added")
        if isinstance(added, list):  # one count per self-training round
            rounds = [_num(x) or 0.0 for x in added]
            added_text = (f"{_fmt_int(sum(rounds))} <span class=\"sub\">(per round: "
                          f"{' + '.join(_fmt_int(x) for x in rounds)})</span>")
        else:
            added_text = _fmt_int(added)
        yield "seeds used / pairs added", f"{_fmt_int(align.get('seeds_used'))} / {added_text}"
    secs = report.get("seconds")
    if isinstance(secs, Mapping) and secs:
        yield "seconds", " · ".join(f"{_esc(k)} {_fmt_sec(v)}" for k, v in secs.items())


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _config_section(config: Any, limit: int = 400) -> str:
    if not isinstance(config, Mapping) or not config:
        return "<h2>Configuration</h2>" + _note("no configuration recorded in this report")
    rows = list(_flatten(config))
    body = []
    for key, value in rows[:limit]:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        # A giant list (say, an id map) would swamp the page; the key is what a reader needs.
        text = text if len(text) <= 300 else text[:300] + " …"
        body.append(f'<tr><th class="mono">{_esc(key)}</th><td class="mono">{_esc(text)}</td></tr>')
    more = f'<p class="sub">… {len(rows) - limit} more values not shown</p>' if len(rows) > limit else ""
    return (f"<h2>Configuration</h2>\n<details><summary>{len(rows)} values</summary>\n"
            f'<div class="scroll"><table>\n{chr(10).join(body)}\n</table></div>{more}</details>')


def _fmt_bytes(x: Any) -> str:
    n = _num(x)
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return "-"


def _nodes_section(nodes: Any) -> str:
    """Per Ray node: what ran there and what it read (report.json ``nodes``, jobs only)."""
    if not isinstance(nodes, Mapping) or not nodes:
        return ""

    def counts(d: Any) -> str:
        return ", ".join(f"{_esc(k)} {_fmt_int(v)}" for k, v in sorted(d.items())) \
            if isinstance(d, Mapping) and d else "-"

    rows = []
    for node, rec in sorted(nodes.items()):
        rec = rec if isinstance(rec, Mapping) else {}
        driver = rec.get("driver_bytes_read")
        rows.append(
            f'<tr><th class="mono">{_esc(str(node)[:12])}</th>'
            f"<td>{_esc(rec.get('address') or '')}</td><td>{counts(rec.get('tasks'))}</td>"
            f"<td>{counts(rec.get('actors'))}</td><td>{_fmt_bytes(rec.get('bytes_read'))}</td>"
            f"<td>{_fmt_bytes(driver) if driver is not None else '-'}</td></tr>")
    head = ("<tr><th>node</th><th>address</th><th>tasks</th><th>actors</th>"
            "<th>bytes read</th><th>driver read</th></tr>")
    return "<h2>Ray nodes</h2>\n" + _table(head, rows)


def render_html(report: dict) -> str:
    """The whole page for one pipeline report (see the module docstring); never raises on
    missing or None parts of ``report``."""
    if not isinstance(report, Mapping):
        report = {}
    name = str(report.get("pipeline") or "psqe-ray run")
    title = f"{name} report"
    summary = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _summary_rows(report))
    seeds = report.get("seeds")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{_esc(report.get("dataset") or "")}</p>',
        "<h2>Summary</h2>",
        f'<table class="summary">\n{summary}\n</table>',
        "<h2>Seeds per stage</h2>",
        _stage_section(seeds),
        _scores_section(seeds),
        _uvp_section(seeds),
        "<h2>Coverage per degree bucket</h2>",
        _coverage_section(seeds),
        "<h2>Alignment: Hits@k and MRR</h2>",
        _hits_section(report.get("align")),
        _samples_section(report.get("align")),
        _profile_section(report),
        _nodes_section(report.get("nodes")),
        _config_section(report.get("config")),
        "</body>",
        "</html>",
        "",
    ])
