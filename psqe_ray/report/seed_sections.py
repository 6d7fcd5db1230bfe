"""report.html's sections about the seeds: seeds and precision per stage, the score histograms
of each stage's accepted and rejected pairs, PSQE vs UVP at equal size, coverage per degree
bucket.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from psqe_ray.report.svg import (COLORS, dig, esc, fmt_frac, fmt_int, grouped_chart, hbar_chart,
                                 note_html, Number, number, Panel, svg_open, table_html)

def stage_section(seeds: Any) -> str:
    stages = dig(seeds, "stages")
    if not isinstance(stages, list) or not stages:
        return note_html("no per-stage seed records in this report: stage plot not available")
    # The feature step runs before any seed exists; a row of zeros would only add noise.
    rows = [s for s in stages if isinstance(s, Mapping)
            and (number(s.get("count")) or number(s.get("added")) or number(s.get("precision")))]
    if not rows:
        return note_html("no PSQE stage produced seeds: stage plot not available")
    labels = [str(s.get("name", f"stage {i + 1}")) for i, s in enumerate(rows)]
    counts = [number(s.get("count")) for s in rows]
    precs = [number(s.get("precision")) for s in rows]
    panels: list[Panel] = [("seeds (cumulative)", counts,
                            max((c for c in counts if c is not None), default=0.0),
                            lambda v: f"{round(v):,}")]
    notes = ""
    if any(p is not None for p in precs):
        panels.append(("precision", precs, 1.0, lambda v: f"{v:.3f}"))
    else:
        notes = note_html("no gold links: precision not measured")
    return hbar_chart("stages", "Seeds and precision per PSQE stage", labels, panels) + notes


def _counts(x: Any) -> list[float] | None:
    if not isinstance(x, list):
        return None
    vals = [number(v) for v in x]
    return [max(0.0, v) if v is not None else 0.0 for v in vals]


def _histogram_svg(name: str, rec: Mapping[str, Any]) -> str | None:
    """One stage's score histogram: accepted counts up, rejected counts down, each half scaled
    to its own largest bin (both maxima written on the axis); None when nothing was scored."""
    acc, rej = _counts(rec.get("accepted")), _counts(rec.get("rejected"))
    start, width = number(rec.get("start")), number(rec.get("width"))
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
    out = svg_open(f"scores-{name}", name, w, height, min_scale=None)
    n_acc, n_rej = sum(acc), (sum(rej) if rej is not None else None)
    out.append(f'<rect x="{left}" y="24" width="10" height="10" fill="{COLORS[0]}"/>')
    out.append(f'<text x="{left + 14}" y="33">accepted {round(n_acc):,}</text>')
    rej_text = f"rejected {round(n_rej):,}" if n_rej is not None else "rejected: not recorded"
    out.append(f'<rect x="{left + 130}" y="24" width="10" height="10" fill="{COLORS[1]}"/>')
    out.append(f'<text x="{left + 144}" y="33">{esc(rej_text)}</text>')
    bw = plot_w / n
    pad = min(0.5, bw * 0.15)
    for kind, counts, sign, color in (("accepted", acc, -1, COLORS[0]),
                                      ("rejected", rej, 1, COLORS[1])):
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
            out.append(f'<rect class="bar" data-stage="{esc(name)}" data-kind="{kind}" '
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


def scores_section(seeds: Any) -> str:
    """Score histograms per stage (``seeds.stages[].scores``); "" for a report without them."""
    stages = dig(seeds, "stages")
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
        out.append(note_html("no candidate scored in " + ", ".join(empty)))
    return "\n".join(out)


_UVP_ROWS = (("count", "seeds", fmt_int), ("precision", "precision", fmt_frac),
             ("judged_precision", "judged precision", fmt_frac),
             ("recall", "recall", fmt_frac), ("edge_coverage", "edge coverage", fmt_frac),
             ("entity_coverage", "entity coverage", fmt_frac),
             ("degree_gap", "degree gap (lower: better spread)", fmt_frac))


def uvp_section(seeds: Any) -> str:
    """PSQE vs UVP at equal size (``seeds.uvp_comparison``); "" for a report without it."""
    comp = dig(seeds, "uvp_comparison")
    if not isinstance(comp, Mapping):
        return ""
    head = "<h2>PSQE vs UVP at equal size</h2>"
    if comp.get("skipped"):
        return head + note_html(f"UVP baseline not computed: {comp['skipped']}")
    psqe, uvp = comp.get("psqe"), comp.get("uvp")
    if not isinstance(psqe, Mapping) or not isinstance(uvp, Mapping):
        return head + note_html("the comparison holds no figures")
    pivot = str(comp.get("pivot") or "?")
    uvp_name = f"UVP ({pivot})"
    rows = []
    for key, label, fmt in _UVP_ROWS:
        a, b = psqe.get(key), uvp.get(key)
        rows.append(f"<tr><th>{esc(label)}</th><td class=\"num\">{fmt(a)}</td>"
                    f"<td class=\"num\">{fmt(b)}</td></tr>")
    table = table_html(f'<tr><th></th><th class="num">PSQE</th><th class="num">'
                   f'{esc(uvp_name)}</th></tr>', rows)
    metrics = [(k, label) for k, label, _ in _UVP_ROWS[1:6]]
    values = [[number(psqe.get(k)), number(uvp.get(k))] for k, _ in metrics]
    chart = grouped_chart("uvp", f"PSQE vs UVP at {fmt_int(comp.get('count'))} seeds",
                           [label for _, label in metrics], ["PSQE", uvp_name], values, "value")
    return "\n".join([
        head,
        f'<p class="sub">UVP\'s seeds (greedy one-to-one on the {esc(pivot)} features, the '
        f'<span class="mono">method=uvp</span> baseline) at PSQE\'s seed count, judged against '
        'the gold links after the run: evaluation only, the seeds used are PSQE\'s.</p>',
        table, chart])


def _bucket_key(label: str) -> tuple[int, float]:
    # Buckets are written "lo-hi"; order by lo so that left and right interleave correctly.
    m = re.match(r"\s*(\d+)", label)
    return (0, float(m.group(1))) if m else (1, 0.0)


def coverage_section(seeds: Any) -> str:
    buckets = dig(seeds, "coverage", "degree_buckets")
    sides = [side for side in ("left", "right") if isinstance(dig(buckets, side), list)]
    if not sides:
        return note_html("no degree-bucket coverage in this report: coverage plot not available")
    by_side: dict[str, dict[str, Number]] = {}
    for side in sides:
        by_side[side] = {str(b.get("degrees")): number(b.get("seeded_fraction"))
                         for b in buckets[side] if isinstance(b, Mapping)}
    labels = sorted({lab for d in by_side.values() for lab in d}, key=_bucket_key)
    if not labels:
        return note_html("degree buckets are empty: coverage plot not available")
    values = [[by_side[side].get(lab) for side in sides] for lab in labels]
    return grouped_chart("coverage", "Seeded fraction per degree bucket",
                          [f"deg {lab}" for lab in labels], sides, values, "seeded fraction")
