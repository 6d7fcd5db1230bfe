"""Encoding on a real local Ray cluster (Ray Data actor pool) into features/<modality>."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest

from psqe_ray.cli import main
from psqe_ray.config import EncodeConfig
from psqe_ray.distributed.encode import encode_modality
from psqe_ray.encoders.text import TextEncoder
from psqe_ray.io.dataset import Dataset
from psqe_ray.testing.synth import SynthConfig, synthesize

pytestmark = pytest.mark.usefixtures("ray_local", "ray_timeout")


@pytest.fixture(scope="module")
def synth_src(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("synth") / "pair")
    synthesize(url, SynthConfig(entities=150, seed=3, name_missing=0.1, image_files=0.4))
    return url


@pytest.fixture
def dataset(synth_src, tmp_path) -> str:
    url = str(tmp_path / "ds")
    shutil.copytree(synth_src, url)
    return url


def _features(url: str, modality: str):
    t = Dataset(url).table(f"features/{modality}")
    out = {}
    for s in ("left", "right"):
        f = t.filter(pc.equal(t.column("side"), s))
        ids = f.column("entity_id").to_numpy()
        vec = np.stack(f.column("vector").to_numpy(zero_copy_only=False))
        order = np.argsort(ids)
        out[s] = (ids[order], vec[order], f.column("present").to_numpy(zero_copy_only=False)[order])
    return out


def test_names_encoded_per_entity_and_skipped_when_current(dataset, tiny_bert_dir):
    cfg = EncodeConfig(name_model=tiny_bert_dir, text_batch_size=16, workers=2)
    res = encode_modality(dataset, "name", cfg)
    assert not res.skipped and res.dim == 32 and res.workers == 2
    ds = Dataset(dataset)
    assert ds.has("features/name") and ds.has("entities")
    ent = ds.table("entities")
    feats = _features(dataset, "name")
    enc = TextEncoder(tiny_bert_dir)
    for s in ("left", "right"):
        e = ent.filter(pc.equal(ent.column("side"), s))
        names = dict(zip(e.column("entity_id").to_pylist(), e.column("name").to_pylist()))
        ids, vec, present = feats[s]
        assert ids.tolist() == list(range(len(names)))
        assert present.tolist() == [bool(names[i]) for i in ids.tolist()]
        assert 0 < present.sum() < len(ids)  # some names are missing (name_missing=0.1)
        assert not vec[~present].any()
        some = ids[present][:5]
        np.testing.assert_allclose(vec[some], enc.encode([names[i] for i in some.tolist()]),
                                   atol=1e-5)
    manifest = json.loads(open(os.path.join(dataset, "_MANIFEST.json")).read())
    assert manifest["meta"]["encoded"]["name"] and manifest["tables"]["features/name"]["dim"] == 32
    again = encode_modality(dataset, "name", cfg)
    assert again.skipped
    assert Dataset(dataset).manifest["fingerprint"] == manifest["fingerprint"]


def test_relation_text_is_the_mean_over_incident_triples(dataset, tiny_bert_dir):
    res = encode_modality(dataset, "relation", EncodeConfig(relation_model=tiny_bert_dir))
    ds = Dataset(dataset)
    rel = ds.table("relations", side="left")
    tri = ds.table("triples", side="left")
    name_of = dict(zip(rel.column("relation_id").to_pylist(), rel.column("name").to_pylist()))
    assert res.units == len(set(ds.table("relations").column("name").to_pylist()))
    ids, vec, present = _features(dataset, "relation")["left"]
    heads, rels, tails = (tri.column(c).to_numpy() for c in ("head", "relation", "tail"))
    enc = TextEncoder(tiny_bert_dir)
    for e in np.flatnonzero(present)[:3].tolist():
        incident = np.concatenate([rels[heads == e], rels[tails == e]])
        expect = enc.encode([name_of[r] for r in incident.tolist()]).mean(axis=0)
        np.testing.assert_allclose(vec[e], expect, atol=1e-5)
    isolated = np.setdiff1d(np.arange(len(ids)), np.concatenate([heads, tails]))
    assert not present[isolated].any()


def test_images_encoded_corrupt_files_counted_not_fatal(dataset, tiny_resnet_file):
    ds = Dataset(dataset)
    img = ds.table("images")
    urls = [u for u in img.column("url").to_pylist() if u]
    assert len(urls) > 10
    with open(ds.url_of(urls[0]), "wb") as fh:  # corrupt one file in place
        fh.write(b"not a png at all")
    os.remove(ds.url_of(urls[1]))  # and lose another
    cfg = EncodeConfig(image_arch="resnet18", image_weights=tiny_resnet_file, image_size=64,
                       image_batch_size=8, workers=2)
    res = encode_modality(dataset, "image", cfg)
    assert res.failed == 2 and len(res.failures) == 2 and res.units == len(urls)
    assert res.present == len(urls) - 2 and res.dim == 512
    f = _features(dataset, "image")
    assert sum(int(p.sum()) for _, _, p in f.values()) == len(urls) - 2
    # per-node accounting: the pool's actors read every image file there is and the weights
    (node,) = res.nodes.values()
    assert 1 <= node["actors"]["encode-image"] <= 2 and node["tasks"] == {}
    files = sum(os.path.getsize(ds.url_of(u)) for u in urls[:1] + urls[2:])
    assert node["bytes_from_storage"] >= files + os.path.getsize(tiny_resnet_file)
    assert node["bytes_from_objects"] > 0 and node["driver_bytes_read"] > 0


def test_cli_encode_and_bad_model_leaves_dataset_untouched(dataset, tiny_bert_dir, tmp_path, capsys):
    before = sorted(os.listdir(dataset))
    manifest = open(os.path.join(dataset, "_MANIFEST.json")).read()
    rc = main(["-q", "encode", dataset, "--modality", "attribute", "--model",
               str(tmp_path / "nowhere")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "no such directory" in err
    assert sorted(os.listdir(dataset)) == before
    assert open(os.path.join(dataset, "_MANIFEST.json")).read() == manifest
    rc = main(["-q", "encode", dataset, "--modality", "attribute", "--model", tiny_bert_dir,
               "--batch-size", "8", "--workers", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["modality"] == "attribute" and out["present"] > 0
    assert Dataset(dataset).has("features/attribute")


def test_seeds_job_encodes_first_and_uses_the_table(dataset, tiny_bert_dir, tmp_path, capsys):
    out = str(tmp_path / "seeds")
    rc = main(["-q", "seeds", dataset, out, "--method", "uvp", "--modalities", "name",
               "--set", f"encode.name_model={tiny_bert_dir}", "--set", "stage1.budget=50"])
    assert rc == 0
    report = json.loads(open(os.path.join(out, "report.json")).read())
    # a text model's vectors are centred per graph (features.centre_text)
    assert report["feature_sources"] == {"name": "features/name, centred per graph"}
    assert Dataset(dataset).has("features/name")


@pytest.fixture
def hanging_image_url():
    """An http URL whose server accepts connections and never answers."""
    from psqe_ray.testing.outage import silent_server

    with silent_server("/img/never.png") as url:
        yield url


def test_a_hanging_image_url_counts_as_unreadable_after_the_timeout(dataset, tiny_resnet_file,
                                                                     hanging_image_url):
    """``encode.image_timeout`` reaches the Ray Data encoder: a server that never answers
    costs that many seconds (not aiohttp's 300 s, nor the 30 s default) and the image is
    counted unreadable, like a missing file; the job completes."""
    import time

    import pyarrow as pa

    from psqe_ray.io.writer import DatasetWriter

    img = Dataset(dataset).table("images")
    urls = img.column("url").to_pylist()
    urls[0] = hanging_image_url
    with DatasetWriter(dataset, stage="hang", fingerprint="hanging-image", update=True) as w:
        w.write("images", img.set_column(2, "url", pa.array(urls, pa.string())))
        w.commit()
    cfg = EncodeConfig(image_arch="resnet18", image_weights=tiny_resnet_file, image_size=64,
                       image_batch_size=8, workers=1, image_timeout=1.0)
    t = time.monotonic()
    res = encode_modality(dataset, "image", cfg)
    took = time.monotonic() - t
    assert res.failed == 1 and res.failures[0].startswith(hanging_image_url + ": ")
    assert res.present == len(urls) - 1 - sum(u is None for u in urls)
    assert took < 28, took  # the default (30 s) alone would exceed this


def test_relations_that_are_ids_only_have_nothing_to_encode(tmp_path, tiny_bert_dir):
    """DBP15K's id layout (no rel_ids file, no attribute triples): neither relation nor
    attribute text can be encoded.  The error is the one the pipeline's default model
    (``auto``) skips, naming the table; the dataset is left as it was."""
    from psqe_ray.errors import NothingToEncode
    from psqe_ray.io.importers import import_pair

    src = tmp_path / "src"
    src.mkdir()
    rows = {"ent_ids_1": [(0, "http://fr.dbpedia.org/resource/Paris"),
                          (1, "http://fr.dbpedia.org/resource/Lyon")],
            "ent_ids_2": [(10, "http://dbpedia.org/resource/Paris"),
                          (11, "http://dbpedia.org/resource/Lyon")],
            "triples_1": [(0, 100, 1)], "triples_2": [(10, 200, 11)],
            "ill_ent_ids": [(0, 10), (1, 11)]}
    for name, lines in rows.items():
        (src / name).write_text("".join("\t".join(map(str, r)) + "\n" for r in lines))
    ds = str(tmp_path / "ds")
    import_pair("dbp15k", str(src), ds)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir() if p.is_file()}
    with pytest.raises(NothingToEncode, match="relations are ids only") as err:
        encode_modality(ds, "relation", EncodeConfig(relation_model=tiny_bert_dir))
    assert "relations" in str(err.value)
    with pytest.raises(NothingToEncode, match="attributes: attribute text needs"):
        encode_modality(ds, "attribute", EncodeConfig(attribute_model=tiny_bert_dir))
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir() if p.is_file()} == before
    assert not Dataset(ds).has("features/relation")
