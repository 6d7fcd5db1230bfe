"""DBP15K / OpenEA importers on tiny hand-made source folders, through the real CLI.

Every expectation is computed from the hand-made inputs below (raw ids, URIs, triples, ...);
the only hand-written "results" are the names a reader expects from each URI (last segment,
percent-decoded, ``_`` -> space), written next to the URI.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from psqe_ray.cli import main
from psqe_ray.errors import DataError
from psqe_ray.io.dataset import MANIFEST, Dataset

FR = "http://fr.dbpedia.org/resource/"
EN = "http://dbpedia.org/resource/"

# (raw id, URI, name expected from the URI), in file order (deliberately not sorted by id).
# Raw ids share one id space: left 0..5, right 10..15.
LEFT = [
    (3, FR + "Simone_de_Beauvoir", "Simone de Beauvoir"),
    (0, FR + "Caf%C3%A9_de_Flore", "Café de Flore"),
    (5, FR + "Les_Deux_Magots", "Les Deux Magots"),
    (1, FR + "Paris_%28France%29", "Paris (France)"),
    (4, FR + "Saint-Germain-des-Pr%C3%A9s", "Saint-Germain-des-Prés"),
    (2, FR + "Jean-Paul_Sartre", "Jean-Paul Sartre"),
]
RIGHT = [
    (12, EN + "Jean-Paul_Sartre", "Jean-Paul Sartre"),
    (10, EN + "Café_de_Flore", "Café de Flore"),
    (15, "http://example.org/kg#Les_Deux_Magots", "Les Deux Magots"),
    (11, EN + "Paris", "Paris"),
    (14, EN + "Saint-Germain-des-Prés", "Saint-Germain-des-Prés"),
    (13, EN + "Simone_de_Beauvoir", "Simone de Beauvoir"),
]
# raw relation id -> (URI, name expected from the URI)
REL_IDS = {
    100: ("http://dbpedia.org/ontology/location", "location"),
    101: ("http://dbpedia.org/ontology/spouse", "spouse"),
    102: ("http://example.org/prop#near_by", "near by"),
    103: ("http://dbpedia.org/property/partner", "partner"),
}
# every (head, tail) pair is distinct within a side (used by the no-rel_ids test)
TRIPLES_1 = [(0, 100, 1), (2, 101, 3), (3, 101, 2), (0, 102, 4), (5, 102, 4), (2, 100, 1),
             (4, 100, 1)]
TRIPLES_2 = [(10, 100, 11), (12, 103, 13), (13, 103, 12), (15, 102, 14), (10, 102, 14)]
GOLD = [(0, 10), (1, 11), (2, 12), (3, 13), (5, 15)]  # 4 / 14 stay unlinked
ATTRS_1 = [(FR + "Paris_%28France%29", ["populationTotal", "area"]),
           (FR + "Jean-Paul_Sartre", ["birthDate"])]
ATTRS_2 = [(EN + "Paris", ["populationTotal"]),
           (EN + "Simone_de_Beauvoir", ["birthDate", "deathDate"])]
NAMES = [[0, ["cafe", "de", "flore"]], [12, ["jean", "paul", "sartre"]], [11, ["paris"]]]
IMAGE_DIM = 5
IMAGE_IDS = [0, 2, 10, 13, 15]  # entities with a vector; the others must be present=False

SIDES = ("left", "right")
SPEC = {"left": LEFT, "right": RIGHT}
TRIPLES = {"left": TRIPLES_1, "right": TRIPLES_2}
ATTRS = {"left": ATTRS_1, "right": ATTRS_2}
RAW_URI = {i: u for i, u, _ in LEFT + RIGHT}
URI_NAME = {u: n for _, u, n in LEFT + RIGHT}


def image_vectors() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {i: rng.standard_normal(IMAGE_DIM).astype(np.float32) for i in IMAGE_IDS}


def _lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_pair(root: Path, *, gold_file: str = "ill_ent_ids", rel_ids: bool = True,
               attrs: bool = True) -> Path:
    """Write the hand-made pair in the DBP15K/OpenEA layout under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for k, side in enumerate(SIDES, 1):
        _lines(root / f"ent_ids_{k}", [f"{i}\t{u}" for i, u, _ in SPEC[side]])
        _lines(root / f"triples_{k}", [f"{h}\t{r}\t{t}" for h, r, t in TRIPLES[side]])
        if attrs:
            _lines(root / f"training_attrs_{k}", ["\t".join([u, *a]) for u, a in ATTRS[side]])
    if gold_file:
        _lines(root / gold_file, [f"{a}\t{b}" for a, b in GOLD])
    if rel_ids:
        _lines(root / "rel_ids", [f"{r}\t{u}" for r, (u, _) in REL_IDS.items()])
    return root


