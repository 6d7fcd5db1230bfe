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

import json
from collections.abc import Iterator, Mapping
from typing import Any

from psqe_ray.report.svg import (CSS, dig, esc, fmt_frac, fmt_int, fmt_sec, grouped_chart,
                                 note_html, number, table_html)
from psqe_ray.report.seed_sections import (coverage_section, scores_section, stage_section,
                                           uvp_section)

__all__ = ["render_html"]
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
    groups = [("pipeline", report.get("profile")), ("seeds", dig(report, "seeds", "profile")),
              ("aligner", dig(report, "align", "profile"))]
    groups = [(g, [e for e in p if isinstance(e, Mapping)]) for g, p in groups
              if isinstance(p, list)]
    groups = [(g, p) for g, p in groups if p]
    if not groups:
        return ""
    longest = max((number(e.get("seconds")) or 0.0 for _, p in groups for e in p), default=0.0)
    ray = any(dig(report, part, "engine") == "ray" for part in ("seeds", "align"))
    workers = any(number(e.get("worker_peak_rss_bytes")) for _, p in groups for e in p)
    rows = []
    for group, entries in groups:
        rows.append(f'<tr class="group"><th colspan="{4 if workers else 3}">{esc(group)}</th>'
                    "</tr>")
        for e in entries:
            step = str(e.get("step", "?"))
            label = _STEP_LABELS.get(step, step)
            sec = number(e.get("seconds"))
            bar = (f'<span class="meter" style="width:{3 * sec / longest:.2f}em"></span>'
                   if sec is not None and longest > 0 else "")
            peak = _fmt_bytes(e.get("peak_rss_bytes"))
            if e.get("peak_rss_sampled") and peak != "-":
                peak = "≈ " + peak
            notes = " <span class=\"sub\">(resumed: loaded from its commit)</span>" \
                if e.get("resumed") else ""
            secs = "n/a" if sec is None else f"{sec:.2f} s" if sec < 10 else f"{sec:,.1f} s"
            row = (f"<tr><td>{esc(label)}{notes}</td><td class=\"num\">{secs}{bar}</td>"
                   f'<td class="num">{esc(peak)}</td>')
            if workers:
                row += f'<td class="num">{esc(_fmt_bytes(e.get("worker_peak_rss_bytes")))}</td>'
            rows.append(row + "</tr>")
    who = "the driver's" if ray else "this process's"
    head = ('<tr><th>step</th><th class="num">seconds</th><th class="num">peak RSS</th>'
            + ('<th class="num">workers\' peak</th>' if workers else "") + "</tr>")
    note = (f"Peak RSS: {who} resident memory at its highest during the step (≈: sampled "
            "every 20 ms, the step stayed under an earlier peak).")
    if workers:
        note += (" Workers' peak: the largest peak reported by the step's Ray tasks and actors "
                 "(a worker process's peak over its life), where known.")
    return "\n".join(["<h2>Seconds and peak memory per step</h2>", table_html(head, rows),
                      f'<p class="sub">{esc(note)}</p>'])


def _entity(name: Any, ident: Any) -> str:
    ident = fmt_int(ident)
    if name is None or name == "":
        return f'<span class="mono">#{ident}</span>'
    return f'{esc(name)} <span class="sub">#{ident}</span>'


