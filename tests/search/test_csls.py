import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.metrics import alignment_metrics, rank_metrics
from ricea_pyg.search import (
    csls_search,
    mutual_nearest_neighbors,
    sparse_csls_search,
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


def integer_problem(bias: bool, q=40, n=70, d=6, seed=0):
    """Small-integer vectors: every score is exact in float32, so ties are
    real and no chunking can change a comparison."""
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randint(-2, 3, (q, d), generator=gen).float()
    base = torch.randint(-2, 3, (n, d), generator=gen).float()
    truth = torch.randint(0, n, (q,), generator=gen)
    beta = torch.randint(-4, 5, (n,), generator=gen).float() / 2 if bias \
        else None
    scores = queries @ base.t()
    if bias:
        scores = 2 * scores - beta
    true = scores[torch.arange(q), truth].view(-1, 1)
    other = torch.ones_like(scores, dtype=torch.bool)
    other[torch.arange(q), truth] = False
    ref = (((scores > true) & other).sum(1), ((scores == true) & other).sum(1))
    return queries, base, truth, beta, ref


@pytest.mark.parametrize('bias', [False, True])
def test_rank_counts_tiny_budget_equals_one_chunk_and_dense(bias):
    from ricea_pyg.search.csls import rank_chunk_rows, rank_counts
    q, b, truth, beta, (ref_higher, ref_ties) = integer_problem(bias)
    assert ref_ties.sum() > 0  # the data has ties to tell apart
    assert rank_chunk_rows(4096, 70, max_bytes=1) == 1
    assert rank_chunk_rows(4096, 70, max_bytes=3 * 70 * 4) == 3
    for kwargs in (dict(batch_size=40, max_bytes=2**40),  # one chunk
                   dict(max_bytes=1),  # one query per chunk
                   dict(max_bytes=3 * 70 * 4)):  # 3 rows, last chunk short
        higher, ties = rank_counts(q, b, truth, beta, **kwargs)
        assert torch.equal(higher, ref_higher), kwargs
        assert torch.equal(ties, ref_ties), kwargs


@pytest.mark.parametrize('csls_k', [0, 3])
def test_true_ranks_tiny_budget_equals_one_chunk(csls_k):
    s, t, perm = planted(noise=1.5)
    one = true_ranks(s, t, perm, csls_k, batch_size=120, max_bytes=2**40)
    many = true_ranks(s, t, perm, csls_k, max_bytes=1)
    assert torch.equal(many, one)
    ref = dense_csls(s, t, csls_k) if csls_k else s @ t.t()
    assert torch.equal(one, dense_ranks(ref, perm))


def test_rank_counts_truth_elsewhere_takes_the_reduced_score():
    from ricea_pyg.search.csls import rank_counts
    q, b, truth, _, _ = integer_problem(False)
    scores = q @ b.t()
    absent = torch.full_like(truth, -1)
    with pytest.raises(ValueError, match='every truth row must lie in base'):
        rank_counts(q, b, absent)
    # as on a rank without the truth: the score comes from the reduction
    higher, ties = rank_counts(q, b, absent, max_bytes=1,
                               reduce_true=lambda t: t.clamp_min(1.0))
    assert torch.equal(higher, (scores > 1).sum(1))
    assert torch.equal(ties, (scores == 1).sum(1))


def test_true_ranks_rejects_truth_outside_target():
    s, t, _ = planted(n=10)
    with pytest.raises(ValueError, match=r'truth rows must lie in \[0, 10\)'):
        true_ranks(s, t, torch.tensor([0, 10]))


PROGRESS_CALLS = {
    'true_ranks': lambda s, t, p, pr: true_ranks(s, t, p, 3, progress=pr),
    'csls_search': lambda s, t, p, pr: csls_search(s, t, 2, 3, progress=pr),
    'sparse_csls_search': lambda s, t, p, pr: sparse_csls_search(
        s, t, 1, 3, candidates=5, progress=pr),
    'top1_both_directions': lambda s, t, p, pr: top1_both_directions(
        s, t, 3, progress=pr),
    'mutual_nearest_neighbors_cosine': lambda s, t, p, pr:
        mutual_nearest_neighbors(s, t, 0, progress=pr),
    'mutual_nearest_neighbors_csls': lambda s, t, p, pr:
        mutual_nearest_neighbors(s, t, 3, progress=pr),
}


@pytest.mark.parametrize('name', list(PROGRESS_CALLS))
def test_progress_false_never_shows_a_bar(name, capfd, monkeypatch):
    import ricea_pyg.search.index as index_module
    monkeypatch.setattr(index_module, 'PROGRESS_WORK', 0)  # all are "long"
    s, t, perm = planted(n=40)
    call = PROGRESS_CALLS[name]
    call(s, t, perm, False)
    assert capfd.readouterr().err == ''
    for shown in (None, True):
        call(s, t, perm, shown)
        assert '%|' in capfd.readouterr().err, shown  # a tqdm bar


@pytest.mark.gpu
@pytest.mark.parametrize('bias', [False, True])
def test_rank_counts_on_cuda_equal_dense(bias):
    from ricea_pyg.search.csls import rank_counts
    q, b, truth, beta, (ref_higher, ref_ties) = integer_problem(bias)
    higher, ties = rank_counts(q.cuda(), b.cuda(), truth.cuda(),
                               None if beta is None else beta.cuda(),
                               max_bytes=3 * 70 * 4)
    assert higher.is_cuda
    assert torch.equal(higher.cpu(), ref_higher)
    assert torch.equal(ties.cpu(), ref_ties)


def test_rank_counts_on_an_empty_shard():
    from ricea_pyg.search import rank_counts
    queries = torch.randn(3, 4)
    calls = []

    def reduce_true(true):  # a shard must still join every reduction
        calls.append(true.clone())
        return torch.zeros_like(true)
    higher, ties = rank_counts(queries, torch.empty(0, 4),
                               torch.full((3,), -1), reduce_true=reduce_true)
    assert higher.tolist() == [0, 0, 0] and ties.tolist() == [0, 0, 0]
    assert len(calls) == 1 and torch.isinf(calls[0]).all()


def test_top1_both_directions_approximate_path_matches_exact():
    from ricea_pyg.search.csls import top1_both_directions
    gen = torch.Generator().manual_seed(0)
    src = torch.nn.functional.normalize(torch.randn(400, 16, generator=gen),
                                        dim=1)
    tgt = torch.nn.functional.normalize(
        src[torch.randperm(400, generator=gen)] +
        0.2 * torch.randn(400, 16, generator=gen), dim=1)
    for csls_k in (0, 3):
        exact = top1_both_directions(src, tgt, csls_k)
        # 'auto' with a low threshold takes the two-search path; with every
        # entity a candidate it must agree with the exact one.
        approx = top1_both_directions(src, tgt, csls_k, kind='auto',
                                      candidates=400, auto_exact_below=100,
                                      nlist=4, nprobe=4)
        assert torch.equal(exact[1], approx[1])
        assert torch.equal(exact[2], approx[2])
        torch.testing.assert_close(exact[0], approx[0])
