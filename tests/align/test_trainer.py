"""The aligner skeleton and its four recipes on a small synthetic pair with a planted alignment."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from psqe_ray.align.losses import ial_loss, mi_loss, momentum_icl, nca_loss
from psqe_ray.align.model import STRUCTURE, AlignModel, feature_base
from psqe_ray.align.recipes import RECIPES, get_recipe
from psqe_ray.align.model import structure_input
from psqe_ray.align.mutual import mutual_nearest, still_mutual
from psqe_ray.align.trainer import Aligner
from psqe_ray.config import AlignConfig, load_config
from psqe_ray.core.alignment_quality import alignment_metrics
from psqe_ray.core.neighbour_sampler import CSRSampler
from psqe_ray.core.seed_encoder import project, propagate_full
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.train import joint_graph, model_inputs
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.load import load_pair
from psqe_ray.testing.synth import SynthConfig, synthesize

FAST = AlignConfig(dim=32, epochs=25, round_epochs=4, batch_size=128, match_rounds=0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(feats, graph, n_left, gold) of a 300-entity pair whose names are heavily corrupted, so
    the structure branch has to help."""
    url = str(tmp_path_factory.mktemp("align") / "pair")
    synthesize(url, SynthConfig(entities=300, seed=3, name_noise=0.35))
    pair = load_pair(Dataset(url))
    mods, _ = SeedGenerator(load_config(None, modalities="name,relation")).prepare(pair)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    return model_inputs(mods), graph, pair.left.n, pair.gold