def _samples_section(align: Any) -> str:
    """Sample aligned pairs with names (``align.samples``); "" for a report without them."""
    sm = dig(align, "samples")
    if not isinstance(sm, Mapping):
        return ""
    score_name = str(sm.get("score") or "score")
    thr = number(sm.get("threshold"))
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
        rows.append(f'<tr class="group"><th colspan="4">{esc(title)} '
                    f'<span class="sub">({esc(what)})</span></th></tr>')
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
                v = f'<span class="sub">{esc(verdict)}</span>'
            else:
                v = '<span class="sub">-</span>'
            score = fmt_frac(it.get("score"))
            sim = number(it.get("similarity"))
            if sim is not None:
                score += f'<br><span class="sub">cos {sim:.3f}</span>'
            rows.append(f"<tr><td>{_entity(it.get('left_name'), it.get('left_id'))}</td>"
                        f"<td>{_entity(it.get('right_name'), it.get('right_id'))}</td>"
                        f'<td class="num">{score}</td><td>{v}</td></tr>')
    head = (f'<tr><th>left entity</th><th>right entity</th>'
            f'<th class="num">{esc(score_name)}</th><th>gold says</th></tr>')
    src = str(sm.get("source") or "pairs")
    return "\n".join([
        "<h2>Sample aligned pairs</h2>",
        f'<p class="sub">From the {esc(src)}: {fmt_int(sm.get("pairs"))} pairs; '
        f'{esc(score_name)} of each, and the aligner\'s cosine.</p>',
        table_html(head, rows) if rows else "", *(note_html(n) for n in notes)])

_METRICS = (("hits@1", "Hits@1"), ("hits@10", "Hits@10"), ("mrr", "MRR"))


def _hits_section(align: Any) -> str:
    if not isinstance(align, Mapping):
        return note_html("no alignment result in this report: Hits@k not measured")
    variants = align.get("variants")
    if isinstance(variants, Mapping) and variants:
        items = [(str(k), v) for k, v in variants.items() if isinstance(v, Mapping)]
    elif number(align.get("hits@1")) is not None:
        items = [("headline", align)]
    else:
        items = []
    if not items:
        return note_html("no gold links: Hits@k not measured")
    values = [[number(v.get(key)) for key, _ in _METRICS] for _, v in items]
    return grouped_chart("hits", "Alignment quality per evaluation variant",
                          [k for k, _ in items], [name for _, name in _METRICS], values, "score")


