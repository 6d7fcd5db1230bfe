"""PSQE stages on tiny hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psqe_ray.core.correction import expand_neighbours, mic_keep, schedule
from psqe_ray.core.features import attribute_features, name_features, relation_features
from psqe_ray.core.blocks import chunk_stats, fill_block, fill_stats
from psqe_ray.core.fusion import fuse, l2_normalize
from psqe_ray.core.neighbour_sampler import CSRSampler
from psqe_ray.core.seed_encoder import SeedEncoder, icl_loss
from psqe_ray.core.graph import KGSide
from psqe_ray.core.sampling import cluster_budgets, greedy_seeds, n_clusters, sample_cluster


def test_cluster_budgets_are_proportional_and_exact():
    assert cluster_budgets(np.array([50, 30, 20]), 10).tolist() == [5, 3, 2]
    # 1000 over [1, 1, 1]: 333.33 each, the remainder goes to the smallest cluster id
    assert cluster_budgets(np.array([1, 1, 1]), 1000).tolist() == [334, 333, 333]
    b = cluster_budgets(np.array([7, 0, 13, 5]), 99)
    assert b.sum() == 99 and b[1] == 0


def test_n_clusters_grows_with_n():
    assert n_clusters(40_000, 5, 20_000) == 5
    assert n_clusters(2_000_000, 5, 20_000) == 100
    assert n_clusters(3, 5, 20_000) == 3


def test_sample_cluster_one_to_one_and_budget():
    rng = np.random.default_rng(0)
    left = l2_normalize(rng.standard_normal((30, 8)).astype(np.float32))
    # right = left permuted + a little noise: a unique best partner per entity
    perm = rng.permutation(30)
    right = l2_normalize(left[perm] + 0.01 * rng.standard_normal((30, 8)).astype(np.float32))
    lid = np.arange(100, 130)
    rid = np.arange(200, 230)
    l, r, s = sample_cluster(left, right, lid, rid, budget=12)
    assert len(l) == 12 and len(set(l)) == 12 and len(set(r)) == 12
    assert np.all(np.diff(s) <= 0)
    # every accepted pair is the planted one
    inverse = np.argsort(perm)
    assert np.all(r - 200 == inverse[l - 100])


def test_greedy_seeds_respects_taken():
    x = np.eye(4, dtype=np.float32)
    taken_l = np.array([True, False, False, False])
    l, r, _ = greedy_seeds(x, x, 10, k=4, taken_left=taken_l)
    assert 0 not in l and sorted(l.tolist()) == [1, 2, 3] and np.all(l == r)


def test_mic_removes_exactly_seeds_whose_partner_is_not_the_row_maximum():
    # seed 1's left entity is most similar to seed 2's right entity -> seed 1 goes; the others stay
    left = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 0, 1]], np.float32)
    right = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    assert mic_keep(left, right).tolist() == [True, False, True]
    assert mic_keep(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)).tolist() == []


def _star(n: int, centre: int, leaves: list[int]) -> tuple[np.ndarray, np.ndarray]:
    side = KGSide(n=n, heads=np.array([centre] * len(leaves)), relations=np.zeros(len(leaves), np.int64),
                  tails=np.array(leaves))
    return side.neighbours()


def test_expansion_threshold_schedule_and_no_duplicates():
    # left 0 -- {1,2,3}; right 0 -- {1,2,3}; neighbour i on the left matches i on the right
    adj = _star(5, 0, [1, 2, 3])
    vec = np.eye(5, dtype=np.float32)
    vec_r = vec.copy()
    vec_r[3] = l2_normalize(np.array([[0, 0, 0, 0.7, 0.71]], np.float32))  # cos 0.70 < 0.8
    taken_l = np.zeros(5, bool)
    taken_r = np.zeros(5, bool)
    taken_l[0] = taken_r[0] = True
    taken_r[2] = True  # right 2 is already a seed elsewhere: never reused
    l, r, s, parent = expand_neighbours(np.array([0]), np.array([0]), adj, adj, vec, vec_r,
                                        taken_l, taken_r)
    assert list(zip(l.tolist(), r.tolist())) == [(1, 1)]
    assert np.all(s >= 0.8) and parent.tolist() == [0]
    assert not taken_l[1]  # inputs are not modified
    # candidates cap: at most candidates_start pairs from one seed
    adj6 = _star(9, 0, list(range(1, 9)))
    v = np.eye(9, dtype=np.float32)
    tl = np.zeros(9, bool)
    tr = np.zeros(9, bool)
    tl[0] = tr[0] = True
    l, r, _, _ = expand_neighbours(np.array([0]), np.array([0]), adj6, adj6, v, v, tl, tr,
                                   candidates_start=3, candidates_end=3)
    assert len(l) == 3 and len(set(l)) == 3 and len(set(r)) == 3
    assert schedule(0, 5, 0.8, 0.9) == 0.8 and schedule(4, 5, 0.8, 0.9) == pytest.approx(0.9)


def test_csr_sampler_blocks():
    # path 0-1-2-3-4 plus hub 5 connected to all
    heads = np.array([0, 1, 2, 3, 5, 5, 5, 5, 5])
    tails = np.array([1, 2, 3, 4, 0, 1, 2, 3, 4])
    side = KGSide(n=6, heads=heads, relations=np.zeros(9, np.int64), tails=tails)
    indptr, indices = side.neighbours()
    s = CSRSampler(indptr, indices, np.random.default_rng(0))
    blk = s.layer(np.array([5, 0]), fanout=2)
    assert blk.src_nodes[:2].tolist() == [5, 0] and blk.n_dst == 2
    src, dst = blk.edge_index
    per_dst = np.bincount(dst, minlength=2)
    assert per_dst.tolist() == [3, 3]  # 2 sampled neighbours + self-loop each
    for a, b in zip(src.tolist(), dst.tolist()):
        u, v = blk.src_nodes[a], blk.src_nodes[b]
        assert u == v or u in indices[indptr[v]:indptr[v + 1]]
    full = s.layer(np.array([5]), fanout=None)
    assert sorted(full.src_nodes.tolist()) == [0, 1, 2, 3, 4, 5]
    blocks = s.blocks(np.array([0]), (2, 2))
    assert blocks[-1].n_dst == 1 and blocks[0].n_dst == len(blocks[1].src_nodes)


def test_icl_loss_prefers_aligned_pairs():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    aligned = icl_loss(z, z + 0.01 * torch.randn(16, 8), normalize=True, temperature=0.1)
    shuffled = icl_loss(z, z[torch.randperm(16)], normalize=True, temperature=0.1)
    assert aligned < shuffled


def test_seed_encoder_embeds_all_nodes_consistently():
    torch.manual_seed(0)
    side = KGSide(n=6, heads=np.array([0, 1, 2, 3]), relations=np.zeros(4, np.int64),
                  tails=np.array([1, 2, 3, 4]))
    s = CSRSampler(*side.neighbours(), np.random.default_rng(0))
    feats = {"name": torch.randn(6, 5), "relation": torch.randn(6, 3)}
    model = SeedEncoder({"name": 5, "relation": 3}, "name", dim=4)
    all_ = model.embed_all(feats, s, chunk=4)
    # full-neighbourhood blocks for targets give the same embeddings as the chunked inference
    targets = np.array([2, 5])
    blocks = s.blocks(targets, (None, None))
    with torch.no_grad():
        part = model.embed_targets(feats, targets, blocks)
    np.testing.assert_allclose(part["name"].numpy(), all_["name"][targets], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part["relation"].numpy(), all_["relation"][targets], rtol=1e-5)


def test_features_share_vocabulary_by_name():
    a = KGSide(n=3, heads=np.array([0, 1]), relations=np.array([0, 1]), tails=np.array([1, 2]),
               relation_keys=np.array(["born", "lives"], dtype=object),
               attr_entity=np.array([0, 0, 2]), attr_keys=np.array(["x", "y", "x"], dtype=object))
    b = KGSide(n=2, heads=np.array([0]), relations=np.array([0]), tails=np.array([1]),
               relation_keys=np.array(["lives"], dtype=object),
               attr_entity=np.array([1]), attr_keys=np.array(["x"], dtype=object))
    rel = relation_features(a, b)
    (xl, _), (xr, _) = rel["left"], rel["right"]
    assert xl.shape[1] == xr.shape[1] == 2
    # "lives" is the most frequent key (2 triples' worth of endpoints): column 0
    assert xl[1].tolist() == [1.0, 1.0] and xr[0].tolist() == [1.0, 0.0]
    att = attribute_features(a, b)
    assert att["left"][1].tolist() == [True, False, True]
    x, p = name_features(["Paris", None, "paris", ""])
    assert p.tolist() == [True, False, True, False]
    assert float(x[0] @ x[2]) == pytest.approx(1.0) and not x[1].any()


def test_fusion_weights_and_fill():
    a = {"image": np.array([[1, 0]], np.float32), "name": np.array([[0, 1]], np.float32)}
    b = {"image": np.array([[1, 0]], np.float32), "name": np.array([[1, 0]], np.float32)}
    w = {"image": 0.8, "name": 0.2}
    cos = float(fuse(a, w)[0] @ fuse(b, w)[0])
    assert cos == pytest.approx(0.64 / 0.68, rel=1e-5)  # w_img^2 / (w_img^2 + w_name^2)
    x = np.array([[1, 1], [3, 3], [0, 0]], np.float32)
    present = np.array([True, True, False])
    stats = fill_stats([chunk_stats(x, present, 0)])
    assert stats[0].tolist() == [2, 2] and stats[1].tolist() == [1, 1]  # mean, std of present
    filled = fill_block(x, present, 0, stats, 0, "image", 0)
    assert filled[:2].tolist() == x[:2].tolist() and filled[2].tolist() != [0, 0]


def _brute_greedy(x, y, budget):
    sim = x @ y.T
    order = sorted(((-float(sim[i, j]), i, j) for i in range(len(x)) for j in range(len(y))))
    used_l, used_r, out = set(), set(), []
    for _, i, j in order:
        if i not in used_l and j not in used_r:
            used_l.add(i)
            used_r.add(j)
            out.append((i, j))
            if len(out) == budget:
                break
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_seeds_equals_all_pairs_greedy_with_full_candidates(seed):
    rng = np.random.default_rng(seed)
    x = l2_normalize(rng.standard_normal((25, 6)).astype(np.float32))
    y = l2_normalize(rng.standard_normal((31, 6)).astype(np.float32))
    l, r, _ = greedy_seeds(x, y, 20, k=31)
    assert list(zip(l.tolist(), r.tolist())) == _brute_greedy(x, y, 20)


def test_modality_without_shared_dimensions_is_skipped_with_a_reason():
    from psqe_ray.config import load_config
    from psqe_ray.core.graph import KGPair
    from psqe_ray.core.psqe import SeedGenerator

    def side(prefix: str) -> KGSide:
        return KGSide(n=4, heads=np.array([0, 1, 2]), relations=np.array([0, 1, 0]),
                      tails=np.array([1, 2, 3]),
                      relation_keys=np.array([f"{prefix}:0", f"{prefix}:1"], dtype=object),
                      names=["alpha", "beta", "gamma", "delta"])

    pair = KGPair(side("left"), side("right"))
    gen = SeedGenerator(load_config(None, ["stage1.budget=4"], method="uvp")).fit(pair)
    assert gen.modalities_ == ["name"]
    assert "relation" in gen.skipped_
    assert sorted(zip(gen.seeds_[0].tolist(), gen.seeds_[1].tolist())) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    only_rel = load_config(None, ["stage1.budget=4"], method="uvp", modalities="relation")
    with pytest.raises(ValueError, match="carries a signal shared by both graphs"):
        SeedGenerator(only_rel).fit(pair)


@pytest.mark.parametrize("heads", [1, 3])
def test_lean_gat_equals_pyg_gatconv(heads):
    """The aggregate-then-transform forward computes GATConv's function and gradients,
    multi-edges included."""
    from torch_geometric.nn import GATConv

    from psqe_ray.core.kernels import Adjacency, gat_transformed, gat_untransformed

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    conv = GATConv(6, 4, heads=heads, concat=heads > 1, add_self_loops=False)
    with torch.no_grad():
        conv.bias.normal_()
    n_src, n_dst = 9, 4
    src = np.concatenate([rng.integers(0, n_src, 30), [5, 5], np.arange(n_dst)])
    dst = np.concatenate([rng.integers(0, n_dst, 30), [1, 1], np.arange(n_dst)])
    ei = np.stack([src, dst])
    x = torch.randn(n_src, 6, requires_grad=True)
    shift = torch.randn(conv.lin.weight.shape[0])
    ref = conv((x, x[:n_dst]), torch.from_numpy(ei), size=(n_src, n_dst))
    adj = Adjacency(ei, n_src, n_dst)
    lean = gat_untransformed(conv, x, adj, conv.lin.weight)
    transformed = gat_transformed(conv, conv.lin(x), adj)
    np.testing.assert_allclose(lean.detach(), ref.detach(), atol=1e-5)
    np.testing.assert_allclose(transformed.detach(), ref.detach(), atol=1e-5)
    # a shift inside the projection: conv(x W^T + b) (the folded input layer)
    ref_b = gat_transformed(conv, conv.lin(x) + shift, adj)
    lean_b = gat_untransformed(conv, x, adj, conv.lin.weight, shift)
    np.testing.assert_allclose(lean_b.detach(), ref_b.detach(), atol=1e-5)
    params = [x, conv.lin.weight, conv.att_src, conv.att_dst, conv.bias]
    g_ref = torch.autograd.grad(ref.pow(2).sum(), params)
    g_lean = torch.autograd.grad(lean.pow(2).sum(), params)
    for a, b in zip(g_ref, g_lean):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sparse_linear_matches_dense_with_gradients():
    import scipy.sparse as sp

    from psqe_ray.core.kernels import sparse_linear

    torch.manual_seed(0)
    x = sp.random(20000, 50, density=0.05, format="csr", random_state=0, dtype=np.float32)
    rows = np.random.default_rng(0).permutation(20000)[:9000]
    w = torch.randn(7, 50, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    y = sparse_linear(x, rows, w, b)
    dense = torch.from_numpy(x[rows].toarray())
    ref = dense @ w.T + b
    np.testing.assert_allclose(y.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad(y.pow(2).sum(), [w, b])
    g_ref = torch.autograd.grad(ref.pow(2).sum(), [w, b])
    for a, c in zip(g, g_ref):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-3)


def test_sampler_subsets_are_uniform_and_distinct():
    s = CSRSampler(np.zeros(1, np.int64), np.zeros(0, np.int64), np.random.default_rng(0))
    n = np.array([5, 7, 40, 5])
    draws = np.concatenate([s.subsets(n, 3) for _ in range(4000)])  # (16000, 3)
    assert ((draws >= 0) & (draws < np.tile(n, 4000)[:, None])).all()
    srt = np.sort(draws, axis=1)
    assert (np.diff(srt, axis=1) > 0).all()  # no repeats within a subset
    # every element of range(7) in ~3/7 of the subsets of the second row
    counts = np.bincount(draws[1::4].ravel(), minlength=7) / 4000
    np.testing.assert_allclose(counts, 3 / 7, atol=0.03)
    # every 3-subset of range(5) about equally often (10 subsets)
    codes = (srt[0::4] * [25, 5, 1]).sum(1)
    freq = np.unique(codes, return_counts=True)[1] / 4000
    assert len(freq) == 10 and np.abs(freq - 0.1).max() < 0.025


def test_gat_training_step_is_bitwise_deterministic():
    """Same seed, same gradients to the last bit, at a size where PyTorch's CPU kernels run in
    parallel (advanced-indexing backward is not order-stable there; we avoid it)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, e = 20000, 60000
    side = KGSide(n=n, heads=rng.integers(0, n, e), relations=np.zeros(e, np.int64),
                  tails=rng.integers(0, n, e))
    feats = {"name": sp.random(n, 256, density=0.05, format="csr", random_state=0,
                               dtype=np.float32)}
    targets = rng.choice(n, 2000, replace=False)
    grads = []
    for _ in range(2):
        torch.manual_seed(0)
        s = CSRSampler(*side.neighbours(), np.random.default_rng(1))
        model = SeedEncoder({"name": 256}, "name", dim=64)
        z = model.embed_targets(feats, targets, s.blocks(targets, (10, 5)))["name"]
        icl_loss(z[:1000], z[1000:]).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def _sequential_expand(seed_left, seed_right, adj_left, adj_right, vec_left, vec_right,
                       taken_left, taken_right, *, threshold_start, threshold_end,
                       candidates_start, candidates_end):
    """Oracle: the paper's expansion as one sequential loop (the pre-map-reduce code)."""
    from psqe_ray.core.matching import greedy_one_to_one
    from psqe_ray.core.topk import topk_search

    taken_l, taken_r = taken_left.copy(), taken_right.copy()
    out = []
    total = len(seed_left)
    (ipl, inl), (ipr, inr) = adj_left, adj_right
    for p, (l, r) in enumerate(zip(seed_left.tolist(), seed_right.tolist())):
        nl = inl[ipl[l]:ipl[l + 1]]
        nr = inr[ipr[r]:ipr[r + 1]]
        nl, nr = nl[~taken_l[nl]], nr[~taken_r[nr]]
        if len(nl) == 0 or len(nr) == 0:
            continue
        thr = schedule(p, total, threshold_start, threshold_end)
        cap = int(round(schedule(p, total, candidates_start, candidates_end)))
        k = min(cap, len(nr))
        s, j = topk_search(vec_left[nl], vec_right[nr], k)
        cl, cr, cs = np.repeat(nl, k), nr[j.reshape(-1)], s.reshape(-1)
        acc = greedy_one_to_one(cl, cr, cs, limit=cap, min_score=thr, taken_left=taken_l,
                                taken_right=taken_r)
        taken_l[cl[acc]] = True
        taken_r[cr[acc]] = True
        out += [(int(a), int(b), float(c), p) for a, b, c in zip(cl[acc], cr[acc], cs[acc])]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expansion_map_reduce_matches_sequential_oracle(seed):
    """Partitioned map + reduce == the sequential loop, on random graphs where seeds compete
    for shared neighbours (hubs, near-tied scores, caps that bind)."""
    from psqe_ray.core.correction import expand_from_candidates, expansion_candidates

    rng = np.random.default_rng(seed)
    n, e = 300, 1500
    sides = [KGSide(n=n, heads=rng.integers(0, n, e), relations=np.zeros(e, np.int64),
                    tails=(rng.zipf(1.6, e) - 1) % n) for _ in range(2)]
    adj_l, adj_r = sides[0].neighbours(), sides[1].neighbours()
    base = rng.standard_normal((n, 3)).astype(np.float32)
    vec_l = l2_normalize(base + 0.3 * rng.standard_normal((n, 3)).astype(np.float32))
    vec_r = l2_normalize(base + 0.3 * rng.standard_normal((n, 3)).astype(np.float32))
    vec_r[5] = vec_r[6]  # exact ties
    seeds = rng.choice(n, 60, replace=False)
    sl, sr = seeds, rng.permutation(seeds)
    tl, tr = np.zeros(n, bool), np.zeros(n, bool)
    tl[sl] = tr[sr] = True
    kw = dict(threshold_start=0.5, threshold_end=0.8, candidates_start=4, candidates_end=1)
    oracle = _sequential_expand(sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, **kw)
    assert len(oracle) > 20  # the case exercises competition
    l, r, s, p = expand_neighbours(sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, **kw)
    got = [(int(a), int(b), float(c), int(d)) for a, b, c, d in zip(l, r, s, p)]
    assert got == oracle
    # any split of the seeds into partitions, maps concatenated in any order
    parts = np.array_split(rng.permutation(len(sl)), 4)
    maps = [expansion_candidates(np.sort(q), sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, len(sl),
                                 threshold_start=0.5, threshold_end=0.8) for q in parts[::-1]]
    cand = {k: np.concatenate([m[k] for m in maps]) for k in maps[0]}
    l2, r2, s2, p2 = expand_from_candidates(cand, len(sl), tl, tr, **kw)
    assert [(int(a), int(b), float(c), int(d)) for a, b, c, d in zip(l2, r2, s2, p2)] == oracle


