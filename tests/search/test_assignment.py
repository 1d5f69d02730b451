import itertools

import pytest
import torch

from ricea_pyg.search import (
    dense_similarity,
    greedy_matching,
    hungarian_assignment,
    one_to_one_assignment,
    one_to_one_hits,
    pair_precision_recall,
    sinkhorn,
    sparse_sinkhorn,
    topk_candidates,
    true_ranks,
)


def brute_force(scores, threshold=None):
    """Best total over all matchings (of min(n, m) pairs, or of any size,
    worth score - threshold each, with a threshold)."""
    n, m = scores.shape
    if n > m:
        return brute_force(scores.t(), threshold)
    best = float('-inf')
    for cols in itertools.permutations(range(m), n):
        vals = scores[torch.arange(n), torch.tensor(cols)]
        total = vals.sum() if threshold is None else \
            (vals - threshold).clamp_min(0).sum()
        best = max(best, float(total))
    return best


def python_greedy(index, values):
    order = sorted(range(values.numel()), key=lambda e: (-float(values[e]),
                                                         e))
    used_r, used_c, chosen = set(), set(), []
    for e in order:
        r, c = int(index[0, e]), int(index[1, e])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            chosen.append(e)
    return sorted(chosen, key=lambda e: int(index[0, e]))


def planted(n=60, d=16, noise=0.9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    t = torch.empty_like(s)
    t[perm] = s + noise * torch.randn(n, d, generator=gen)
    return s, t, torch.stack([torch.arange(n), perm])


@pytest.mark.parametrize('shape', [(5, 5), (4, 6), (6, 4), (1, 3)])
def test_hungarian_is_optimal(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    scores = torch.randn(*shape, generator=gen)
    pairs, values = hungarian_assignment(scores)
    assert pairs.size(1) == min(shape)
    assert pairs[0].unique().numel() == pairs[1].unique().numel() == \
        min(shape)  # one-to-one
    assert torch.equal(values, scores[pairs[0], pairs[1]])
    assert float(values.sum()) == pytest.approx(brute_force(scores),
                                                abs=1e-5)


@pytest.mark.parametrize('shape', [(5, 5), (4, 6)])
def test_hungarian_threshold_is_the_best_partial_matching(shape):
    gen = torch.Generator().manual_seed(7)
    scores = torch.rand(*shape, generator=gen)
    pairs, values = hungarian_assignment(scores, threshold=0.6)
    assert (values >= 0.6).all()
    best = brute_force(scores, 0.6)
    assert float((values - 0.6).sum()) == pytest.approx(best, abs=1e-5)
    # Filtering the plain assignment afterwards is not the same (here worse).
    plain = hungarian_assignment(scores)[1]
    filtered = float((plain - 0.6).clamp_min(0).sum())
    if shape == (5, 5):
        assert filtered < best - 1e-3
    else:  # here the plain optimum happens to contain the best one
        assert filtered == pytest.approx(best, abs=1e-5)


@pytest.mark.parametrize('shape,csls_k', [((8, 8), 0), ((7, 9), 3),
                                          ((9, 7), 2)])
def test_sparse_sinkhorn_equals_dense_when_k_is_n(shape, csls_k):
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(shape[0], 5, generator=gen), \
        torch.randn(shape[1], 5, generator=gen)
    index, scores = topk_candidates(s, t, min(shape), csls_k)
    assert index.size(1) == shape[0] * shape[1]  # every pair, once
    dense = dense_similarity(s, t, csls_k)
    assert torch.allclose(scores, dense[index[0], index[1]], atol=1e-5)
    ref = sinkhorn(dense, temperature=0.1, iterations=10)
    out = sparse_sinkhorn(index, scores, shape, temperature=0.1,
                          iterations=10)
    assert torch.allclose(out, ref[index[0], index[1]], atol=1e-5)
    assert torch.allclose(ref.sum(1), torch.ones(shape[0]), atol=1e-5)
    # Columns reach mass N_s / N_t when the rows are normalised first.
    col = sinkhorn(dense, 0.1, 200).sum(0)
    assert torch.allclose(col, torch.full_like(col, shape[0] / shape[1]),
                          atol=1e-3)


def test_sparse_sinkhorn_on_partial_candidates_is_row_stochastic():
    s, t, _ = planted(40)
    index, scores = topk_candidates(s, t, 5, symmetric=False)
    assert index.size(1) == 40 * 5
    prob = sparse_sinkhorn(index, scores, (40, 40))
    row_sum = torch.zeros(40).index_add_(0, index[0], prob)
    assert torch.allclose(row_sum, torch.ones(40), atol=1e-5)
    sym, _ = topk_candidates(s, t, 5)  # every target gets candidates too
    assert sym[1].unique().numel() == 40 and sym.size(1) > 200


def test_greedy_matching_is_not_best_proposal():
    # Rows A=0, B=1, C=2; columns X=0, Y=1. Greedy takes C-Y (.95), then
    # B-X (.8); accepting each column's best proposer would give A-X.
    index = torch.tensor([[0, 1, 1, 2], [0, 1, 0, 1]])
    values = torch.tensor([0.5, 0.9, 0.8, 0.95])
    assert greedy_matching(index, values, (3, 2)).tolist() == [2, 3]
    assert greedy_matching(index, values, (3, 2), 'argmax').tolist() == [0,
                                                                         3]


@pytest.mark.parametrize('decode', ['greedy', 'argmax'])
def test_greedy_matching(decode):
    gen = torch.Generator().manual_seed(5)
    index = torch.stack([torch.randint(0, 12, (60,), generator=gen),
                         torch.randint(0, 9, (60,), generator=gen)])
    key = torch.unique(index[0] * 9 + index[1])
    index = torch.stack([key // 9, key % 9])
    values = torch.randn(index.size(1), generator=gen)
    values[3] = values[4]  # a tie: the earlier pair wins
    chosen = greedy_matching(index, values, (12, 9), decode)
    pairs = index[:, chosen]
    assert pairs[0].unique().numel() == pairs[1].unique().numel() == \
        chosen.numel()
    if decode == 'greedy':
        assert chosen.tolist() == python_greedy(index, values)
    else:  # a subset of each row's best
        for e in chosen.tolist():
            row = index[0] == index[0, e]
            assert values[e] == values[row].max()
        assert chosen.numel() <= python_greedy(index, values).__len__()


def test_sinkhorn_assignment_rectangular():
    s, t, pairs = planted(30, noise=0.3)
    t = torch.cat([t, torch.randn(6, 16)])  # 6 targets without a source
    out = one_to_one_assignment(s, t, method='sinkhorn', k=10)
    assert out.pairs.size(1) == 30 and out.probability.shape == (30,)
    assert out.pairs[1].unique().numel() == 30
    assert pair_precision_recall(out.pairs, pairs)['recall'] == 1.0
    hung = one_to_one_assignment(s, t, method='hungarian')
    assert hung.probability is None
    assert torch.equal(hung.pairs, out.pairs)


def test_one_to_one_hits_beats_nearest_neighbour():
    s, t, pairs = planted(80, noise=1.1)
    nn_hits = (true_ranks(s, t, pairs[1]) == 1).float().mean().item()
    hung = one_to_one_hits(s, t, pairs, method='hungarian')
    sink = one_to_one_hits(s, t, pairs, method='sinkhorn', k=20)
    assert hung > nn_hits + 0.05 and sink > nn_hits + 0.05
    # The test block: only rows pairs[0] against columns pairs[1], in
    # global ids; unrelated rows do not change the result.
    big_s = torch.cat([torch.randn(10, 16), s])
    big_t = torch.cat([t, torch.randn(5, 16)])
    shifted = torch.stack([pairs[0] + 10, pairs[1]])
    assert one_to_one_hits(big_s, big_t, shifted, 'hungarian') == hung
    assert one_to_one_hits(big_s, big_t, shifted, 'auto', k=20) == hung
    assert one_to_one_hits(s, t, pairs, 'hungarian', csls_k=3) >= nn_hits


def threshold_example():
    """Sources 0-7 have counterparts (7 a weak one, cosine 0.6); sources
    8, 9 have none, and targets 8, 9 match nobody (cosine 0)."""
    eye = torch.eye(16)
    s = eye[:10].clone()
    s[7] = 0.6 * eye[7] + 0.8 * eye[12]
    t = torch.cat([eye[:8], eye[10:12]])
    gold = torch.stack([torch.arange(8), torch.arange(8)])
    return s, t, gold


@pytest.mark.parametrize('method', ['hungarian', 'sinkhorn'])
def test_threshold_precision_recall(method):
    s, t, gold = threshold_example()
    every = one_to_one_assignment(s, t, method=method)
    assert pair_precision_recall(every.pairs, gold)['precision'] == 0.8
    out = one_to_one_assignment(s, t, method=method, threshold=0.5)
    m = pair_precision_recall(out.pairs, gold)
    assert (m['precision'], m['recall'], m['f1']) == (1.0, 1.0, 1.0)
    out = one_to_one_assignment(s, t, method=method, threshold=0.7)
    m = pair_precision_recall(out.pairs, gold)
    assert m['precision'] == 1.0 and m['recall'] == pytest.approx(7 / 8)
    assert m['f1'] == pytest.approx(2 * 7 / 8 / (1 + 7 / 8))
    assert (out.scores >= 0.7).all()


def test_min_probability_drops_sources_without_counterpart():
    s, t, gold = threshold_example()
    # Sources 8, 9 share the spare targets 8, 9: probability 1/2 each.
    out = one_to_one_assignment(s, t, method='sinkhorn', min_probability=0.6)
    assert (out.probability >= 0.6).all()
    m = pair_precision_recall(out.pairs, gold)
    assert (m['precision'], m['recall']) == (1.0, 1.0)


def test_pair_precision_recall_hand_checked():
    gold = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    pred = torch.tensor([[0, 1, 2, 9, 0], [5, 7, 7, 9, 5]])  # one duplicate
    m = pair_precision_recall(pred, gold)
    assert (m['num_predicted'], m['num_correct']) == (4, 2)
    assert (m['precision'], m['recall']) == (0.5, 0.5)
    empty = pair_precision_recall(torch.empty(2, 0, dtype=torch.long), gold)
    assert (empty['precision'], empty['recall'], empty['f1']) == (0, 0, 0)


def test_bad_input_raises():
    s, t, pairs = planted(10)
    with pytest.raises(ValueError, match='k=11'):
        topk_candidates(s, t, 11)
    with pytest.raises(ValueError, match='k=0'):
        topk_candidates(s, t, 0)
    with pytest.raises(ValueError, match='no candidate pairs'):
        sparse_sinkhorn(torch.empty(2, 0, dtype=torch.long), torch.empty(0),
                        (3, 3))
    with pytest.raises(ValueError, match='NaN'):
        sparse_sinkhorn(torch.tensor([[0], [0]]), torch.tensor([float('nan')]),
                        (1, 1))
    with pytest.raises(ValueError, match='out of range'):
        sparse_sinkhorn(torch.tensor([[0], [3]]), torch.ones(1), (1, 3))
    with pytest.raises(ValueError, match=r'\[E\]'):
        sparse_sinkhorn(torch.tensor([[0], [0]]), torch.ones(2), (1, 1))
    with pytest.raises(ValueError, match=r'\[2, E\]'):
        sparse_sinkhorn(torch.zeros(3, 1, dtype=torch.long), torch.ones(1),
                        (1, 1))
    nan = torch.rand(3, 3)
    nan[1, 1] = float('nan')
    for fn in (hungarian_assignment, sinkhorn):
        with pytest.raises(ValueError, match='NaN'):
            fn(nan)
        with pytest.raises(ValueError, match=r'\[N_s, N_t\]'):
            fn(torch.rand(3))
        with pytest.raises(ValueError, match='empty'):
            fn(torch.rand(0, 3))
    with pytest.raises(ValueError, match='temperature'):
        sinkhorn(torch.rand(3, 3), temperature=0)
    with pytest.raises(ValueError, match='NaN'):
        one_to_one_assignment(s * float('nan'), t)
    with pytest.raises(ValueError, match='dims differ'):
        one_to_one_assignment(s, t[:, :3])
    with pytest.raises(ValueError, match='method'):
        one_to_one_assignment(s, t, method='lapjv')
    with pytest.raises(ValueError, match='min_probability'):
        one_to_one_assignment(s, t, method='hungarian', min_probability=0.5)
    with pytest.raises(ValueError, match='decode'):
        one_to_one_assignment(s, t, method='sinkhorn', decode='best')
    with pytest.raises(ValueError, match=r'\[2, P\]'):
        one_to_one_hits(s, t, pairs[0])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    s, t, pairs = planted(50, noise=1.0)
    t = torch.cat([t, torch.randn(4, 16)])
    for method in ('hungarian', 'sinkhorn'):
        cpu = one_to_one_assignment(s, t, method=method, csls_k=3, k=50)
        gpu = one_to_one_assignment(s.cuda(), t.cuda(), method=method,
                                    csls_k=3, k=50)
        assert gpu.pairs.is_cuda and gpu.scores.is_cuda
        assert torch.equal(gpu.pairs.cpu(), cpu.pairs)
        assert torch.allclose(gpu.scores.cpu(), cpu.scores, atol=1e-5)
    index, scores = topk_candidates(s, t, 50, csls_k=3)
    ref = sparse_sinkhorn(index, scores, (50, 54))
    out = sparse_sinkhorn(index.cuda(), scores.cuda(), (50, 54))
    assert torch.allclose(out.cpu(), ref, atol=1e-5)
    dense = sinkhorn(dense_similarity(s.cuda(), t.cuda(), 3))
    assert torch.allclose(dense[index[0], index[1]].cpu(), ref, atol=1e-5)
    assert one_to_one_hits(s.cuda(), t.cuda(), pairs.cuda(), 'sinkhorn',
                           k=20) == one_to_one_hits(s, t, pairs, 'sinkhorn',
                                                    k=20)