def _summary_rows(report: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    seeds, align = report.get("seeds"), report.get("align")
    yield "dataset", esc(report.get("dataset") or "n/a")
    if report.get("out"):
        yield "output", esc(report["out"])
    yield "recipe", esc(report.get("recipe") or dig(align, "recipe") or "n/a")
    yield "seed method", esc(dig(seeds, "method") or "n/a")
    mods = dig(seeds, "modalities")
    yield "modalities", esc(", ".join(map(str, mods)) if isinstance(mods, list) and mods else "n/a")
    sources = dig(seeds, "feature_sources")
    if isinstance(sources, Mapping) and sources:
        yield "features", "<br>".join(f"{esc(m)}: {esc(src)}" for m, src in sources.items())
    skipped = dig(seeds, "skipped_modalities")
    if isinstance(skipped, Mapping) and skipped:
        yield "modalities left out", "<br>".join(f"{esc(m)}: {esc(why)}"
                                                 for m, why in skipped.items())
    ents = dig(seeds, "entities")
    yield "entities", (f"{fmt_int(dig(ents, 'left'))} left · {fmt_int(dig(ents, 'right'))} right"
                       if isinstance(ents, Mapping) else "n/a")
    gold = dig(seeds, "gold")
    yield "gold links", fmt_int(gold) if number(gold) is not None else "none"
    s = dig(seeds, "seeds")
    if isinstance(s, Mapping):
        prec, rec = number(s.get("precision")), number(s.get("recall"))
        quality = (f"precision {fmt_frac(prec)}, recall {fmt_frac(rec)}"
                   if prec is not None or rec is not None else "precision not measured")
        yield "seeds", f'{fmt_int(s.get("count"))} <span class="sub">({quality})</span>'
    edge = dig(seeds, "coverage", "edge_coverage")
    if isinstance(edge, Mapping):
        yield "edge coverage", " · ".join(f"{k} {fmt_frac(edge.get(k))}"
                                          for k in ("left", "right", "mean"))
    if isinstance(align, Mapping):
        if number(align.get("hits@1")) is None:
            yield "alignment", "Hits@k not measured (no gold links)"
        else:
            head = align.get("headline")
            ranking = (f' <span class="sub">(ranking: {esc(head)})</span>'
                       if isinstance(head, str) else "")
            yield "alignment", " · ".join(f"{name} <b>{fmt_frac(align.get(key))}</b>"
                                          for key, name in _METRICS) + ranking
        match = align.get("matching")
        if isinstance(match, Mapping):
            head = f"{fmt_int(match.get('matches'))} pairs ({esc(match.get('method'))})"
            if number(match.get("f1")) is not None:
                head += " · " + " · ".join(f"{k} <b>{fmt_frac(match.get(k))}</b>"
                                           for k in ("precision", "recall", "f1"))
            else:
                head += ' <span class="sub">(not scored: no gold links)</span>'
            yield "one-to-one matches", head
            rank = match.get("ranking")
            if isinstance(rank, Mapping):
                yield "balanced ranking", " · ".join(
                    f"{name} <b>{fmt_frac(rank.get(key))}</b>" for key, name in _METRICS)
        added = align.get("pairs_added")
        if isinstance(added, list):  # one count per self-training round
            rounds = [number(x) or 0.0 for x in added]
            added_text = (f"{fmt_int(sum(rounds))} <span class=\"sub\">(per round: "
                          f"{' + '.join(fmt_int(x) for x in rounds)})</span>")
        else:
            added_text = fmt_int(added)
        yield "seeds used / pairs added", f"{fmt_int(align.get('seeds_used'))} / {added_text}"
        matched = align.get("match_round_pairs")
        if isinstance(matched, list) and matched:  # the training pairs, replaced
            yield "match rounds", (" · ".join(fmt_int(number(x)) for x in matched)
                                   + ' <span class="sub">one-to-one matches became the training '
                                   'pairs</span>')
    secs = report.get("seconds")
    if isinstance(secs, Mapping) and secs:
        yield "seconds", " · ".join(f"{esc(k)} {fmt_sec(v)}" for k, v in secs.items())


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _config_section(config: Any, limit: int = 400) -> str:
    if not isinstance(config, Mapping) or not config:
        return "<h2>Configuration</h2>" + note_html("no configuration recorded in this report")
    rows = list(_flatten(config))
    body = []
    for key, value in rows[:limit]:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        # A giant list (say, an id map) would swamp the page; the key is what a reader needs.
        text = text if len(text) <= 300 else text[:300] + " …"
        body.append(f'<tr><th class="mono">{esc(key)}</th><td class="mono">{esc(text)}</td></tr>')
    more = f'<p class="sub">… {len(rows) - limit} more values not shown</p>' if len(rows) > limit else ""
    return (f"<h2>Configuration</h2>\n<details><summary>{len(rows)} values</summary>\n"
            f'<div class="scroll"><table>\n{chr(10).join(body)}\n</table></div>{more}</details>')


def _fmt_bytes(x: Any) -> str:
    n = number(x)
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
        return ", ".join(f"{esc(k)} {fmt_int(v)}" for k, v in sorted(d.items())) \
            if isinstance(d, Mapping) and d else "-"

    rows = []
    for node, rec in sorted(nodes.items()):
        rec = rec if isinstance(rec, Mapping) else {}
        driver = rec.get("driver_bytes_read")
        rows.append(
            f'<tr><th class="mono">{esc(str(node)[:12])}</th>'
            f"<td>{esc(rec.get('address') or '')}</td><td>{counts(rec.get('tasks'))}</td>"
            f"<td>{counts(rec.get('actors'))}</td><td>{_fmt_bytes(rec.get('bytes_read'))}</td>"
            f"<td>{_fmt_bytes(driver) if driver is not None else '-'}</td></tr>")
    head = ("<tr><th>node</th><th>address</th><th>tasks</th><th>actors</th>"
            "<th>bytes read</th><th>driver read</th></tr>")
    return "<h2>Ray nodes</h2>\n" + table_html(head, rows)


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
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style></head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(report.get("dataset") or "")}</p>',
        "<h2>Summary</h2>",
        f'<table class="summary">\n{summary}\n</table>',
        "<h2>Seeds per stage</h2>",
        stage_section(seeds),
        scores_section(seeds),
        uvp_section(seeds),
        "<h2>Coverage per degree bucket</h2>",
        coverage_section(seeds),
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