def test_embed_fused_is_the_fusion_of_every_modalitys_embedding():
    """Stage II's learned vectors, made chunk by chunk (never every modality at once), are
    exactly ``fuse(embed(...))``; a zero weight drops its modality from both."""
    import tempfile

    from psqe_ray.config import Stage2Config, load_config
    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.train import (SAMPLE, embed_fused, joint_graph, model_inputs,
                                     new_encoder, stage_rng)
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair
    from psqe_ray.testing.synth import SynthConfig, synthesize

    url = tempfile.mkdtemp() + "/pair"
    synthesize(url, SynthConfig(entities=150, seed=2))
    pair = load_pair(Dataset(url))
    mods, weights = SeedGenerator(load_config(None)).prepare(pair)
    feats = model_inputs(mods)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    model = new_encoder(feats, "relation", Stage2Config(dim=16), 3)
    # 64-row chunks on both sides (chunking changes dense products in the last bits)
    whole = model.embed_all(feats, CSRSampler(graph[0], graph[1], stage_rng(0, SAMPLE)), 64)
    for w in (weights, {**weights, "name": 0.0}):
        assert np.array_equal(embed_fused(model, feats, graph, w, chunk=64), fuse(whole, w))


def _hub_side() -> KGSide:
    """0 -- {1, 2, 3, 4}; 1 -- {5 .. 12}: entity 1 is a hub (degree 9), 0 has degree 4."""
    heads = [0, 0, 0, 0] + [1] * 8
    tails = [1, 2, 3, 4] + list(range(5, 13))
    return KGSide(n=13, heads=np.array(heads), relations=np.zeros(12, np.int64),
                  tails=np.array(tails))


