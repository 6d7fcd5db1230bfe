"""The MMKB, DWY100K and OpenEA (own URI layout, 100K splits) importers on tiny hand-made folders.

Each folder mimics the public files byte for byte (tab separators, one record a line, ``\\n``
after every line, UTF-8):

- MMKB as MCLEA's ``datapro/mmkb_convert.py`` writes it (MEAformer ships the same files):
  ``ent_ids_k`` ``id<TAB>token`` with the MMKB tokens (FB15K: Freebase mids ``/m/0abc``; DB15K /
  YAGO15K: ``<http://...>``), one id space numbered by first appearance over both graphs,
  ``triples_k`` with one relation id space, ``ill_ent_ids`` ``fb_id<TAB>db_id``,
  ``training_attrs_k`` ``token<TAB>attribute...`` and ``<folder>_id_img_feature_dict.pkl``
  ``{int id: float32 vector}`` in the folder.
- DWY100K as BootEA's ``dataset/DWY100K/<pair>/mapping/0_3/``: ``ent_ids_k``, ``rel_ids_1`` /
  ``rel_ids_2`` (``id<TAB>URI``), ``triples_k``, ``ref_ent_ids`` (70 % test links) and
  ``sup_ent_ids`` (30 % seeds); the seed entities carry the highest ids.
- OpenEA's own layout (``nju-websoft/OpenEA`` ``modules/load/read.py``): ``rel_triples_k``
  ``h<TAB>r<TAB>t`` URIs, ``attr_triples_k`` ``e<TAB>a<TAB>v``, ``ent_links`` and
  ``721_5fold/1..5/{train,valid,test}_links`` (URI pairs).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from psqe_ray.cli import main
from psqe_ray.io.dataset import Dataset

SIDES = ("left", "right")
DB = "http://dbpedia.org/resource/"
YG = "http://yago-knowledge.org/resource/"
WD = "http://www.wikidata.org/entity/"


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _append(path: Path, line: str) -> int:
    old = path.read_text(encoding="utf-8").splitlines()
    _lines(path, [*old, line])
    return len(old) + 1


def import_cli(capsys, fmt: str, src: Path, dst: Path, *extra) -> tuple[int, str, str]:
    rc = main(["import", "--format", fmt, str(src), str(dst), *map(str, extra)])
    out, err = capsys.readouterr()
    return rc, out, err


def imported(capsys, fmt: str, src: Path, dst: Path, *extra) -> Dataset:
    rc, _, err = import_cli(capsys, fmt, src, dst, *extra)
    assert rc == 0, err
    return Dataset(str(dst), validate=True)


def by_uri(ds: Dataset) -> dict[str, dict[str, dict]]:
    """side -> URI -> entity row."""
    return {s: {r["uri"]: r for r in ds.table("entities", side=s).to_pylist()} for s in SIDES}


def gold_uris(ds: Dataset) -> set[tuple[str, str]]:
    uri = {s: {r["entity_id"]: r["uri"] for r in ds.table("entities", side=s).to_pylist()}
           for s in SIDES}
    return {(uri["left"][g["left_id"]], uri["right"][g["right_id"]])
            for g in ds.table("gold").to_pylist()}


def triple_uris(ds: Dataset, side: str) -> set[tuple[str, str]]:
    uri = {r["entity_id"]: r["uri"] for r in ds.table("entities", side=side).to_pylist()}
    return {(uri[t["head"]], uri[t["tail"]]) for t in ds.table("triples", side=side).to_pylist()}


def assert_refused(capsys, fmt, src, tmp_path, where, problem, *extra) -> None:
    dst = tmp_path / "out" / "ds"
    rc, out, err = import_cli(capsys, fmt, src, dst, *extra)
    assert rc == 2 and out == "", (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {where}:"), lines[0]
    assert problem in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def assert_remapped(ds: Dataset, raw_ids: dict[str, dict[str, int]]) -> None:
    """Ids are dense per side and not the raw ids' order (a seeded permutation)."""
    rows = by_uri(ds)
    moved = False
    for side in SIDES:
        ids = sorted(r["entity_id"] for r in rows[side].values())
        assert ids == list(range(len(raw_ids[side])))
        order = sorted(raw_ids[side], key=raw_ids[side].get)
        moved |= [rows[side][u]["entity_id"] for u in order] != list(range(len(order)))
    assert moved


