"""render_html: a well-formed, self-contained, escaped page whose plots scale with the report."""

from __future__ import annotations

import copy
from html.parser import HTMLParser

import pytest

from psqe_ray.report.html import render_html

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class PageParser(HTMLParser):
    """Records every element and checks that each non-void tag is closed, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> PageParser:
    p = PageParser()
    p.feed(page)
    p.close()
    assert p.errors == []
    assert p.stack == [], f"unclosed tags: {p.stack}"
    return p


def rects(p: PageParser, **match: str) -> list[dict[str, str | None]]:
    return [a for t, a in p.elements
            if t == "rect" and all(a.get(k) == v for k, v in match.items())]


def stage(name: str, count: int, precision: float | None, added: int = 0) -> dict:
    return {"name": name, "added": added, "removed": 0, "count": count, "seconds": 1.5,
            "precision": precision}


def bucket(degrees: str, frac: float | None) -> dict:
    return {"degrees": degrees, "entities": 100, "entity_share": 0.1, "seeds": 10,
            "seed_share": 0.05, "seeded_fraction": frac}


def metrics(h1: float, h10: float, mrr: float) -> dict:
    return {"hits@1": h1, "hits@10": h10, "mrr": mrr, "pairs": 15000}


FULL = {
    "pipeline": "psqe-ray run",
    "dataset": "s3://bucket/DBP15K/zh_en", "out": "/tmp/out", "recipe": "meaformer",
    "seconds": {"encode": 0.0, "seeds": 104.6, "align": 80.2, "total": 190.1},
    "seeds": {
        "method": "psqe", "modalities": ["name", "image"],
        "entities": {"left": 19661, "right": 19993}, "gold": 15000,
        "seeds": {"count": 5340, "precision": 0.854, "recall": 0.304},
        "stages": [stage("features", 0, None), stage("stage1-cluster", 1000, 0.8, 1000),
                   stage("stage2-global", 2000, 0.4, 1000), stage("stage2-mic", 3000, None, 1000),
                   stage("stage3-expansion", 5340, 0.85, 2340)],
        "coverage": {"edge_coverage": {"left": 0.58, "right": 0.60, "mean": 0.59},
                     "degree_buckets": {
                         "left": [bucket("1-1", 0.2), bucket("2-3", 0.4), bucket("4-7", None)],
                         "right": [bucket("1-1", 0.1), bucket("2-3", 0.3), bucket("4-7", 0.6),
                                   bucket("8-15", 0.7)]}},
    },
    "align": {"recipe": "meaformer", "hits@1": 0.81, "hits@10": 0.93, "mrr": 0.86, "headline": "l2r/csls/all",
              "seconds_total": 80.2, "seeds_used": 5340, "pairs_added": 1200,
              "match_round_pairs": [17926],
              "variants": {"l2r/plain/all": metrics(0.8, 0.9, 0.85),
                           "l2r/csls/test": metrics(0.4, 0.6, 0.5),
                           "r2l/plain/all": metrics(0.7, 0.88, 0.8)}},
    "config": {"seeds": {"k": 10, "stages": ["a", "b"]}, "align": {"epochs": 50}},
}


def no_gold_report() -> dict:
    r = copy.deepcopy(FULL)
    r["seeds"]["gold"] = None
    r["seeds"]["seeds"].update(precision=None, recall=None)
    for s in r["seeds"]["stages"]:
        s["precision"] = None
    r["align"] = None
    return r


def test_full_report_is_well_formed_with_four_plots() -> None:
    page = render_html(FULL)
    p = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    # stage counts and stage precision (one plot each), coverage, Hits@k
    assert page.count("<svg") == 4
    assert [t for t, _ in p.elements].count("svg") == 4
    # self-contained: nothing fetched, nothing scripted
    low = page.lower()
    for banned in ("<script", "<link", "http://cdn", "https://", "@import", "url("):
        assert banned not in low
    assert "<details>" in page


def test_headline_numbers_are_formatted() -> None:
    text = "".join(parse(render_html(FULL)).text)
    for expected in ("Hits@1 0.810", "Hits@10 0.930", "MRR 0.860", "5,340", "precision 0.854",
                     "recall 0.304", "19,661 left", "19,993 right", "15,000", "seeds 104.6 s",
                     "total 190.1 s", "meaformer", "name, image", "mean 0.590", "MRR 0.860 (ranking: l2r/csls/all)",
                     "s3://bucket/DBP15K/zh_en", "match rounds17,926"):
        assert expected in text, expected


def test_no_gold_and_no_align_renders_notes_instead_of_plots() -> None:
    page = render_html(no_gold_report())
    p = parse(page)
    assert "no gold links: precision not measured" in page
    assert "Hits@k not measured" in page
    # stage counts and coverage still drawn; the Hits@k plot is not
    assert page.count("<svg") == 2
    assert rects(p, **{"data-panel": "precision"}) == []
    assert len(rects(p, **{"data-panel": "seeds (cumulative)"})) == 4


def test_align_without_variants_or_hits_says_no_gold() -> None:
    r = copy.deepcopy(FULL)
    r["align"] = {"recipe": "meaformer", "hits@1": None, "hits@10": None, "mrr": None}
    page = render_html(r)
    parse(page)
    assert "no gold links: Hits@k not measured" in page
    assert page.count("<svg") == 3


@pytest.mark.parametrize("report", [{}, {"seeds": None, "align": None, "config": None},
                                    {"seeds": {"stages": None, "coverage": None}},
                                    {"seeds": {"stages": [stage("features", 0, None)]}}])
def test_sparse_reports_render(report: dict) -> None:
    page = render_html(report)
    parse(page)
    assert page.count("<svg") == 0
    assert 'class="note"' in page


def test_report_text_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    r = copy.deepcopy(FULL)
    r["dataset"] = evil
    r["pipeline"] = evil
    r["seeds"]["method"] = evil
    r["seeds"]["modalities"] = [evil]
    r["seeds"]["stages"][1]["name"] = evil
    r["seeds"]["coverage"]["degree_buckets"]["left"][0]["degrees"] = evil
    r["align"]["variants"][evil] = metrics(0.1, 0.2, 0.3)
    r["config"][evil] = evil
    r["seconds"][evil] = 1.0
    page = render_html(r)
    parse(page)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_count_and_precision_bars_scale_with_values() -> None:
    p = parse(render_html(FULL))
    count = {a["data-label"]: float(a["width"])
             for a in rects(p, **{"data-panel": "seeds (cumulative)"})}
    # the features stage has produced nothing and is left out
    assert list(count) == ["stage1-cluster", "stage2-global", "stage2-mic", "stage3-expansion"]
    assert count["stage2-global"] == pytest.approx(2 * count["stage1-cluster"], rel=1e-3)
    assert count["stage2-mic"] == pytest.approx(3 * count["stage1-cluster"], rel=1e-3)
    assert count["stage3-expansion"] > count["stage2-mic"]
    prec = {a["data-label"]: float(a["width"]) for a in rects(p, **{"data-panel": "precision"})}
    assert set(prec) == {"stage1-cluster", "stage2-global", "stage3-expansion"}
    assert prec["stage1-cluster"] == pytest.approx(2 * prec["stage2-global"], rel=1e-3)
    assert "n/a" in p.text


def test_grouped_bars_scale_and_cover_every_variant() -> None:
    p = parse(render_html(FULL))
    h1 = {a["data-group"]: float(a["height"]) for a in rects(p, **{"data-series": "Hits@1"})}
    assert set(h1) == set(FULL["align"]["variants"])
    assert h1["l2r/plain/all"] == pytest.approx(2 * h1["l2r/csls/test"], rel=1e-3)
    mrr = {a["data-group"]: float(a["height"]) for a in rects(p, **{"data-series": "MRR"})}
    assert mrr["l2r/plain/all"] == pytest.approx(0.85 / 0.5 * mrr["l2r/csls/test"], rel=1e-3)
    # bars stand on a common baseline: y + height is the same for all
    bottoms = {round(float(a["y"]) + float(a["height"]), 2)
               for a in rects(p, **{"data-series": "Hits@10"})}
    assert len(bottoms) == 1


def test_coverage_groups_left_and_right_per_bucket() -> None:
    p = parse(render_html(FULL))
    left = {a["data-group"]: float(a["height"]) for a in rects(p, **{"data-series": "left"})}
    right = {a["data-group"]: float(a["height"]) for a in rects(p, **{"data-series": "right"})}
    assert set(right) == {"deg 1-1", "deg 2-3", "deg 4-7", "deg 8-15"}
    # None on the left for 4-7 and a bucket missing on the left: no bar, an n/a label instead
    assert set(left) == {"deg 1-1", "deg 2-3"}
    assert left["deg 2-3"] == pytest.approx(2 * left["deg 1-1"], rel=1e-3)
    assert right["deg 8-15"] == pytest.approx(7 * right["deg 1-1"], rel=1e-3)
    assert [t.strip() for t in p.text].count("n/a") >= 3
    # bucket labels read in degree order, 8-15 after 4-7 despite string order
    labels = [t for t in p.text if t.startswith("deg ")]
    assert labels == ["deg 1-1", "deg 2-3", "deg 4-7", "deg 8-15"]


def test_ray_nodes_table_lists_every_node_and_only_for_jobs() -> None:
    r = copy.deepcopy(FULL)
    assert "Ray nodes" not in render_html(r)  # an in-process run has no ``nodes``
    r["nodes"] = {
        "aaaa1111bbbb2222": {"address": "10.0.0.1", "tasks": {"mic-map": 4, "cluster-sample": 3},
                             "actors": {"topk-shard": 2}, "bytes_read": 3 * 2 ** 20,
                             "driver_bytes_read": 512},
        "cccc3333dddd4444": {"address": "10.0.0.2", "tasks": {}, "actors": {"align-train": 1},
                             "bytes_read": 2048},
    }
    page = render_html(r)
    section = page[page.index("<h2>Ray nodes</h2>"):page.index("<h2>Configuration</h2>")]
    assert section.count("<tr>") == 3  # header + one row per node
    assert "aaaa1111bbbb" in section and "10.0.0.2" in section
    assert "cluster-sample 3, mic-map 4" in section and "align-train 1" in section
    assert "3.0 MiB" in section and "2.0 KiB" in section and "512 B" in section


def test_matching_and_left_out_modalities_are_shown() -> None:
    report = copy.deepcopy(FULL)
    report["align"]["matching"] = {
        "method": "sinkhorn", "matches": 14210, "precision": 0.9712, "recall": 0.9177,
        "f1": 0.9437, "ranking": {"hits@1": 0.9403, "hits@10": 0.99, "mrr": 0.96}}
    report["seeds"]["skipped_modalities"] = {
        "name": "no shared signal (AUC 0.480 against a shuffled baseline, z -2.2)"}
    report["seeds"]["feature_sources"] = {"attribute": "features/attribute, centred per graph",
                                          "relation": "relation bag"}
    text = "".join(parse(render_html(report)).text)
    for expected in ("14,210 pairs (sinkhorn)", "precision 0.971", "recall 0.918", "f1 0.944",
                     "Hits@1 0.940", "name: no shared signal (AUC 0.480",
                     "attribute: features/attribute, centred per graph", "relation: relation bag"):
        assert expected in text, expected
    report["align"]["matching"] = {"method": "greedy", "matches": 12, "precision": None}
    assert "not scored: no gold links" in "".join(parse(render_html(report)).text)


# ---- the sections of issue 15: score histograms, PSQE vs UVP, samples, seconds and memory ----
def scores(start: float, accepted: list[int], rejected: list[int] | None) -> dict:
    return {"start": start, "width": 0.02, "accepted": accepted, "rejected": rejected}


def sample(left: int, right: int, score: float, verdict: str | None, **extra) -> dict:
    return {"left_id": left, "right_id": right, "left_name": f"L{left}",
            "right_name": f"R{right}", "score": score, "similarity": 0.5, "verdict": verdict,
            **extra}


def rich_report() -> dict:
    """FULL with every field of the newer reports."""
    r = copy.deepcopy(FULL)
    st = {s["name"]: s for s in r["seeds"]["stages"]}
    st["stage1-cluster"]["scores"] = scores(0.5, [0, 2, 4], [30, 10, 0])
    st["stage2-global"]["scores"] = scores(0.2, [1, 0, 0, 3], [5, 20, 10, 0])
    st["stage2-mic"]["scores"] = scores(0.6, [4, 8], [2, 0])
    st["stage3-expansion"]["scores"] = scores(-1.0, [], [])  # nothing scored
    r["seeds"]["uvp_comparison"] = {
        "count": 5340, "pivot": "name",
        "psqe": {"count": 5340, "precision": 0.854, "recall": 0.304, "judged_precision": 0.995,
                 "edge_coverage": 0.589, "entity_coverage": 0.27, "degree_gap": 0.171},
        "uvp": {"count": 5340, "precision": 0.796, "recall": 0.283, "judged_precision": 0.999,
                "edge_coverage": 0.465, "entity_coverage": 0.27, "degree_gap": 0.037}}
    r["profile"] = [{"step": "encode", "seconds": 12.5, "peak_rss_bytes": 2 ** 30,
                     "peak_rss_sampled": False}]
    r["seeds"]["profile"] = [
        {"step": "load", "seconds": 0.4, "peak_rss_bytes": 300 * 2 ** 20,
         "peak_rss_sampled": False},
        {"step": "stage1-cluster", "seconds": 20.0, "peak_rss_bytes": 900 * 2 ** 20,
         "peak_rss_sampled": True, "worker_peak_rss_bytes": 3 * 2 ** 30},
        {"step": "stage2-train", "seconds": 60.0, "peak_rss_bytes": None, "resumed": True}]
    r["align"]["profile"] = [{"step": "train", "seconds": 70.0,
                              "peak_rss_bytes": 1500 * 2 ** 20, "peak_rss_sampled": False}]
    r["align"]["samples"] = {
        "source": "matches (sinkhorn)", "score": "balanced mass", "threshold": 0.5,
        "pairs": 14210,
        "best": [sample(1, 2, 0.99, "correct"), sample(3, 4, 0.98, "unjudged")],
        "borderline": [sample(5, 6, 0.51, "wrong", gold_right_id=7, gold_right_name="R7")],
        "wrong": [sample(8, 9, 0.9, "wrong", gold_right_id=None, gold_right_name=None)]}
    return r


def section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}</h2>")
    nxt = page.find("<h2>", start + 4)
    return page[start:nxt if nxt >= 0 else len(page)]


NEW_SECTIONS = ("Seed scores per stage: accepted and rejected", "PSQE vs UVP at equal size",
                "Sample aligned pairs", "Seconds and peak memory per step")


def test_an_older_report_renders_without_the_new_sections() -> None:
    page = render_html(FULL)  # no scores, uvp_comparison, samples or profile
    parse(page)
    for heading in NEW_SECTIONS:
        assert heading not in page, heading


def test_every_plot_is_named_once() -> None:
    p = parse(render_html(rich_report()))
    names = [a.get("data-figure") for t, a in p.elements if t == "svg"]
    assert None not in names and len(names) == len(set(names))
    assert {"scores-stage1-cluster", "scores-stage2-global", "scores-stage2-mic", "uvp",
            "coverage", "hits", "stages: seeds (cumulative)", "stages: precision"} == set(names)
    for heading in NEW_SECTIONS:
        assert f"<h2>{heading}</h2>" in render_html(rich_report())


def test_score_histograms_draw_accepted_up_and_rejected_down() -> None:
    page = render_html(rich_report())
    p = parse(page)
    acc = rects(p, **{"data-stage": "stage1-cluster", "data-kind": "accepted"})
    rej = rects(p, **{"data-stage": "stage1-cluster", "data-kind": "rejected"})
    # empty bins draw nothing; each half is scaled to its own largest bin
    assert [a["data-bin"] for a in acc] == ["0.52", "0.54"]
    assert [a["data-bin"] for a in rej] == ["0.50", "0.52"]
    assert float(acc[1]["height"]) == pytest.approx(2 * float(acc[0]["height"]), rel=1e-3)
    assert float(rej[0]["height"]) == pytest.approx(3 * float(rej[1]["height"]), rel=1e-3)
    assert float(acc[1]["height"]) == pytest.approx(float(rej[0]["height"]), rel=1e-3)
    # accepted bars end on the axis from above, rejected ones start on it
    axis = {round(float(a["y"]) + float(a["height"]), 2) for a in acc}
    assert axis == {round(float(a["y"]), 2) for a in rej} and len(axis) == 1
    text = "".join(p.text)
    assert "accepted 6" in text and "rejected 40" in text
    assert "no candidate scored in stage3-expansion" in page


def test_a_stage_without_recorded_rejections_says_so() -> None:
    r = rich_report()
    r["seeds"]["stages"][1]["scores"]["rejected"] = None
    p = parse(render_html(r))
    assert rects(p, **{"data-stage": "stage1-cluster", "data-kind": "rejected"}) == []
    assert len(rects(p, **{"data-stage": "stage1-cluster", "data-kind": "accepted"})) == 2
    assert "rejected: not recorded" in "".join(p.text)


def test_psqe_vs_uvp_table_and_bars() -> None:
    page = render_html(rich_report())
    p = parse(page)
    sec = section(page, "PSQE vs UVP at equal size")
    for expected in ("UVP (name)", "0.854", "0.796", "0.589", "0.465", "5,340", "0.037"):
        assert expected in sec, expected
    psqe = {a["data-group"]: float(a["height"]) for a in rects(p, **{"data-series": "PSQE"})}
    uvp = {a["data-group"]: float(a["height"])
           for a in rects(p, **{"data-series": "UVP (name)"})}
    assert set(psqe) == set(uvp) == {"precision", "judged precision", "recall",
                                     "edge coverage", "entity coverage"}
    assert psqe["edge coverage"] / uvp["edge coverage"] == pytest.approx(0.589 / 0.465, rel=1e-3)
    r = rich_report()
    r["seeds"]["uvp_comparison"] = {"skipped": "more than 100,000 entities on a side"}
    page = render_html(r)
    assert "UVP baseline not computed: more than 100,000 entities" in page
    assert 'data-figure="uvp"' not in page


def test_sample_pairs_table_lists_best_borderline_and_wrong() -> None:
    page = render_html(rich_report())
    parse(page)
    sec = section(page, "Sample aligned pairs")
    assert sec.index("best") < sec.index("L1") < sec.index("borderline") < sec.index("L5") \
        < sec.index("wrong <span") < sec.index("L8")
    assert "nearest the acceptance threshold 0.5" in sec and "14,210 pairs" in sec
    assert "R7 <span class=\"sub\">#7</span>" in sec  # the gold partner of a wrong pair
    assert sec.count('class="bad">wrong') == 2 and sec.count('class="ok">correct') == 1
    r = rich_report()
    r["align"]["samples"].update(wrong=None, threshold=None)
    for row in r["align"]["samples"]["best"]:
        row.update(verdict=None, left_name=None)
    sec = section(render_html(r), "Sample aligned pairs")
    assert "no gold links: wrong pairs are not known" in sec and "the lowest scores" in sec
    assert '<span class="mono">#1</span>' in sec  # no name: the id


def test_profile_table_lists_every_step_with_its_memory() -> None:
    page = render_html(rich_report())
    parse(page)
    sec = section(page, "Seconds and peak memory per step")
    assert sec.count('<tr class="group">') == 3  # pipeline, seeds, aligner
    for expected in ("encode (models)", "Stage I: clusters, greedy", "Stage II: training",
                     "12.5 s", "0.40 s", "1.0 GiB", "≈ 900.0 MiB", "3.0 GiB", "1.5 GiB",
                     "resumed: loaded from its commit", "workers' peak"):
        assert expected in sec, expected
    r = rich_report()
    del r["seeds"]["profile"][1]["worker_peak_rss_bytes"]
    text = "".join(parse(section(render_html(r), "Seconds and peak memory per step")).text)
    assert "workers' peak" not in text and "this process's resident memory" in text


def test_new_sections_escape_report_text() -> None:
    evil = "<script>alert(1)</script>"
    r = rich_report()
    r["seeds"]["stages"][1]["name"] = evil
    r["seeds"]["uvp_comparison"]["pivot"] = evil
    r["align"]["samples"]["best"][0]["left_name"] = evil
    r["align"]["samples"]["score"] = evil
    r["seeds"]["profile"][0]["step"] = evil
    page = render_html(r)
    parse(page)
    assert "<script" not in page.lower()