def test_degree_quota_leaves_the_hub_to_the_low_degree_buckets():
    from psqe_ray.core.correction import expand_spread, expansion_candidates

    side = _hub_side()
    adj, deg = side.neighbours(), side.degree()
    vec = np.eye(13, dtype=np.float32)
    tl, tr = np.zeros(13, bool), np.zeros(13, bool)
    tl[0] = tr[0] = True
    seeds = np.array([0])
    cand = expansion_candidates(seeds, seeds, seeds, adj, adj, vec, vec, tl, tr, 1)
    off = expand_spread(cand, seeds, seeds, deg, deg, tl, tr, spread="off")
    assert list(zip(off[0].tolist(), off[1].tolist())) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    # N = 5 seeds; buckets of degree 1 / 4-7 / 8-15 hold 11 / 1 / 1 of 13 entities: budgets
    # 4 / 1 / 0 (largest remainder, tie to the lower bucket); the seed (0, 0) fills 4-7
    got = expand_spread(cand, seeds, seeds, deg, deg, tl, tr, spread="degree")
    assert list(zip(got[0].tolist(), got[1].tolist())) == [(2, 2), (3, 3), (4, 4)]
    with pytest.raises(ValueError, match="spread must be degree or off"):
        expand_spread(cand, seeds, seeds, deg, deg, tl, tr, spread="hub")