# -- MMKB (FB15K-DB15K / FB15K-YAGO15K, MCLEA's conversion) -------------------------------------

FB = ["/m/027rn", "/m/06cx9", "/m/0j0k", "/m/01n7q"]  # ids 0..3 (first appearance)
KB2 = {"FB15K_DB15K": [f"<{DB}Dominican_Republic>", f"<{DB}Republic>", f"<{DB}Asia>",
                       f"<{DB}Mountain_View,_California>"],
       "FB15K_YAGO15K": [f"<{YG}Dominican_Republic>", f"<{YG}Republic>", f"<{YG}Asia>"]}
MMKB_NAMES = {f"<{DB}Dominican_Republic>": "Dominican Republic", f"<{DB}Republic>": "Republic",
              f"<{DB}Asia>": "Asia", f"<{DB}Mountain_View,_California>": "Mountain View, California",
              f"<{YG}Dominican_Republic>": "Dominican Republic", f"<{YG}Republic>": "Republic",
              f"<{YG}Asia>": "Asia"}
FB_TRIPLES = [(0, 0, 1), (2, 1, 0), (3, 2, 0)]  # relation ids are shared by both graphs
KB2_TRIPLES = [(4, 3, 5), (6, 4, 4), (7, 4, 6)]
MMKB_IMG_DIM = 6


def write_mmkb(root: Path, name: str = "FB15K_DB15K") -> tuple[Path, dict]:
    src = root / name
    kb2 = KB2[name]
    ids = {"left": {u: i for i, u in enumerate(FB)},
           "right": {u: len(FB) + i for i, u in enumerate(kb2)}}
    triples2 = [t for t in KB2_TRIPLES if max(t[0], t[2]) < len(FB) + len(kb2)]
    for k, side, triples in ((1, "left", FB_TRIPLES), (2, "right", triples2)):
        _lines(src / f"ent_ids_{k}", [f"{i}\t{u}" for u, i in ids[side].items()])
        _lines(src / f"triples_{k}", ["\t".join(map(str, t)) for t in triples])
    links = [(0, 4), (2, 6), (1, 5)]  # FB id, then the other graph's
    _lines(src / "ill_ent_ids", [f"{a}\t{b}" for a, b in links])
    _lines(src / "training_attrs_1", [
        f"{FB[0]}\t<http://rdf.freebase.com/ns/location.geocode.longitude>"
        "\t<http://rdf.freebase.com/ns/location.location.area>",
        f"{FB[3]}\t<http://rdf.freebase.com/ns/topic_server.population_number>"])
    _lines(src / "training_attrs_2", [f"{kb2[2]}\t<http://dbpedia.org/ontology/areaTotal>"])
    rng = np.random.default_rng(5)
    vectors = {i: rng.standard_normal(MMKB_IMG_DIM).astype(np.float32) for i in (0, 3, 4, 6)}
    (src / f"{name}_id_img_feature_dict.pkl").write_bytes(pickle.dumps(vectors))
    return src, {"ids": ids, "links": links, "vectors": vectors}


