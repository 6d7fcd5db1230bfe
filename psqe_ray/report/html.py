"""One self-contained HTML page for a ``psqe-ray run`` report (the pipeline's ``report.json``).

The page shows, top to bottom:

* a summary table: dataset, output, recipe, seed method and modalities, entity counts, gold
  links, seed count with precision / recall, graph edge coverage, the headline Hits@1 / Hits@10
  / MRR, and the seconds spent per pipeline step;
* plot 1: seeds per PSQE stage (cumulative count) next to each stage's seed precision;
* plot 2: coverage per degree bucket: the seeded fraction of each bucket, left vs right graph;
* plot 3: Hits@1, Hits@10 and MRR for every evaluation variant (direction / CSLS / split);
* a collapsed section listing the configuration, flattened to dotted keys.

The page carries no JavaScript and loads nothing: the style sheet is inline and the plots are
inline SVG drawn here. Any part of the report may be missing or ``None``; a plot that cannot be
drawn is replaced by a one-line note saying why (e.g. no gold links). Every piece of text taken
from the report is HTML-escaped.
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
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .25em .8em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
th { font-weight: 600; color: #444; white-space: nowrap; }
td.mono, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; }
.note { color: #8a5a00; background: #fff7e0; padding: .4em .8em; border-left: 3px solid #e0a800; }
.sub { color: #666; }
svg { max-width: 100%; height: auto; display: block; margin: .5em 0 1em; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg text.title { font-size: 13px; font-weight: 600; }
svg text.na { fill: #999; font-style: italic; }
svg line.grid { stroke: #e5e5e5; } svg line.axis { stroke: #888; }
details summary { cursor: pointer; font-weight: 600; }
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


# A panel of a horizontal bar chart: heading, one value per row (None: n/a), full-scale value,
# and how to print a value next to its bar.
Panel = tuple[str, Sequence[Number], float, Callable[[float], str]]


def _hbar_chart(title: str, labels: Sequence[str], panels: Sequence[Panel]) -> str:
    """Horizontal bars, one row per label, one panel per measure; panels share the row labels
    so that a stage's count and precision read on one line."""
    row_h, bar_h, panel_w, gap, top = 26, 16, 260, 80, 46
    label_w = _text_w(labels) + 14
    width = label_w + len(panels) * (panel_w + gap)
    height = top + len(labels) * row_h + 12
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" '
           f'height="{height}" viewBox="0 0 {width:.0f} {height}">',
           f'<title>{_esc(title)}</title>',
           f'<text class="title" x="4" y="16">{_esc(title)}</text>']
    for i, label in enumerate(labels):
        y = top + i * row_h + row_h / 2 + 4
        out.append(f'<text x="{label_w - 8:.1f}" y="{y:.1f}" text-anchor="end">{_esc(label)}</text>')
    for p, (heading, values, vmax, fmt) in enumerate(panels):
        x0 = label_w + p * (panel_w + gap)
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
    return "\n".join(out)


def _grouped_chart(title: str, groups: Sequence[str], series: Sequence[str],
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
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" '
           f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">',
           f'<title>{_esc(title)}</title>',
           f'<text class="title" x="4" y="16">{_esc(title)}</text>']
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
    return "\n".join(out)


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
    return _hbar_chart("Seeds and precision per PSQE stage", labels, panels) + notes


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
    return _grouped_chart("Seeded fraction per degree bucket", [f"deg {lab}" for lab in labels],
                          sides, values, "seeded fraction")


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
    return _grouped_chart("Alignment quality per evaluation variant", [k for k, _ in items],
                          [name for _, name in _METRICS], values, "score")


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
        yield "seeds used / pairs added", (f"{_fmt_int(align.get('seeds_used'))} / "
                                           f"{_fmt_int(align.get('pairs_added'))}")
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
            f"<table>\n{chr(10).join(body)}\n</table>{more}</details>")


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
    return ("<h2>Ray nodes</h2>\n<table>\n" + head + "\n" + "\n".join(rows) + "\n</table>")


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
        f"<table>\n{summary}\n</table>",
        "<h2>Seeds per stage</h2>",
        _stage_section(seeds),
        "<h2>Coverage per degree bucket</h2>",
        _coverage_section(seeds),
        "<h2>Alignment: Hits@k and MRR</h2>",
        _hits_section(report.get("align")),
        _nodes_section(report.get("nodes")),
        _config_section(report.get("config")),
        "</body>",
        "</html>",
        "",
    ])