def _sequential_spread(sl, sr, sides, vec_l, vec_r, tl, tr, **kw):
    """Oracle for the quota walk: the first walk's size, then the sequential loop with a room
    check on every acceptance (pair by pair, in greedy order)."""
    from psqe_ray.core.seed_quality import bucket_index
    from psqe_ray.core.topk import topk_search

    adj_l, adj_r = sides[0].neighbours(), sides[1].neighbours()
    size = len(sl) + len(_sequential_expand(sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, **kw))
    bl, br = bucket_index(sides[0].degree()), bucket_index(sides[1].degree())
    nb = max(bl.max(), br.max()) + 1
    room_l = np.maximum(cluster_budgets(np.bincount(bl, minlength=nb), size)
                        - np.bincount(bl[sl], minlength=nb), 0)
    room_r = np.maximum(cluster_budgets(np.bincount(br, minlength=nb), size)
                        - np.bincount(br[sr], minlength=nb), 0)
    taken_l, taken_r = tl.copy(), tr.copy()
    (ipl, inl), (ipr, inr) = adj_l, adj_r
    out = []
    for p, (l, r) in enumerate(zip(sl.tolist(), sr.tolist())):
        nl, nr = inl[ipl[l]:ipl[l + 1]], inr[ipr[r]:ipr[r + 1]]
        nl = nl[~taken_l[nl] & (room_l[bl[nl]] > 0)]
        nr = nr[~taken_r[nr] & (room_r[br[nr]] > 0)]
        if len(nl) == 0 or len(nr) == 0:
            continue
        thr = schedule(p, len(sl), kw["threshold_start"], kw["threshold_end"])
        cap = int(round(schedule(p, len(sl), kw["candidates_start"], kw["candidates_end"])))
        k = min(cap, len(nr))
        s, j = topk_search(vec_l[nl], vec_r[nr], k)
        cl, cr, cs = np.repeat(nl, k), nr[j.reshape(-1)], s.reshape(-1)
        n_acc = 0
        for e in np.lexsort((cr, cl, -cs.astype(np.float64))).tolist():
            a, b = int(cl[e]), int(cr[e])
            if n_acc >= cap or float(cs[e]) < thr:
                break
            if taken_l[a] or taken_r[b] or room_l[bl[a]] <= 0 or room_r[br[b]] <= 0:
                continue
            taken_l[a] = taken_r[b] = True
            room_l[bl[a]] -= 1
            room_r[br[b]] -= 1
            n_acc += 1
            out.append((a, b, float(cs[e]), p))
    return out, room_l, room_r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spread_expansion_matches_sequential_oracle_with_rooms(seed):
    """The quota walk (map, then two reduce walks) == a pair-by-pair loop with room checks, on
    random hub-heavy graphs where the rooms bind; no bucket goes over its share."""
    from psqe_ray.core.correction import expand_spread, expansion_candidates

    rng = np.random.default_rng(seed)
    n, e = 300, 1500
    sides = [KGSide(n=n, heads=rng.integers(0, n, e), relations=np.zeros(e, np.int64),
                    tails=(rng.zipf(1.6, e) - 1) % n) for _ in range(2)]
    base = rng.standard_normal((n, 3)).astype(np.float32)
    vec_l = l2_normalize(base + 0.3 * rng.standard_normal((n, 3)).astype(np.float32))
    vec_r = l2_normalize(base + 0.3 * rng.standard_normal((n, 3)).astype(np.float32))
    hubs = np.argsort(-sides[0].degree())[:60]  # seeds on hubs: their buckets fill at once
    sl, sr = hubs, rng.permutation(hubs)
    tl, tr = np.zeros(n, bool), np.zeros(n, bool)
    tl[sl] = tr[sr] = True
    kw = dict(threshold_start=0.5, threshold_end=0.8, candidates_start=4, candidates_end=1)
    oracle, room_l, room_r = _sequential_spread(sl, sr, sides, vec_l, vec_r, tl, tr, **kw)
    adj_l, adj_r = sides[0].neighbours(), sides[1].neighbours()
    plain = _sequential_expand(sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, **kw)
    assert len(oracle) > 10 and oracle != plain  # the rooms bind
    assert room_l.min() >= 0 and room_r.min() >= 0
    parts = np.array_split(rng.permutation(len(sl)), 3)
    maps = [expansion_candidates(np.sort(q), sl, sr, adj_l, adj_r, vec_l, vec_r, tl, tr, len(sl),
                                 threshold_start=0.5, threshold_end=0.8) for q in parts]
    cand = {k: np.concatenate([m[k] for m in maps]) for k in maps[0]}
    got = expand_spread(cand, sl, sr, sides[0].degree(), sides[1].degree(), tl, tr, **kw)
    assert [(int(a), int(b), float(c), int(d)) for a, b, c, d in zip(*got)] == oracle


def test_stage3_spread_setting_is_checked():
    from psqe_ray.config import PSQEConfig, Stage3Config
    from psqe_ray.errors import ConfigError

    PSQEConfig(stage3=Stage3Config(spread="off")).check()
    with pytest.raises(ConfigError, match="stage3.spread must be degree or off"):
        PSQEConfig(stage3=Stage3Config(spread="hubs")).check()