@pytest.mark.parametrize("name", ["FB15K_DB15K", "FB15K_YAGO15K"])
def test_mmkb_rows_names_images_and_gold(tmp_path, capsys, name):
    src, made = write_mmkb(tmp_path, name)
    ds = imported(capsys, "mmkb", src, tmp_path / "ds", "--seed", 1)
    ids = made["ids"]
    counts = {s: len(ids[s]) for s in SIDES}
    assert ds.counts("entities") == counts
    assert ds.counts("triples") == {"left": 3, "right": 3 if name == "FB15K_DB15K" else 2}
    assert ds.counts("attributes") == {"left": 3, "right": 1}
    assert_remapped(ds, ids)
    rows = by_uri(ds)
    assert all(rows["left"][mid]["name"] is None for mid in FB)  # Freebase mids: no name
    assert {u: r["name"] for u, r in rows["right"].items()} == {u: MMKB_NAMES[u] for u in ids["right"]}
    raw_uri = {i: u for s in SIDES for u, i in ids[s].items()}
    assert gold_uris(ds) == {(raw_uri[a], raw_uri[b]) for a, b in made["links"]}
    # the image pickle next to the pair is found without --image-features
    assert ds.manifest["meta"]["image_features"].endswith(f"{name}_id_img_feature_dict.pkl")
    for side in SIDES:
        table = ds.table("features/image", side=side).to_pylist()
        assert len(table) == counts[side]
        for row in table:
            uri = next(u for u, r in rows[side].items() if r["entity_id"] == row["entity_id"])
            raw = ids[side][uri]
            assert row["present"] == (raw in made["vectors"])
            if row["present"]:
                np.testing.assert_array_equal(np.asarray(row["vector"], np.float32),
                                              made["vectors"][raw])


def test_mmkb_explicit_image_pickle_like_meaformer(tmp_path, capsys):
    """MEAformer keeps the pickle apart (pkls/FBDB15K_id_img_feature_dict.pkl): named by hand."""
    src, made = write_mmkb(tmp_path)
    pkls = tmp_path / "pkls" / "FBDB15K_id_img_feature_dict.pkl"
    pkls.parent.mkdir()
    (src / "FB15K_DB15K_id_img_feature_dict.pkl").rename(pkls)
    ds = imported(capsys, "mmkb", src, tmp_path / "ds", "--image-features", pkls)
    assert sum(ds.table("features/image").column("present").to_pylist()) == len(made["vectors"])


def test_mmkb_bad_duplicate_entity_id(tmp_path, capsys):
    src, _ = write_mmkb(tmp_path)
    n = _append(src / "ent_ids_2", f"5\t<{DB}Doublon>")
    assert_refused(capsys, "mmkb", src, tmp_path, f"{src}/ent_ids_2:{n}", "duplicate entity id 5")


def test_mmkb_bad_dangling_gold_link(tmp_path, capsys):
    src, _ = write_mmkb(tmp_path)
    n = _append(src / "ill_ent_ids", "3\t42")
    assert_refused(capsys, "mmkb", src, tmp_path, f"{src}/ill_ent_ids:{n}", "unknown right entity")


def test_mmkb_bad_triple_columns(tmp_path, capsys):
    src, _ = write_mmkb(tmp_path)
    n = _append(src / "triples_1", "0 0 1")  # spaces, not tabs
    assert_refused(capsys, "mmkb", src, tmp_path, f"{src}/triples_1:{n}", "malformed line")


def test_mmkb_bad_image_key(tmp_path, capsys):
    src, made = write_mmkb(tmp_path)
    pkl = src / "FB15K_DB15K_id_img_feature_dict.pkl"
    pkl.write_bytes(pickle.dumps({**made["vectors"], 99: np.ones(MMKB_IMG_DIM, np.float32)}))
    assert_refused(capsys, "mmkb", src, tmp_path, f"{pkl}: key 99", "unknown entity")


# -- DWY100K (BootEA's mapping/0_3 layout) ------------------------------------------------------

DWY_LEFT = {0: DB + "Kelly_Clarkson", 1: DB + "Budapest", 2: DB + "Verona",  # test
            6: DB + "Sicily", 7: DB + "Barbara_Bush"}  # seeds: the highest ids, as in BootEA
