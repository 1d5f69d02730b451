import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.metrics import alignment_metrics, rank_metrics
from ricea_pyg.search import (
    csls_search,
    mutual_nearest_neighbors,
    top1_both_directions,
    true_ranks,
)


def planted(n=120, d=8, noise=0.8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    t = torch.empty_like(s)
    t[perm] = s + noise * torch.randn(n, d, generator=gen)
    return F.normalize(s, dim=1), F.normalize(t, dim=1), perm


def dense_csls(s, t, k):
    sim = s @ t.t()
    r_s = sim.topk(k, dim=1).values.mean(1)
    r_t = sim.t().topk(k, dim=1).values.mean(1)
    return 2 * sim - r_s.view(-1, 1) - r_t.view(1, -1)


@pytest.mark.parametrize('csls_k', [0, 3])
def test_csls_search_equals_dense(csls_k):
    s, t, _ = planted()
    scores, ids = csls_search(s, t, 5, csls_k)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    ref_s, ref_i = ref.topk(5, dim=1)
    assert torch.equal(ids, ref_i)
    assert torch.allclose(scores, ref_s, atol=1e-5)


def dense_ranks(scores, truth):
    true = scores[torch.arange(len(truth)), truth]
    return (scores >= true.view(-1, 1)).sum(1)


@pytest.mark.parametrize('csls_k', [0, 3])
def test_true_ranks_equal_dense_and_are_not_truncated(csls_k):
    s, t, perm = planted(noise=1.5)
    ranks = true_ranks(s, t, perm, csls_k, batch_size=17)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    assert torch.equal(ranks, dense_ranks(ref, perm))
    assert ranks.max() > 10  # far-away truths keep their real rank


def test_ties_count_against_the_query():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert true_ranks(s, t, torch.tensor([1])).tolist() == [2]
    assert true_ranks(s, t, torch.tensor([0])).tolist() == [2]


def test_rank_metrics():
    m = rank_metrics(torch.tensor([1, 2, 10, 11]))
    assert m == {'hits@1': 0.25, 'hits@10': 0.75,
                 'mrr': pytest.approx((1 + 0.5 + 0.1 + 1 / 11) / 4),
                 'mr': 6.0}


@pytest.mark.parametrize('csls_k', [0, 3])
def test_alignment_metrics_against_dense(csls_k):
    s, t, perm = planted(n=150, noise=1.0)
    pairs = torch.stack([torch.arange(150), perm])
    m = alignment_metrics(s, t, pairs, csls_k=csls_k)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    assert m['hits@1'] == pytest.approx(rank_metrics(dense_ranks(ref, perm))
                                        ['hits@1'])
    inv = torch.argsort(perm)
    ref_r = dense_csls(t, s, csls_k) if csls_k else t @ s.t()
    assert m['r2l_mrr'] == pytest.approx(rank_metrics(
        dense_ranks(ref_r, inv))['mrr'])
    assert set(m) == {'hits@1', 'hits@10', 'mrr', 'mr', 'r2l_hits@1',
                      'r2l_hits@10', 'r2l_mrr', 'r2l_mr'}


def test_alignment_metrics_candidate_subset():
    s, t, perm = planted(n=100)
    pairs = torch.stack([torch.arange(50), perm[:50]])
    sub = alignment_metrics(s, t, pairs, candidates=(pairs[0], pairs[1]))
    full = alignment_metrics(s, t, pairs)
    assert sub['mr'] <= full['mr']
    ref = dense_ranks(s[:50] @ t[perm[:50]].t(), torch.arange(50))
    assert sub['mr'] == pytest.approx(ref.double().mean().item())
    with pytest.raises(ValueError, match='not among the candidates'):
        alignment_metrics(s, t, pairs, candidates=(pairs[0], pairs[1][:10]))


@pytest.mark.parametrize('csls_k', [0, 3])
def test_top1_both_directions_against_dense(csls_k):
    s, t, _ = planted(n=60, noise=0.9)
    t = t[:45]  # unequal sides
    scores, s2t, t2s = top1_both_directions(s, t, csls_k)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    assert torch.equal(s2t[:, 0], ref.argmax(1))
    assert torch.equal(t2s[:, 0], ref.argmax(0))
    assert torch.allclose(scores[:, 0], ref.max(1).values, atol=1e-5)


@pytest.mark.parametrize('csls_k', [0, 3])
def test_mutual_nearest_neighbors_against_dense(csls_k):
    s, t, _ = planted(n=80, noise=0.9)
    pairs = mutual_nearest_neighbors(s, t, csls_k)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    fwd, bwd = ref.argmax(1), ref.argmax(0)
    expected = [(i, int(fwd[i])) for i in range(80) if bwd[fwd[i]] == i]
    assert list(map(tuple, pairs.t().tolist())) == expected
    high = mutual_nearest_neighbors(s, t, csls_k, threshold=0.9)
    assert high.size(1) < pairs.size(1)


def test_sparse_csls_equals_exact_with_all_candidates_and_reranks():
    from ricea_pyg.search import sparse_csls_search
    gen = torch.Generator().manual_seed(4)
    src, tgt = torch.randn(50, 6, generator=gen), torch.randn(60, 6,
                                                              generator=gen)
    ref_s, ref_i = csls_search(src, tgt, 3, csls_k=3)
    s, i = sparse_csls_search(src, tgt, 3, csls_k=3, candidates=60)
    assert torch.equal(i, ref_i) and torch.allclose(s, ref_s, atol=1e-5)
    # With few candidates: the dense CSLS matrix restricted to the cosine
    # top-5 of each source, re-ranked.
    (s5, i5), (cos, cand) = sparse_csls_search(src, tgt, 1, 3, candidates=5,
                                               return_knn=True)
    a = torch.nn.functional.normalize(src, dim=1)
    b = torch.nn.functional.normalize(tgt, dim=1)
    sim = a @ b.t()
    dense = 2 * sim - sim.topk(3, 1)[0].mean(1, keepdim=True) \
        - sim.t().topk(3, 1)[0].mean(1)
    assert torch.equal(cand, sim.topk(5, 1)[1])
    best = dense.gather(1, cand).argmax(1)
    assert torch.equal(i5[:, 0], cand.gather(1, best.view(-1, 1))[:, 0])
    with pytest.raises(ValueError, match='candidates'):
        sparse_csls_search(src, tgt, 1, 3, candidates=2)