def _seeds(gold, share=0.3, wrong=0.0, seed=0):
    """A share of the gold pairs as pseudo seeds, some of them with a wrong partner."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(gold[0]), int(share * len(gold[0])), replace=False))
    left, right = gold[0][pick].copy(), gold[1][pick].copy()
    bad = rng.random(len(pick)) < wrong
    right[bad] = np.roll(right[bad], 1)
    return left, right


def test_losses_prefer_the_true_pairs():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    near = z + 0.05 * torch.randn(16, 8)
    shuffled = near[torch.randperm(16)]
    assert nca_loss(z, near) < nca_loss(z, shuffled)
    assert momentum_icl(z, near, z, near, 0.1) < momentum_icl(z, shuffled, z, shuffled, 0.1)
    assert mi_loss(z, near, 0.1) < mi_loss(z, shuffled, 0.1)
    # a modality whose similarities are the joint one's has nothing left to learn
    assert float(ial_loss(z, near, z, near)) == pytest.approx(0.0, abs=1e-6)
    assert float(ial_loss(z, near, z, shuffled)) > 0.01


def test_mutual_nearest_on_known_vectors():
    left = np.eye(4, dtype=np.float32)
    right = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0, 1]], np.float32)
    l, r = mutual_nearest(left, right, np.ones(4, bool), np.ones(4, bool))
    assert list(zip(l.tolist(), r.tolist())) == [(0, 1), (1, 0), (3, 3)]
    # right 1 is taken: left 0's nearest free partner is right 2, and right 2's is left 0
    free_r = np.array([True, False, True, True])
    l, r = mutual_nearest(left, right, np.ones(4, bool), free_r)
    assert list(zip(l.tolist(), r.tolist())) == [(0, 2), (1, 0), (3, 3)]
    # left 3 taken too: right 3's nearest free left is 0 (tie at 0, smaller id), not mutual
    l, r = mutual_nearest(left, right, np.array([True, True, True, False]), free_r)
    assert list(zip(l.tolist(), r.tolist())) == [(0, 2), (1, 0)]



@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_mutual_nearest_searches_back_only_what_it_needs(index):
    """The way back searched for the pointed-to entities only, and the calibration's check of
    given pairs, equal the definitions: every nearest neighbour both ways, then the pairs."""
    from psqe_ray.core.search import Searcher

    rng = np.random.default_rng(3)
    left = rng.standard_normal((300, 16)).astype(np.float32)
    right = (left[rng.permutation(300)] + 0.8 * rng.standard_normal((300, 16))).astype(np.float32)
    other = (right + 0.5 * rng.standard_normal((300, 16))).astype(np.float32)
    free_l, free_r = rng.random(300) < 0.8, rng.random(300) < 0.8
    searcher = Searcher(index=index, nlist=8, nprobe=2, seed=1)

    def definition(lv, rv):
        fl, fr = np.flatnonzero(free_l), np.flatnonzero(free_r)
        l2r = fr[searcher.topk(lv[fl], rv[fr], 1)[1][:, 0]]
        r2l = fl[searcher.topk(rv[fr], lv[fl], 1)[1][:, 0]]
        back = dict(zip(fr.tolist(), r2l.tolist()))
        return {(a, b) for a, b in zip(fl.tolist(), l2r.tolist()) if back[b] == a}

    l, r = mutual_nearest(left, right, free_l, free_r, searcher)
    want = definition(left, right)
    assert set(zip(l.tolist(), r.tolist())) == want and len(want) > 20
    agree = still_mutual(left, other, free_l, free_r, l, r, searcher)
    assert {p for p, a in zip(zip(l.tolist(), r.tolist()), agree) if a} == \
        want & definition(left, other)
    assert 0 < agree.sum() < len(agree)

def test_model_fusion_weights():
    m = AlignModel({"name": 5}, n_nodes=6, dim=4, fusion="entity")
    emb = {STRUCTURE: torch.randn(6, 4), "name": torch.randn(6, 4)}
    joint, w = m.fuse(emb)
    assert joint.shape == (6, 8) and w.shape == (6, 2)
    assert torch.allclose(w.sum(1), torch.ones(6))
    assert not torch.allclose(w[0], w[1])  # per-entity weights
    g = AlignModel({"name": 5}, n_nodes=6, dim=4, fusion="global")
    assert torch.allclose(g.fuse(emb)[1][0], g.fuse(emb)[1][5])


def test_feature_base_projects_every_entity(inputs):
    """The ``features`` structure input: deterministic, one row per entity, and a projection
    that keeps similarities: entities with equal features get equal rows, and the projection's
    inner products follow those of the normalised features."""
    feats, _, n_left, gold = inputs
    a, b = feature_base(feats, 64, seed=5), feature_base(feats, 64, seed=5)
    n = next(iter(feats.values())).shape[0]
    assert a.shape == (n, 64) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, feature_base(feats, 64, seed=6))
    twin = {m: (torch.cat([f, f[:1]]) if isinstance(f, torch.Tensor)
                else __import__("scipy.sparse").sparse.vstack([f, f[:1]]).tocsr())
            for m, f in feats.items()}
    t = feature_base(twin, 64, seed=5)
    assert torch.allclose(t[-1], t[0]) and torch.allclose(t[:-1], a)
    # gold partners (similar features) are closer in the projection than random pairs
    x = torch.nn.functional.normalize(a, dim=1).numpy()
    gl, gr = gold[0], gold[1] + n_left
    rng = np.random.default_rng(0)
    assert (x[gl] * x[gr]).sum(1).mean() > (x[gl] * x[rng.permutation(gr)]).sum(1).mean() + 0.1


def test_feature_structure_has_no_per_entity_parameters(inputs):
    feats, graph, n_left, gold = inputs
    n = len(graph[0]) - 1
    dims = {m: f.shape[1] for m, f in feats.items()}
    small = AlignModel(dims, n, dim=16, base=feature_base(feats, 16, 0))
    free = AlignModel(dims, n, dim=16)
    assert "structure" not in small.state_dict() and "structure" in free.state_dict()
    assert sum(p.numel() for p in free.parameters()) - sum(
        p.numel() for p in small.parameters()) == n * 16
    with pytest.raises(ValueError, match="structure base"):
        AlignModel(dims, n, dim=16, base=torch.zeros(n, 8))


def test_feature_structure_aligns_unseeded_entities_better_with_few_seeds(inputs):
    """With 5 % seeds, the structure branch over features ranks the gold partners of the
    entities no seed touches better than EVA's free per-entity embedding, which those entities
    never train (measured on this pair: Hits@1 .32 against .23)."""
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold, share=0.05)
    unseeded = ~np.isin(gold[0], seeds[0])
    hits = {}
    for structure in ("features", "free"):
        a = Aligner(replace(FAST, recipe="pcmea", structure=structure), 1).fit(
            feats, graph, n_left, *seeds)
        assert a.structure_ == structure
        hits[structure] = alignment_metrics(*a.embeddings_, gold[0][unseeded],
                                            gold[1][unseeded])["hits@1"]
    assert hits["features"] > hits["free"] + 0.03, hits


def test_structure_auto_follows_the_seed_share():
    assert structure_input("auto", 199, 1000, 5000) == "features"
    assert structure_input("auto", 200, 1000, 5000) == "free"  # 20 % of the smaller side
    assert structure_input("auto", 200, 5000, 1000) == "free"
    assert structure_input("auto", 0, 0, 0) == "features"
    for fixed in ("features", "free", "init"):
        assert structure_input(fixed, 10 ** 6, 10, 10) == fixed
    with pytest.raises(Exception, match="align.structure"):
        load_config(None, ["align.structure=learned"])
    with pytest.raises(Exception, match="align.ranking must be balanced, csls, plain, got 'cosine'"):
        load_config(None, ["align.ranking=cosine"])


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_learns_from_seeds(inputs, recipe):
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold)
    cfg = replace(FAST, recipe=recipe)
    trained = Aligner(cfg, random_state=1).fit(feats, graph, n_left, *seeds)
    untrained = Aligner(replace(cfg, epochs=0, rounds=0), random_state=1).fit(
        feats, graph, n_left, *seeds)
    after = alignment_metrics(*trained.embeddings_, *gold)["hits@1"]
    before = alignment_metrics(*untrained.embeddings_, *gold)["hits@1"]
    assert after > before + 0.1, (recipe, before, after)
    width = 32 * len(trained.modality_weights_)  # the joint vector; then the smoothing hops
    hops = trained.smoothing_["hops"]
    assert trained.embeddings_[0].shape == (n_left, width * (hops + 1))
    own = trained.embeddings_[0][:, :width] * np.sqrt(hops + 1)
    assert np.allclose(np.linalg.norm(own, axis=1), 1.0, atol=1e-4)
    assert sum(trained.modality_weights_.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(trained.added_) == (get_recipe(recipe).rounds)


def test_deterministic_given_the_seed(inputs):
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold)
    cfg = replace(FAST, recipe="pcmea", epochs=5)
    a = Aligner(cfg, random_state=7).fit(feats, graph, n_left, *seeds)
    b = Aligner(cfg, random_state=7).fit(feats, graph, n_left, *seeds)
    c = Aligner(cfg, random_state=8).fit(feats, graph, n_left, *seeds)
    assert np.array_equal(a.embeddings_[0], b.embeddings_[0]) and a.added_ == b.added_
    assert not np.array_equal(a.embeddings_[0], c.embeddings_[0])


def test_smoothing_appends_hops_to_the_trained_vectors_and_helps(inputs):
    """align.smooth is post-hoc: the same training, the joint vector kept as the first block
    (scaled), neighbourhood means after it; on the synthetic pair it ranks better."""
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold)
    cfg = replace(FAST, recipe="pcmea", epochs=5, rounds=0)
    plain = Aligner(replace(cfg, smooth=0), random_state=7).fit(feats, graph, n_left, *seeds)
    smoothed = Aligner(replace(cfg, smooth=2), random_state=7).fit(feats, graph, n_left, *seeds)
    width = plain.embeddings_[0].shape[1]
    for p, s in zip(plain.embeddings_, smoothed.embeddings_):
        assert s.shape == (p.shape[0], 3 * width)
        np.testing.assert_allclose(s[:, :width], p / np.sqrt(3), rtol=1e-6, atol=1e-7)
    before = alignment_metrics(*plain.embeddings_, *gold)["hits@1"]
    after = alignment_metrics(*smoothed.embeddings_, *gold)["hits@1"]
    assert after > before, (before, after)
    assert smoothed.smoothing_ == {"hops": 2, "chosen_by": "setting"}
    # auto (-1): hop counts tried while they add mutual nearest pairs; the last one kept
    auto = Aligner(replace(cfg, smooth=-1), random_state=7).fit(feats, graph, n_left, *seeds)
    counts = {int(h): c for h, c in auto.smoothing_["mutual_nearest"].items()}
    chosen = auto.smoothing_["hops"]
    assert list(counts) == list(range(len(counts))) and chosen in counts
    assert all(counts[h] > counts[h - 1] for h in range(1, chosen + 1))
    assert chosen == max(counts) or counts[chosen + 1] <= counts[chosen]
    assert auto.embeddings_[0].shape[1] == (chosen + 1) * width
    expect = plain.embeddings_ if chosen == 0 else Aligner(
        replace(cfg, smooth=chosen), random_state=7).fit(feats, graph, n_left, *seeds).embeddings_
    assert all(np.array_equal(a, b) for a, b in zip(auto.embeddings_, expect))


def test_iterative_filters(inputs):
    """EVA adds mutual nearest neighbours at the first check; MEAformer's stability filter
    adds nothing until a pair has been a mutual nearest neighbour twice; added pairs are
    among the free entities only."""
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold)
    eva = Aligner(replace(FAST, recipe="eva", rounds=2), 1).fit(feats, graph, n_left, *seeds)
    mea = Aligner(replace(FAST, recipe="meaformer", rounds=2), 1).fit(
        feats, graph, n_left, *seeds)
    assert eva.added_[0] > 0 and mea.added_[0] == 0 and mea.added_[1] > 0
    for a in (eva, mea):
        pl, pr = a.pairs_
        assert len(pl) == len(seeds[0]) + sum(a.added_)
        assert len(set(pl.tolist())) == len(pl) and len(set(pr.tolist())) == len(pr)
    # the added pairs are far better than chance on this noisy planted pair
    gold_set = set(zip(gold[0].tolist(), gold[1].tolist()))
    added = list(zip(*(x[len(seeds[0]):].tolist() for x in eva.pairs_)))
    assert sum(p in gold_set for p in added) > 0.2 * len(added)  # chance: < 1 %


def test_a_match_round_trains_on_the_one_to_one_matches(inputs):
    """``match_rounds``: the check after the last iterative round is the final assignment
    (smoothing, Sinkhorn on the candidate graph); its matches replace the training pairs."""
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold, share=0.2)
    a = Aligner(replace(FAST, recipe="eva", rounds=1, match_rounds=1), 1).fit(
        feats, graph, n_left, *seeds)
    assert len(a.added_) == 1 and a.matched_ == [len(a.pairs_[0])]
    pl, pr = a.pairs_
    assert len(set(pl.tolist())) == len(pl) and len(set(pr.tolist())) == len(pr)
    assert len(pl) > len(seeds[0]) + a.added_[0]  # the matches cover more than seeds + MNN
    assert Aligner(replace(FAST, recipe="eva", rounds=1), 1).fit(
        feats, graph, n_left, *seeds).matched_ == []  # match_rounds=0 (FAST)
    gold_set = set(zip(gold[0].tolist(), gold[1].tolist()))
    assert sum(p in gold_set for p in zip(pl.tolist(), pr.tolist())) > 0.2 * len(pl)  # chance: < 1 %


def test_better_seeds_give_a_better_aligner(inputs):
    """The claim PSQE rests on, in miniature: the same recipe on cleaner seeds aligns better."""
    feats, graph, n_left, gold = inputs
    cfg = replace(FAST, recipe="mclea")
    clean = Aligner(cfg, 1).fit(feats, graph, n_left, *_seeds(gold, wrong=0.0))
    noisy = Aligner(cfg, 1).fit(feats, graph, n_left, *_seeds(gold, wrong=0.6))
    assert (alignment_metrics(*clean.embeddings_, *gold)["hits@1"]
            > alignment_metrics(*noisy.embeddings_, *gold)["hits@1"])


def test_epoch_pairs_bounds_the_steps_per_epoch(inputs):
    """The size rule: below ``epoch_pairs`` an epoch visits every pair (the same training as
    without a cap); above it, a sample of that many, so the steps per epoch stop growing."""
    feats, graph, n_left, gold = inputs
    seeds = _seeds(gold)
    n = len(seeds[0])
    assert n > 40
    cfg = replace(FAST, recipe="eva", epochs=3, rounds=0, batch_size=16)
    whole = Aligner(replace(cfg, epoch_pairs=0), 1).fit(feats, graph, n_left, *seeds)
    above = Aligner(replace(cfg, epoch_pairs=1000), 1).fit(feats, graph, n_left, *seeds)
    capped = Aligner(replace(cfg, epoch_pairs=32), 1).fit(feats, graph, n_left, *seeds)
    # one step per batch of 16 (a last batch under two pairs is skipped)
    per_epoch = n // 16 + (n % 16 >= 2)
    assert whole.steps_ == above.steps_ == 3 * per_epoch
    assert np.array_equal(whole.embeddings_[0], above.embeddings_[0])
    assert capped.steps_ == 3 * 2  # 32 pairs per epoch
    assert not np.array_equal(whole.embeddings_[0], capped.embeddings_[0])


def test_joint_all_is_every_branch_fused_row_by_row(inputs):
    """The joint vectors of every entity, made chunk by chunk (never every branch at once),
    are the model's fusion of its branch vectors, L2-normalised."""
    feats, graph, n_left, gold = inputs
    a = Aligner(replace(FAST, recipe="meaformer", epochs=2, rounds=0), 1).fit(
        feats, graph, n_left, *_seeds(gold))
    model = a.model_
    full = CSRSampler(graph[0], graph[1], np.random.default_rng(0))
    joint, weights = model.joint_all(feats, full, chunk=64)
    with torch.no_grad():
        n = len(graph[0]) - 1
        emb = {STRUCTURE: propagate_full(model.convs, model.structure.detach(), full, 64),
               **{m: project(model.inp[m], feats[m], np.arange(n)) for m in model.inp}}
        j, w = model.fuse(emb)
    assert joint.shape == (n, j.shape[1])
    assert np.allclose(joint, torch.nn.functional.normalize(j, dim=1).numpy(), atol=1e-5)
    assert np.allclose(weights, w.mean(0).numpy(), atol=1e-5)