DWY_RIGHT = {"dbp_wd": {3: WD + "Q160", 4: WD + "Q1781", 5: WD + "Q2028", 8: WD + "Q1460",
                        9: WD + "Q152505"},
             "dbp_yg": {3: "Kelly_Clarkson", 4: "Budapest", 5: "Verona", 8: "Sicily",
                        9: "Barbara_Bush"}}
DWY_REF = [(0, 3), (1, 4), (2, 5)]
DWY_SUP = [(6, 8), (7, 9)]


def write_dwy(root: Path, pair: str = "dbp_wd") -> tuple[Path, dict]:
    src = root / "DWY100K" / pair / "mapping" / "0_3"
    right = DWY_RIGHT[pair]
    _lines(src / "ent_ids_1", [f"{i}\t{u}" for i, u in DWY_LEFT.items()])
    _lines(src / "ent_ids_2", [f"{i}\t{u}" for i, u in right.items()])
    _lines(src / "rel_ids_1", ["0\thttp://dbpedia.org/ontology/birthPlace",
                               "1\thttp://dbpedia.org/ontology/country"])
    _lines(src / "rel_ids_2", ["2\thttp://www.wikidata.org/entity/P19",
                               "3\thttp://www.wikidata.org/entity/P17"])
    _lines(src / "triples_1", ["0\t0\t1", "2\t1\t6", "7\t0\t1"])
    _lines(src / "triples_2", ["3\t2\t4", "5\t3\t8", "9\t2\t4", "9\t3\t8"])
    _lines(src / "ref_ent_ids", [f"{a}\t{b}" for a, b in DWY_REF])
    _lines(src / "sup_ent_ids", [f"{a}\t{b}" for a, b in DWY_SUP])
    raw = {"left": {u: i for i, u in DWY_LEFT.items()}, "right": {u: i for i, u in right.items()}}
    return src, raw


@pytest.mark.parametrize("pair", ["dbp_wd", "dbp_yg"])
def test_dwy100k_rows_names_relations_and_gold_from_both_splits(tmp_path, capsys, pair):
    src, raw = write_dwy(tmp_path, pair)
    ds = imported(capsys, "dwy100k", src, tmp_path / "ds")
    assert ds.counts("entities") == {"left": 5, "right": 5}
    assert ds.counts("triples") == {"left": 3, "right": 4}
    assert_remapped(ds, raw)
    rows = by_uri(ds)
    assert rows["left"][DB + "Barbara_Bush"]["name"] == "Barbara Bush"
    right_names = {r["name"] for r in rows["right"].values()}
    assert ("Q1781" if pair == "dbp_wd" else "Budapest") in right_names
    rel_names = {s: set(ds.table("relations", side=s).column("name").to_pylist()) for s in SIDES}
    assert rel_names == {"left": {"birthPlace", "country"}, "right": {"P19", "P17"}}
    right_uri = DWY_RIGHT[pair]
    assert gold_uris(ds) == {(DWY_LEFT[a], right_uri[b]) for a, b in DWY_REF + DWY_SUP}
    assert ds.manifest["meta"]["gold_file"] == "ref_ent_ids+sup_ent_ids"
    assert triple_uris(ds, "left") == {(DWY_LEFT[h], DWY_LEFT[t]) for h, t in
                                       [(0, 1), (2, 6), (7, 1)]}


def test_dwy100k_a_link_in_both_files_is_one_gold_pair(tmp_path, capsys):
    src, _ = write_dwy(tmp_path)
    _append(src / "ref_ent_ids", "6\t8")  # also in sup_ent_ids
    ds = imported(capsys, "dwy100k", src, tmp_path / "ds")
    assert ds.counts("gold") == {"all": len(DWY_REF) + len(DWY_SUP)}


def test_dwy100k_bad_non_numeric_seed_id(tmp_path, capsys):
    src, _ = write_dwy(tmp_path)
    n = _append(src / "sup_ent_ids", f"{DB}Sicily\t8")
    assert_refused(capsys, "dwy100k", src, tmp_path, f"{src}/sup_ent_ids:{n}", "not an integer")


