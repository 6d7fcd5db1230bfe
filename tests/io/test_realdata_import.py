"""Imports of the real benchmark pairs in ``../shared/data`` (skipped when absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from psqe_ray.cli import main
from psqe_ray.io.dataset import Dataset

pytestmark = pytest.mark.realdata

# The documented sizes (../shared/data/README.md).
SIZES = {
    "DBP15K/fr_en": {"entities": (19_661, 19_993), "triples": (105_998, 115_722), "gold": 15_000},
    "DBP15K/zh_en": {"entities": (19_388, 19_572), "triples": (70_414, 95_142), "gold": 15_000},
    "OpenEA15K/OEA_EN_FR_15K_V1": {"entities": (15_000, 15_000), "triples": (47_334, 40_864),
                                   "gold": 15_000},
}
SIDES = ("left", "right")


def _nonblank_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _import(tmp_path_factory, shared_data, pair: str, fmt: str, seed: int = 0) -> Dataset:
    dst = tmp_path_factory.mktemp(pair.replace("/", "_")) / "ds"
    rc = main(["-q", "import", "--format", fmt, str(shared_data / pair), str(dst),
               "--seed", str(seed)])
    assert rc == 0
    return Dataset(str(dst))


@pytest.fixture(scope="module")
def fr_en(tmp_path_factory, shared_data):
    return _import(tmp_path_factory, shared_data, "DBP15K/fr_en", "dbp15k")


@pytest.fixture(scope="module")
def zh_en(tmp_path_factory, shared_data):
    return _import(tmp_path_factory, shared_data, "DBP15K/zh_en", "dbp15k")


@pytest.fixture(scope="module")
def openea(tmp_path_factory, shared_data):
    return _import(tmp_path_factory, shared_data, "OpenEA15K/OEA_EN_FR_15K_V1", "openea")


def _check_sizes(ds: Dataset, shared_data: Path, pair: str, gold_file: str) -> None:
    want = SIZES[pair]
    src = shared_data / pair
    for k, side in enumerate(SIDES, 1):
        # the documented sizes, and the same numbers counted from the raw files
        assert ds.entity_counts()[side] == want["entities"][k - 1] \
            == len(_nonblank_lines(src / f"ent_ids_{k}"))
        assert ds.counts("triples")[side] == want["triples"][k - 1] \
            == len(_nonblank_lines(src / f"triples_{k}"))
        assert ds.table("entities", side=side).num_rows == want["entities"][k - 1]
        assert ds.table("triples", side=side).num_rows == want["triples"][k - 1]
    assert ds.counts("gold") == {"all": want["gold"]}
    assert ds.table("gold").num_rows == want["gold"] == len(_nonblank_lines(src / gold_file))


def test_fr_en_sizes(fr_en, shared_data):
    _check_sizes(fr_en, shared_data, "DBP15K/fr_en", "ill_ent_ids")


def test_zh_en_sizes(zh_en, shared_data):
    _check_sizes(zh_en, shared_data, "DBP15K/zh_en", "ill_ent_ids")


def test_openea_sizes_relation_names_and_attributes(openea, shared_data):
    pair = "OpenEA15K/OEA_EN_FR_15K_V1"
    _check_sizes(openea, shared_data, pair, "ref_ent_ids")
    assert openea.manifest["meta"]["gold_file"] == "ref_ent_ids"
    src = shared_data / pair
    rel_uri = dict(line.split("\t", 1) for line in _nonblank_lines(src / "rel_ids"))
    for k, side in enumerate(SIDES, 1):
        rels = openea.table("relations", side=side)
        assert rels.num_rows > 0
        assert rels.column("name").null_count == 0
        assert rels.column("uri").null_count == 0
        used = {line.split("\t")[1] for line in _nonblank_lines(src / f"triples_{k}")}
        assert sorted(rels.column("uri").to_pylist()) == sorted(rel_uri[r].strip() for r in used)
        attrs = openea.table("attributes", side=side)
        n_attrs = sum(len([a for a in line.rstrip("\r").split("\t")[1:] if a.strip()])
                      for line in _nonblank_lines(src / f"training_attrs_{k}"))
        assert attrs.num_rows == n_attrs > 0
    openea.validate()


def test_fr_en_gold_links_keep_their_uris(fr_en, shared_data):
    src = shared_data / "DBP15K" / "fr_en"
    raw_uri = {}
    for k in (1, 2):
        for line in _nonblank_lines(src / f"ent_ids_{k}"):
            i, u = line.split("\t")
            raw_uri[int(i)] = u.strip()
    want = Counter((raw_uri[int(a)], raw_uri[int(b)])
                   for a, b in (line.split("\t") for line in _nonblank_lines(src / "ill_ent_ids")))
    uri = {s: fr_en.table("entities", side=s).sort_by("entity_id").column("uri").to_pylist()
           for s in SIDES}
    gold = fr_en.table("gold")
    got = Counter(zip((uri["left"][i] for i in gold.column("left_id").to_pylist()),
                      (uri["right"][i] for i in gold.column("right_id").to_pylist())))
    assert got == want


def test_raw_ids_leak_the_alignment_but_imported_ids_do_not(fr_en, shared_data):
    src = shared_data / "DBP15K" / "fr_en"
    raw = np.array([[int(x) for x in line.split("\t")]
                    for line in _nonblank_lines(src / "ill_ent_ids")])
    # In the raw files the rule "right = left + 10500" is a perfect matcher for every gold link
    # whose left id is below 10500 (10,500 of the 15,000 links, i.e. 70 %): a strong id leak.
    first = raw[:, 0] < 10500
    assert first.sum() >= 10_000
    assert np.mean(raw[first, 1] == raw[first, 0] + 10500) == 1.0
    assert np.mean(raw[:, 1] == raw[:, 0] + 10500) > 0.69

    # After import, the same links (found by URI) and all links carry no such signal.
    raw_uri = {}
    for k in (1, 2):
        for line in _nonblank_lines(src / f"ent_ids_{k}"):
            i, u = line.split("\t")
            raw_uri[int(i)] = u.strip()
    new_id = {s: {u: i for i, u in zip(*fr_en.table("entities", side=s)
                                         .select(["entity_id", "uri"]).to_pydict().values())}
              for s in SIDES}
    leaked = np.array([[new_id["left"][raw_uri[a]], new_id["right"][raw_uri[b]]]
                       for a, b in raw[first]])
    gold = fr_en.table("gold")
    left = gold.column("left_id").to_numpy()
    right = gold.column("right_id").to_numpy()
    assert len(left) == len(raw)
    for lft, rgt in ((left, right), (leaked[:, 0], leaked[:, 1])):
        for offset in (0, 1, 10500, -10500):
            assert np.mean(rgt == lft + offset) < 0.01, offset
        # no fixed offset at all does better: the most frequent difference is rare
        best = Counter((rgt - lft).tolist()).most_common(1)[0][1]
        assert best / len(lft) < 0.01
        # nor does the order of ids: raw partner ids are correlated, imported ones are not
        assert abs(np.corrcoef(lft, rgt)[0, 1]) < 0.05
    assert np.corrcoef(raw[first, 0], raw[first, 1])[0, 1] > 0.99