def write_names(path: Path, entries=NAMES) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def write_images(path: Path, data: dict | None = None) -> Path:
    path.write_bytes(pickle.dumps(image_vectors() if data is None else data))
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def import_cli(capsys, src, dst, *extra, fmt="dbp15k") -> tuple[int, str, str]:
    return cli(capsys, "import", "--format", fmt, src, dst, *extra)


def assert_one_error_line(rc: int, out: str, err: str) -> str:
    assert rc == 2, (rc, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def rows(ds: Dataset, name: str, side: str | None = None) -> list[dict]:
    return ds.table(name, side=side).to_pylist()


def uri_of(ds: Dataset) -> dict[str, dict[int, str]]:
    return {s: {r["entity_id"]: r["uri"] for r in rows(ds, "entities", s)} for s in SIDES}


def sorted_table(t: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in t.schema if not pa.types.is_fixed_size_list(f.type)]
    return t.sort_by(keys)


# -- a complete import (rel_ids, attributes, names JSON, image features) ------------------------

@pytest.fixture(scope="module")
def full(tmp_path_factory):
    base = tmp_path_factory.mktemp("full")
    src = write_pair(base / "src")
    names = write_names(base / "names.json")
    images = write_images(base / "images.pkl")
    dst = base / "ds"
    assert main(["import", "--format", "dbp15k", str(src), str(dst), "--names", str(names),
                 "--image-features", str(images), "--seed", "3"]) == 0
    return Dataset(str(dst))


def test_row_counts_per_table_and_side(full):
    expected = {
        "entities": {s: len(SPEC[s]) for s in SIDES},
        "triples": {s: len(TRIPLES[s]) for s in SIDES},
        "relations": {s: len({r for _, r, _ in TRIPLES[s]}) for s in SIDES},
        "attributes": {s: sum(len(a) for _, a in ATTRS[s]) for s in SIDES},
        "features/image": {s: len(SPEC[s]) for s in SIDES},
        "gold": {"all": len(GOLD)},
    }
    assert full.tables == sorted(expected)
    for name, counts in expected.items():
        assert full.counts(name) == counts, name
        table = full.table(name)
        if "side" in table.schema.names:
            got = Counter(table.column("side").to_pylist())
            assert dict(got) == counts, name
        else:
            assert table.num_rows == counts["all"]


def test_cli_prints_row_counts(tmp_path, capsys):
    src = write_pair(tmp_path / "src", attrs=False)
    rc, out, _ = import_cli(capsys, src, tmp_path / "ds")
    assert rc == 0
    report = json.loads(out)
    assert report["rows"]["entities"] == {"left": len(LEFT), "right": len(RIGHT)}
    assert report["rows"]["triples"] == {"left": len(TRIPLES_1), "right": len(TRIPLES_2)}
    assert report["rows"]["gold"] == {"all": len(GOLD)}
    assert "attributes" not in report["rows"]
    assert report["fingerprint"] == Dataset(str(tmp_path / "ds")).manifest["fingerprint"]


def test_ids_are_dense_per_side(full):
    for side in SIDES:
        ents = full.table("entities", side=side)
        assert sorted(ents.column("entity_id").to_pylist()) == list(range(len(SPEC[side])))
        rels = full.table("relations", side=side)
        assert sorted(rels.column("relation_id").to_pylist()) == list(range(rels.num_rows))
        tri = full.table("triples", side=side)
        for col in ("head", "tail"):
            assert set(tri.column(col).to_pylist()) <= set(range(len(SPEC[side])))
        assert set(tri.column("relation").to_pylist()) <= set(range(rels.num_rows))
    full.validate()


def test_entity_uris_and_names_from_names_json(full):
    names_by_raw = {i: " ".join(tokens) for i, tokens in NAMES}
    raw_by_uri = {u: i for i, u in RAW_URI.items()}
    for side in SIDES:
        got = rows(full, "entities", side)
        assert sorted(r["uri"] for r in got) == sorted(u for _, u, _ in SPEC[side])
        for r in got:
            raw = raw_by_uri[r["uri"]]
            assert r["name"] == names_by_raw.get(raw, URI_NAME[r["uri"]]), r


def test_entity_names_from_uri_without_names_json(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    assert import_cli(capsys, src, tmp_path / "ds")[0] == 0
    ds = Dataset(str(tmp_path / "ds"))
    for side in SIDES:
        got = {r["uri"]: r["name"] for r in rows(ds, "entities", side)}
        assert got == {u: n for _, u, n in SPEC[side]}


def test_triples_keep_their_entities_and_relations(full):
    uris = uri_of(full)
    for side in SIDES:
        rel_uri = {r["relation_id"]: r["uri"] for r in rows(full, "relations", side)}
        got = sorted((uris[side][t["head"]], rel_uri[t["relation"]], uris[side][t["tail"]])
                     for t in rows(full, "triples", side))
        want = sorted((RAW_URI[h], REL_IDS[r][0], RAW_URI[t]) for h, r, t in TRIPLES[side])
        assert got == want


def test_relation_names_come_from_rel_ids(full):
    for side in SIDES:
        got = {(r["uri"], r["name"]) for r in rows(full, "relations", side)}
        assert got == {REL_IDS[r] for _, r, _ in TRIPLES[side]}


def test_without_rel_ids_relations_are_unnamed_but_consistent(tmp_path, capsys):
    src = write_pair(tmp_path / "src", rel_ids=False)
    assert import_cli(capsys, src, tmp_path / "ds")[0] == 0
    ds = Dataset(str(tmp_path / "ds"))
    uris = uri_of(ds)
    for side in SIDES:
        rels = rows(ds, "relations", side)
        assert all(r["uri"] is None and r["name"] is None for r in rels)
        raw_of_pair = {(RAW_URI[h], RAW_URI[t]): r for h, r, t in TRIPLES[side]}
        raw_to_new: dict[int, set[int]] = {}
        for t in rows(ds, "triples", side):
            raw = raw_of_pair[(uris[side][t["head"]], uris[side][t["tail"]])]
            raw_to_new.setdefault(raw, set()).add(t["relation"])
        # every raw relation maps to exactly one new id, and distinct raw ids stay distinct
        assert all(len(v) == 1 for v in raw_to_new.values())
        assert len({next(iter(v)) for v in raw_to_new.values()}) == len(raw_to_new)
        assert len(raw_to_new) == len(rels)


def test_attributes_match_source(full):
    uris = uri_of(full)
    for side in SIDES:
        got = sorted((uris[side][r["entity_id"]], r["attribute"])
                     for r in rows(full, "attributes", side))
        want = sorted((u, a) for u, attrs in ATTRS[side] for a in attrs)
        assert got == want
        assert all(r["value"] is None for r in rows(full, "attributes", side))


def test_image_features_and_present_flags(full):
    vectors = image_vectors()
    raw_by_uri = {u: i for i, u in RAW_URI.items()}
    uris = uri_of(full)
    entry = full.manifest["tables"]["features/image"]
    assert entry["dim"] == IMAGE_DIM
    for side in SIDES:
        ids_of_side = {i for i, _, _ in SPEC[side]}
        assert entry["present"][side] == len(ids_of_side & set(vectors))
        table = full.table("features/image", side=side)
        assert table.schema.field("vector").type.list_size == IMAGE_DIM
        for r in table.to_pylist():
            raw = raw_by_uri[uris[side][r["entity_id"]]]
            assert r["present"] == (raw in vectors), (side, raw)
            want = vectors[raw] if raw in vectors else np.zeros(IMAGE_DIM, np.float32)
            np.testing.assert_array_equal(np.asarray(r["vector"], np.float32), want)


def test_gold_links_map_to_the_same_uris(full):
    uris = uri_of(full)
    got = sorted((uris["left"][g["left_id"]], uris["right"][g["right_id"]])
                 for g in rows(full, "gold"))
    assert got == sorted((RAW_URI[a], RAW_URI[b]) for a, b in GOLD)


@pytest.mark.parametrize("fmt, own, other", [("dbp15k", "ill_ent_ids", "ref_ent_ids"),
                                             ("openea", "ref_ent_ids", "ill_ent_ids")])
def test_each_format_reads_its_own_gold_file(tmp_path, capsys, fmt, own, other):
    src = write_pair(tmp_path / "src", gold_file=own)
    _lines(src / other, [f"{a}\t{b}" for a, b in GOLD[:2]])  # a decoy with fewer links
    assert import_cli(capsys, src, tmp_path / "ds", fmt=fmt)[0] == 0
    ds = Dataset(str(tmp_path / "ds"))
    assert ds.manifest["meta"]["gold_file"] == own
    uris = uri_of(ds)
    got = sorted((uris["left"][g["left_id"]], uris["right"][g["right_id"]]) for g in rows(ds, "gold"))
    assert got == sorted((RAW_URI[a], RAW_URI[b]) for a, b in GOLD)


def test_openea_falls_back_to_ill_ent_ids_and_gold_is_optional(tmp_path, capsys):
    src = write_pair(tmp_path / "src", gold_file="ill_ent_ids")
    assert import_cli(capsys, src, tmp_path / "a", fmt="openea")[0] == 0
    assert Dataset(str(tmp_path / "a")).counts("gold") == {"all": len(GOLD)}
    os.remove(src / "ill_ent_ids")
    assert import_cli(capsys, src, tmp_path / "b", fmt="openea")[0] == 0
    assert not Dataset(str(tmp_path / "b")).has("gold")


def _import_seed(tmp_path, capsys, name: str, seed: int) -> Dataset:
    src = tmp_path / "src"
    if not src.exists():
        write_pair(src)
        write_names(tmp_path / "names.json")
        write_images(tmp_path / "img.pkl")
    rc, _, err = import_cli(capsys, src, tmp_path / name, "--seed", seed,
                            "--names", tmp_path / "names.json",
                            "--image-features", tmp_path / "img.pkl")
    assert rc == 0, err
    return Dataset(str(tmp_path / name))


def test_different_seed_gives_different_ids(tmp_path, capsys):
    a = _import_seed(tmp_path, capsys, "a", 1)
    b = _import_seed(tmp_path, capsys, "b", 2)
    ua, ub = uri_of(a), uri_of(b)
    for side in SIDES:
        assert sorted(ua[side].values()) == sorted(ub[side].values())
    assert ua != ub  # the same URIs, other ids
    assert a.manifest["fingerprint"] != b.manifest["fingerprint"]

    def gold_uris(ds, uris):
        return sorted((uris["left"][g["left_id"]], uris["right"][g["right_id"]])
                      for g in rows(ds, "gold"))
    assert gold_uris(a, ua) == gold_uris(b, ub)
    assert sorted_table(a.table("gold")) != sorted_table(b.table("gold"))


def test_same_seed_gives_identical_tables(tmp_path, capsys):
    a = _import_seed(tmp_path, capsys, "a", 5)
    b = _import_seed(tmp_path, capsys, "b", 5)
    assert a.tables == b.tables
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    for name in a.tables:
        ta, tb = a.table(name), b.table(name)
        assert ta.equals(tb), name
        assert ta.to_pylist() == tb.to_pylist(), name


def test_reimport_same_seed_is_a_noop(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    dst = tmp_path / "ds"
    assert import_cli(capsys, src, dst, "--seed", 4)[0] == 0
    before = snapshot(dst)
    rc, out, err = import_cli(capsys, src, dst, "--seed", 4)
    assert rc == 0, err
    assert json.loads(out)["fingerprint"] == Dataset(str(dst)).manifest["fingerprint"]
    assert snapshot(dst) == before


def test_reimport_other_seed_is_refused_and_leaves_dataset_untouched(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    dst = tmp_path / "ds"
    assert import_cli(capsys, src, dst, "--seed", 4)[0] == 0
    before = snapshot(dst)
    line = assert_one_error_line(*import_cli(capsys, src, dst, "--seed", 5))
    assert str(dst) in line and "already holds a different dataset" in line
    assert snapshot(dst) == before
    ds = Dataset(str(dst), validate=True)
    assert ds.manifest["meta"]["seed"] == 4


def test_reimport_changed_source_is_refused(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    dst = tmp_path / "ds"
    assert import_cli(capsys, src, dst)[0] == 0
    before = snapshot(dst)
    _lines(src / "triples_2", [f"{h}\t{r}\t{t}" for h, r, t in TRIPLES_2[:-1]])
    line = assert_one_error_line(*import_cli(capsys, src, dst))
    assert "already holds a different dataset" in line
    assert snapshot(dst) == before


def test_refuses_non_empty_destination_of_unrelated_files(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    dst = tmp_path / "ds"
    (dst / "sub").mkdir(parents=True)
    (dst / "notes.txt").write_text("mine\n")
    (dst / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(dst)
    line = assert_one_error_line(*import_cli(capsys, src, dst))
    assert str(dst) in line and "not empty" in line
    assert snapshot(dst) == before
    assert sorted(p.relative_to(dst) for p in dst.rglob("*")) == \
        [Path("notes.txt"), Path("sub"), Path("sub/data.bin")]


def test_crlf_and_blank_lines_import_like_plain_files(tmp_path, capsys):
    plain = write_pair(tmp_path / "plain")
    crlf = write_pair(tmp_path / "crlf")
    for path in crlf.iterdir():
        text = path.read_text(encoding="utf-8")
        path.write_bytes(("\n" + text.replace("\n", "\r\n\n")).encode("utf-8"))
    assert import_cli(capsys, plain, tmp_path / "a", "--seed", 8)[0] == 0
    assert import_cli(capsys, crlf, tmp_path / "b", "--seed", 8)[0] == 0
    a, b = Dataset(str(tmp_path / "a")), Dataset(str(tmp_path / "b"))
    assert a.tables == b.tables
    for name in a.tables:
        assert a.table(name).equals(b.table(name)), name


def test_empty_existing_destination_is_accepted(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    (tmp_path / "ds").mkdir()
    assert import_cli(capsys, src, tmp_path / "ds")[0] == 0
    Dataset(str(tmp_path / "ds"), validate=True)


# -- bad input: exit 2, one `error:` line naming the file (and line / key), nothing written -----

def _replace_line(path: Path, lineno: int, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    _lines(path, lines)
    return lineno


def _append_line(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    _lines(path, [*lines, text])
    return len(lines) + 1


def case_missing_triples_2(src, tmp):
    os.remove(src / "triples_2")
    return [], f"{src}/triples_2", "no such file"


def case_missing_ent_ids_1(src, tmp):
    os.remove(src / "ent_ids_1")
    return [], f"{src}/ent_ids_1", "no such file"


def case_wrong_field_count(src, tmp):
    n = _replace_line(src / "triples_1", 2, "2\t101")
    return [], f"{src}/triples_1:{n}", "malformed line"


def case_extra_field_in_gold(src, tmp):
    n = _append_line(src / "ill_ent_ids", "4\t14\t1")
    return [], f"{src}/ill_ent_ids:{n}", "malformed line"


def case_non_integer_entity_id(src, tmp):
    n = _replace_line(src / "ent_ids_2", 3, f"1x\t{EN}Somewhere")
    return [], f"{src}/ent_ids_2:{n}", "not an integer"


def case_non_integer_triple_id(src, tmp):
    n = _append_line(src / "triples_2", "10\tknows\t11")
    return [], f"{src}/triples_2:{n}", "not an integer"


def case_duplicate_entity_id(src, tmp):
    n = _append_line(src / "ent_ids_1", f"{LEFT[2][0]}\t{FR}Doublon")
    return [], f"{src}/ent_ids_1:{n}", "duplicate entity id"


def case_id_in_both_graphs(src, tmp):
    _append_line(src / "ent_ids_2", f"{LEFT[0][0]}\t{EN}Clash")
    return [], f"{src}/ent_ids_2", "also appears in ent_ids_1"


def case_triple_unknown_tail(src, tmp):
    n = _append_line(src / "triples_2", "10\t100\t99")
    return [], f"{src}/triples_2:{n}", "unknown right entity"


def case_triple_uses_other_side_entity(src, tmp):
    n = _append_line(src / "triples_1", f"0\t100\t{RIGHT[0][0]}")
    return [], f"{src}/triples_1:{n}", "unknown left entity"


def case_relation_not_in_rel_ids(src, tmp):
    n = _append_line(src / "triples_1", "0\t999\t1")
    return [], f"{src}/triples_1:{n}", "999"


def case_gold_unknown_right(src, tmp):
    n = _append_line(src / "ill_ent_ids", "4\t99")
    return [], f"{src}/ill_ent_ids:{n}", "unknown right entity"


def case_gold_sides_swapped(src, tmp):
    n = _append_line(src / "ill_ent_ids", "14\t4")
    return [], f"{src}/ill_ent_ids:{n}", "unknown left entity"


def case_attribute_of_unknown_entity(src, tmp):
    n = _append_line(src / "training_attrs_2", f"{EN}Nowhere\tpopulationTotal")
    return [], f"{src}/training_attrs_2:{n}", "unknown right entity"


def case_attribute_line_without_attribute(src, tmp):
    n = _append_line(src / "training_attrs_1", f"{FR}Les_Deux_Magots")
    return [], f"{src}/training_attrs_1:{n}", "malformed line"


def case_not_utf8(src, tmp):
    data = (src / "triples_1").read_bytes().split(b"\n")
    data[2] = b"\xff\xfe" + data[2]
    (src / "triples_1").write_bytes(b"\n".join(data))
    return [], f"{src}/triples_1:3", "UTF-8"


def case_image_wrong_dimension(src, tmp):
    vecs = image_vectors()
    key = IMAGE_IDS[-1]
    vecs[key] = np.ones(IMAGE_DIM + 2, np.float32)
    pkl = write_images(tmp / "img.pkl", vecs)
    return ["--image-features", pkl], f"{pkl}: key {key}", "dimension"


def case_image_nan(src, tmp):
    vecs = image_vectors()
    key = IMAGE_IDS[2]
    vecs[key] = vecs[key].copy()
    vecs[key][1] = np.nan
    pkl = write_images(tmp / "img.pkl", vecs)
    return ["--image-features", pkl], f"{pkl}: key {key}", "NaN"


def case_image_unknown_entity(src, tmp):
    vecs = image_vectors()
    vecs[99] = np.ones(IMAGE_DIM, np.float32)
    pkl = write_images(tmp / "img.pkl", vecs)
    return ["--image-features", pkl], f"{pkl}: key 99", "unknown entity"


def case_image_not_a_pickle(src, tmp):
    pkl = tmp / "img.pkl"
    pkl.write_bytes(b"this is not a pickle")
    return ["--image-features", pkl], f"{pkl}", "pickle"


def case_names_unknown_id(src, tmp):
    names = write_names(tmp / "names.json", [*NAMES, [99, ["ghost"]]])
    return ["--names", names], f"{names}: entry {len(NAMES)}", "unknown entity id 99"


def case_names_malformed_json(src, tmp):
    names = tmp / "names.json"
    names.write_text('[[0, ["cafe"]], [1, ', encoding="utf-8")
    return ["--names", names], f"{names}", "malformed JSON"


def case_names_missing_file(src, tmp):
    return ["--names", tmp / "absent.json"], f"{tmp / 'absent.json'}", "no such file"


def case_empty_graph(src, tmp):
    (src / "ent_ids_1").write_text("", encoding="utf-8")
    return [], f"{src}/ent_ids_1", "empty graph"


def case_line_number_counts_blank_lines(src, tmp):
    lines = (src / "triples_2").read_text(encoding="utf-8").splitlines()
    _lines(src / "triples_2", [*lines[:2], "", *lines[2:], "", "10\t100"])
    return [], f"{src}/triples_2:{len(lines) + 3}", "malformed line"


def case_source_folder_missing(src, tmp):
    shutil.rmtree(src)
    return [], f"{src}", "does not exist"


BAD_INPUTS = {name[len("case_"):]: fn for name, fn in sorted(globals().items())
              if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_one_error_line(tmp_path, capsys, case):
    src = write_pair(tmp_path / "src")
    extra, where, problem = BAD_INPUTS[case](src, tmp_path)
    dst = tmp_path / "out" / "ds"
    line = assert_one_error_line(*import_cli(capsys, src, dst, *extra))
    # the location comes first, then ':' (so 'file:3' cannot match 'file:31')
    assert line.startswith(f"error: {where}:"), line
    assert problem in line
    assert not dst.exists()
    assert not (tmp_path / "out").exists()


BIG = 2 ** 70  # an integer that does not fit in int64


def big_entity_id(src, tmp):
    n = _append_line(src / "ent_ids_1", f"{BIG}\t{FR}Trop_grand")
    return [], f"{src}/ent_ids_1:{n}"


def big_relation_id(src, tmp):
    os.remove(src / "rel_ids")
    n = _append_line(src / "triples_1", f"0\t{BIG}\t1")
    return [], f"{src}/triples_1:{n}"


def big_gold_id(src, tmp):
    n = _append_line(src / "ill_ent_ids", f"4\t{BIG}")
    return [], f"{src}/ill_ent_ids:{n}"


def big_names_id(src, tmp):
    names = write_names(tmp / "names.json", [*NAMES, [BIG, ["huge"]]])
    return ["--names", names], f"{names}: entry {len(NAMES)}"


def big_image_key(src, tmp):
    vecs = image_vectors()
    vecs[BIG] = np.ones(IMAGE_DIM, np.float32)
    pkl = write_images(tmp / "img.pkl", vecs)
    return ["--image-features", pkl], f"{pkl}: key {BIG}"


def infinite_image_key(src, tmp):
    vecs = image_vectors()
    vecs[float("inf")] = np.ones(IMAGE_DIM, np.float32)
    pkl = write_images(tmp / "img.pkl", vecs)
    return ["--image-features", pkl], f"{pkl}: key inf"


@pytest.mark.parametrize("case", [big_entity_id, big_relation_id, big_gold_id, big_names_id,
                                  big_image_key, infinite_image_key],
                         ids=lambda f: f.__name__)
def test_ids_outside_int64_are_data_errors(tmp_path, capsys, case):
    src = write_pair(tmp_path / "src")
    extra, where = case(src, tmp_path)
    dst = tmp_path / "ds"
    line = assert_one_error_line(*import_cli(capsys, src, dst, *extra))
    assert line.startswith(f"error: {where}:"), line
    assert not dst.exists()


@pytest.fixture
def refused_url():
    """An http URL on loopback whose port refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/names.json"
    finally:
        sock.close()


def test_unreachable_names_url(tmp_path, capsys, refused_url):
    src = write_pair(tmp_path / "src")
    dst = tmp_path / "ds"
    line = assert_one_error_line(*import_cli(capsys, src, dst, "--names", refused_url))
    assert line.startswith(f"error: {refused_url}:"), line
    assert not dst.exists()


def test_s3_names_url_in_missing_bucket(tmp_path, capsys, s3_endpoint):
    src = write_pair(tmp_path / "src")
    url = "s3://psqe-no-such-bucket-names/names.json"
    line = assert_one_error_line(*import_cli(capsys, src, tmp_path / "ds", "--names", url))
    assert line.startswith(f"error: {url}")
    assert not (tmp_path / "ds").exists()


def test_s3_destination_in_missing_bucket(tmp_path, capsys, s3_endpoint):
    import s3fs

    src = write_pair(tmp_path / "src")
    bucket = "psqe-no-such-bucket-dst"
    url = f"s3://{bucket}/ds"
    line = assert_one_error_line(*import_cli(capsys, src, url))
    assert line.startswith(f"error: {url}") and bucket in line
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    assert not fs.exists(bucket)


def test_s3_source_in_missing_bucket(tmp_path, capsys, s3_endpoint):
    url = "s3://psqe-no-such-bucket-src/fr_en"
    line = assert_one_error_line(*import_cli(capsys, url, tmp_path / "ds"))
    assert line.startswith(f"error: {url}") and "does not exist" in line
    assert not (tmp_path / "ds").exists()


def test_error_is_one_line_in_a_real_process(tmp_path):
    """The installed entry point, in its own process (logging configured by ``main``)."""
    src = write_pair(tmp_path / "src")
    n = _append_line(src / "triples_2", "10\t100\t99")
    dst = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-m", "psqe_ray.cli", "import", "--format", "dbp15k",
                           str(src), str(dst)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {src}/triples_2:{n}: ")
    assert not dst.exists()


# -- the reader ---------------------------------------------------------------------------------

def test_dataset_on_folder_without_manifest(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.parquet").write_bytes(b"")
    with pytest.raises(DataError) as exc:
        Dataset(str(tmp_path / "d"))
    assert exc.value.where == str(tmp_path / "d")
    assert MANIFEST in str(exc.value)


def test_dataset_on_missing_path(tmp_path):
    with pytest.raises(DataError) as exc:
        Dataset(str(tmp_path / "nothing"))
    assert exc.value.where == str(tmp_path / "nothing")
    assert "no such dataset" in str(exc.value)
    assert not (tmp_path / "nothing").exists()


def test_dataset_with_corrupt_manifest(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    assert import_cli(capsys, src, tmp_path / "ds")[0] == 0
    (tmp_path / "ds" / MANIFEST).write_text("{not json")
    with pytest.raises(DataError) as exc:
        Dataset(str(tmp_path / "ds"))
    assert exc.value.where == f"{tmp_path / 'ds'}/{MANIFEST}"


def test_deleted_part_file_is_reported_by_name(tmp_path, capsys):
    src = write_pair(tmp_path / "src")
    write_images(tmp_path / "img.pkl")
    dst = tmp_path / "ds"
    assert import_cli(capsys, src, dst, "--image-features", tmp_path / "img.pkl")[0] == 0
    manifest = Dataset(str(dst)).manifest
    assert len(manifest["tables"]) == 6
    for name, entry in sorted(manifest["tables"].items()):
        part = entry["parts"][0]
        path = dst / part
        data = path.read_bytes()
        path.unlink()
        try:
            ds = Dataset(str(dst))  # the manifest alone still opens
            with pytest.raises(DataError) as exc:
                ds.table(name)
            assert exc.value.where == f"{dst}/{part}"
            with pytest.raises(DataError) as exc:
                Dataset(str(dst)).validate()
            assert exc.value.where == f"{dst}/{part}"
            with pytest.raises(DataError) as exc:
                Dataset(str(dst), validate=True)
            assert f"{dst}/{part}" in str(exc.value)
            others = [t for t in manifest["tables"] if t != name]
            for other in others:
                ds.table(other)  # the other tables are still readable
        finally:
            path.write_bytes(data)
    Dataset(str(dst), validate=True)