def test_dwy100k_bad_missing_triples(tmp_path, capsys):
    src, _ = write_dwy(tmp_path)
    (src / "triples_2").unlink()
    assert_refused(capsys, "dwy100k", src, tmp_path, f"{src}/triples_2", "no such file")


def test_dwy100k_bad_relation_missing_from_rel_ids(tmp_path, capsys):
    src, _ = write_dwy(tmp_path)
    n = _append(src / "triples_2", "3\t77\t5")
    assert_refused(capsys, "dwy100k", src, tmp_path, f"{src}/triples_2:{n}", "relation id 77")


# -- OpenEA's own layout (15K / 100K downloads: URIs, ent_links, 721_5fold) ---------------------

OEA_LEFT = [DB + n for n in ("Kelly_Clarkson", "Budapest", "Verona", "Sicily", "Barbara_Bush",
                             "Hungary")]
OEA_RIGHT = [WD + q for q in ("Q160", "Q1781", "Q2028", "Q1460", "Q152505", "Q28")]
OEA_LINKS = list(zip(OEA_LEFT, OEA_RIGHT))
OEA_REL_1 = [(0, "birthPlace", 1), (1, "country", 5), (2, "country", 3), (4, "birthPlace", 2)]
OEA_REL_2 = [(0, "P19", 1), (1, "P17", 5), (2, "P17", 3), (4, "P19", 2)]
OEA_ATTR_1 = [(1, "populationTotal", "1752286"), (0, "birthDate", "1982-04-24"),
              (5, "anthem", "Himnusz\t(national anthem)"), (3, "areaTotal", "")]
OEA_ATTR_2 = [(1, "P1082", "1752286")]


def write_openea(root: Path, *, ent_links: bool = True) -> Path:
    src = root / "OEA_D_W_100K_V1"
    _lines(src / "rel_triples_1", [f"{OEA_LEFT[h]}\thttp://dbpedia.org/ontology/{r}\t{OEA_LEFT[t]}"
                                   for h, r, t in OEA_REL_1])
    _lines(src / "rel_triples_2", [f"{OEA_RIGHT[h]}\t{WD}{r}\t{OEA_RIGHT[t]}" for h, r, t in OEA_REL_2])
    _lines(src / "attr_triples_1", [f"{OEA_LEFT[e]}\thttp://dbpedia.org/ontology/{a}\t{v}"
                                    for e, a, v in OEA_ATTR_1])
    _lines(src / "attr_triples_2", [f"{OEA_RIGHT[e]}\t{WD}{a}\t{v}" for e, a, v in OEA_ATTR_2])
    if ent_links:
        _lines(src / "ent_links", [f"{a}\t{b}" for a, b in OEA_LINKS])
    for fold in range(1, 6):  # 20 % train, 10 % valid, 70 % test, rotated per fold
        order = OEA_LINKS[fold:] + OEA_LINKS[:fold]
        for part, links in (("train", order[:1]), ("valid", order[1:2]), ("test", order[2:])):
            _lines(src / "721_5fold" / str(fold) / f"{part}_links", [f"{a}\t{b}" for a, b in links])
    return src


@pytest.mark.parametrize("ent_links", [True, False], ids=["ent_links", "split-folders-only"])
def test_openea_uri_layout_rows_names_attributes_and_gold(tmp_path, capsys, ent_links):
    src = write_openea(tmp_path, ent_links=ent_links)
    ds = imported(capsys, "openea", src, tmp_path / "ds", "--seed", 2)
    assert ds.counts("entities") == {"left": 6, "right": 6}
    assert ds.counts("triples") == {"left": 4, "right": 4}
    assert ds.counts("relations") == {"left": 2, "right": 2}
    assert ds.counts("attributes") == {"left": 4, "right": 1}
    assert ds.manifest["meta"]["layout"] == "openea-uri"
    # entities numbered by first appearance, then permuted
    first = {s: {} for s in SIDES}
    for side, uris, rel in (("left", OEA_LEFT, OEA_REL_1), ("right", OEA_RIGHT, OEA_REL_2)):
        for h, _, t in rel:
            for e in (h, t):
                first[side].setdefault(uris[e], len(first[side]))
    assert_remapped(ds, first)
    rows = by_uri(ds)
    assert rows["left"][DB + "Barbara_Bush"]["name"] == "Barbara Bush"
    assert rows["right"][WD + "Q28"]["name"] == "Q28"
    assert triple_uris(ds, "right") == {(OEA_RIGHT[h], OEA_RIGHT[t]) for h, _, t in OEA_REL_2}
    uri_of = {r["entity_id"]: u for u, r in rows["left"].items()}
    attrs = {(uri_of[a["entity_id"]], a["attribute"], a["value"])
             for a in ds.table("attributes", side="left").to_pylist()}
    assert attrs == {(OEA_LEFT[1], "http://dbpedia.org/ontology/populationTotal", "1752286"),
                     (OEA_LEFT[0], "http://dbpedia.org/ontology/birthDate", "1982-04-24"),
                     (OEA_LEFT[5], "http://dbpedia.org/ontology/anthem", "Himnusz (national anthem)"),
                     (OEA_LEFT[3], "http://dbpedia.org/ontology/areaTotal", None)}
    assert gold_uris(ds) == set(OEA_LINKS)  # every link once: the union of all files
    assert ds.counts("gold") == {"all": len(OEA_LINKS)}
    assert ds.manifest["meta"]["gold_file"].startswith("ent_links+" if ent_links else "721_5fold/1/")


def test_openea_id_layout_still_preferred_when_present(tmp_path, capsys):
    src = write_openea(tmp_path)
    _lines(src / "ent_ids_1", [f"{i}\t{u}" for i, u in enumerate(OEA_LEFT)])
    _lines(src / "ent_ids_2", [f"{i + 10}\t{u}" for i, u in enumerate(OEA_RIGHT)])
    _lines(src / "triples_1", ["0\t0\t1"])
    _lines(src / "triples_2", ["10\t0\t11"])
    _lines(src / "ref_ent_ids", ["0\t10"])
    ds = imported(capsys, "openea", src, tmp_path / "ds")
    assert ds.manifest["meta"]["layout"] == "ids"
    assert ds.counts("gold") == {"all": 1}


def test_openea_bad_relation_triple_columns(tmp_path, capsys):
    src = write_openea(tmp_path)
    n = _append(src / "rel_triples_1", f"{OEA_LEFT[0]}\thttp://dbpedia.org/ontology/spouse")
    assert_refused(capsys, "openea", src, tmp_path, f"{src}/rel_triples_1:{n}", "malformed line")


def test_openea_bad_split_link_to_unknown_entity(tmp_path, capsys):
    src = write_openea(tmp_path)
    name = "721_5fold/3/test_links"
    n = _append(src / name, f"{DB}Nowhere\t{OEA_RIGHT[0]}")
    assert_refused(capsys, "openea", src, tmp_path, f"{src}/{name}:{n}", "unknown left entity")


def test_openea_bad_attribute_of_unknown_entity(tmp_path, capsys):
    src = write_openea(tmp_path)
    n = _append(src / "attr_triples_2", f"{WD}Q999\t{WD}P1082\t3")
    assert_refused(capsys, "openea", src, tmp_path, f"{src}/attr_triples_2:{n}",
                   "unknown right entity")


def test_openea_bad_missing_second_graph(tmp_path, capsys):
    src = write_openea(tmp_path)
    (src / "rel_triples_2").unlink()
    assert_refused(capsys, "openea", src, tmp_path, f"{src}/rel_triples_2", "no such file")
