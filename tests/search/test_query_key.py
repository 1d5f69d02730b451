"""Every search entry point on :class:`QueryKey` embeddings, against a brute
force from the dense score ``S[i, j] = <q(s_i), k(t_j)>``."""
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ricea_pyg.metrics import (
    alignment_metrics,
    evaluate_embeddings,
    rank_metrics,
)
from ricea_pyg.search import (
    QueryKey,
    csls_search,
    dense_similarity,
    mutual_nearest_neighbors,
    one_to_one_assignment,
    one_to_one_hits,
    query_key,
    sparse_csls_search,
    top1_both_directions,
    topk_candidates,
    true_ranks,
)
from tests.search.test_distributed import _free_port, _gloo_shard

N_S, N_T, M, D, CSLS_K = 30, 40, 3, 8, 3


def fused(x, w):
    """QueryKey of per-modality embeddings ``x [N, M, D]``, weights
    ``w [N, M]``."""
    x = F.normalize(x, dim=-1)
    q = torch.cat([w[:, :, None] * x, x], 1).flatten(1) / math.sqrt(2)
    k = torch.cat([x, w[:, :, None] * x], 1).flatten(1) / math.sqrt(2)
    return QueryKey(q, k)


@pytest.fixture(scope='module')
def data():
    """Sources, targets (the first N_S noisy copies of the sources, so
    source i's counterpart is target i) and the reference score S."""
    gen = torch.Generator().manual_seed(7)
    xs = torch.randn(N_S, M, D, generator=gen)
    xt = torch.randn(N_T, M, D, generator=gen)
    xt[:N_S] = xs + 0.9 * torch.randn(N_S, M, D, generator=gen)
    ws = torch.randn(N_S, M, generator=gen).mul(2).softmax(-1)
    wt = torch.randn(N_T, M, generator=gen).mul(2).softmax(-1)
    cos = torch.einsum('imd,jmd->ijm', F.normalize(xs.double(), dim=-1),
                       F.normalize(xt.double(), dim=-1))
    S = 0.5 * ((ws[:, None].double() + wt[None].double()) * cos).sum(-1)
    return fused(xs, ws), fused(xt, wt), S


def csls_matrix(S, k=CSLS_K, r_t_from=None):
    """2 S - r_s - r_t; r_t from the columns of :obj:`r_t_from`."""
    ref = S if r_t_from is None else r_t_from
    r_s = S.topk(k, dim=1).values.mean(1)
    r_t = ref.topk(k, dim=0).values.mean(0)
    return 2 * S - r_s[:, None] - r_t[None, :]


def ref_ranks(scores, truth):
    """1 + #{j != truth: score >= score_truth}."""
    true = scores[torch.arange(len(truth)), truth]
    return (scores >= true[:, None]).sum(1)


def test_score_is_symmetric_and_equals_the_formula(data):
    s, t, S = data
    assert torch.allclose((s.query @ t.key.t()).double(), S, atol=1e-6)
    assert torch.allclose(s.query @ t.key.t(), (t.query @ s.key.t()).t(),
                          atol=1e-6)


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
def test_csls_search_and_sparse_csls(data, csls_k):
    s, t, S = data
    ref = csls_matrix(S) if csls_k else S
    ref_s, ref_i = ref.topk(5, dim=1)
    scores, ids = csls_search(s, t, 5, csls_k)
    assert torch.equal(ids, ref_i)
    assert torch.allclose(scores.double(), ref_s, atol=1e-5)
    # the other direction reads S.T
    back_s, back_i = csls_search(t, s, 5, csls_k)
    ref_b = csls_matrix(S.t()) if csls_k else S.t()
    assert torch.equal(back_i, ref_b.topk(5, dim=1).indices)
    if csls_k:
        sp_s, sp_i = sparse_csls_search(s, t, 5, csls_k, candidates=N_T)
        assert torch.equal(sp_i, ids)
        assert torch.allclose(sp_s, scores, atol=1e-5)


def test_query_key_differs_from_normalising_the_concatenation(data):
    s, t, S = data
    _, ids = csls_search(s, t, 1, 0)
    cat_s = torch.cat([s.query, s.key], 1)
    cat_t = torch.cat([t.query, t.key], 1)
    _, cat_ids = csls_search(cat_s, cat_t, 1, 0)
    assert not torch.equal(ids, cat_ids)
    cos = F.normalize(cat_s, dim=1) @ F.normalize(cat_t, dim=1).t()
    assert torch.equal(cat_ids[:, 0], cos.argmax(1))  # the tensor path
    assert torch.equal(ids[:, 0], S.argmax(1))


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
@pytest.mark.parametrize('with_neighbors', [False, True])
def test_true_ranks(data, csls_k, with_neighbors):
    s, t, S = data
    gen = torch.Generator().manual_seed(3)
    rows = torch.randperm(N_S, generator=gen)[:20]
    truth = torch.randint(0, N_T, (20,), generator=gen)
    truth[:10] = rows[:10]  # half the true counterparts
    neighbors = s if with_neighbors else None
    ranks = true_ranks(s[rows], t, truth, csls_k, batch_size=7,
                       neighbors=neighbors)
    ref = S[rows]
    if csls_k:
        ref = csls_matrix(ref, r_t_from=S if with_neighbors else None)
    assert torch.equal(ranks, ref_ranks(ref, truth))


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
def test_top1_and_mutual_nearest_neighbors(data, csls_k):
    s, t, S = data
    ref = csls_matrix(S) if csls_k else S
    score, s2t, t2s = top1_both_directions(s, t, csls_k)
    assert torch.equal(s2t[:, 0], ref.argmax(1))
    assert torch.equal(t2s[:, 0], ref.argmax(0))
    assert torch.allclose(score[:, 0].double(), ref.max(1).values,
                          atol=1e-5)
    i = torch.arange(N_S)
    mutual = ref.argmax(0)[ref.argmax(1)] == i
    pairs = mutual_nearest_neighbors(s, t, csls_k)
    assert torch.equal(pairs, torch.stack([i[mutual],
                                           ref.argmax(1)[mutual]]))
    assert pairs.size(1) > 0


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
def test_dense_similarity_and_topk_candidates(data, csls_k):
    s, t, S = data
    ref = csls_matrix(S) if csls_k else S
    assert torch.allclose(dense_similarity(s, t, csls_k).double(), ref,
                          atol=1e-5)
    index, scores = topk_candidates(s, t, 5, csls_k)
    fwd = torch.zeros_like(S, dtype=torch.bool)
    fwd.scatter_(1, S.topk(5, dim=1).indices, True)
    back = torch.zeros_like(S, dtype=torch.bool)
    back.scatter_(0, S.topk(5, dim=0).indices, True)
    assert torch.equal(index, (fwd | back).nonzero().t())
    assert torch.allclose(scores.double(), ref[index[0], index[1]],
                          atol=1e-5)


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
def test_one_to_one_assignment_and_hits(data, csls_k):
    s, t, S = data
    ref = csls_matrix(S) if csls_k else S
    rows, cols = linear_sum_assignment(-ref.numpy())
    result = one_to_one_assignment(s, t, method='hungarian', csls_k=csls_k)
    assert result.pairs.tolist() == [rows.tolist(), cols.tolist()]
    assert torch.allclose(result.scores.double(), ref[rows, cols],
                          atol=1e-5)
    # the test block: sources 0..N_S-1 against targets 0..N_S-1
    pairs = torch.arange(N_S).repeat(2, 1)
    block = csls_matrix(S[:, :N_S]) if csls_k else S[:, :N_S]
    rows, cols = linear_sum_assignment(-block.numpy())
    hits = one_to_one_hits(s, t, pairs, method='hungarian', csls_k=csls_k)
    assert hits == pytest.approx(float((cols == rows).mean()))
    # sparse Sinkhorn runs on a QueryKey too
    sk = one_to_one_assignment(s, t, method='sinkhorn', csls_k=csls_k, k=10)
    assert sk.pairs.size(1) > 0


@pytest.mark.parametrize('csls_k', [0, CSLS_K])
def test_alignment_metrics_and_evaluate_embeddings(data, csls_k):
    s, t, S = data
    pairs = torch.arange(N_S).repeat(2, 1)
    truth = torch.arange(N_S)

    def expected(block):
        l2r = csls_matrix(block) if csls_k else block
        r2l = csls_matrix(block.t()) if csls_k else block.t()
        out = rank_metrics(ref_ranks(l2r, truth))
        out.update({'r2l_' + k: v for k, v in rank_metrics(
            ref_ranks(r2l[:N_S], truth)).items()})
        return out, l2r

    want, _ = expected(S)
    assert alignment_metrics(s, t, pairs, csls_k) == want
    assert evaluate_embeddings(s, t, pairs, csls_k, candidates='all') == \
        want
    want, block = expected(S[:, :N_S])
    rows, cols = linear_sum_assignment(-block.numpy())
    want['one_to_one_hits@1'] = float((cols == rows).mean())
    got = evaluate_embeddings(s, t, pairs, csls_k, one_to_one=True)
    assert got.pop('one_to_one_hits@1') == \
        pytest.approx(want.pop('one_to_one_hits@1'))
    assert got == want
    assert want['hits@1'] > 0.3  # planted counterparts are found


def test_normalize_flags(data):
    s, t, S = data
    with pytest.raises(ValueError, match='QueryKey'):
        query_key(s, True)
    for call in (lambda: csls_search(s, t, 1, normalize=True),
                 lambda: true_ranks(s, t, torch.arange(N_S),
                                    normalize=True),
                 lambda: dense_similarity(s, t, normalize=True),
                 lambda: alignment_metrics(s, t, torch.arange(N_S).repeat(
                     2, 1), normalize=True)):
        with pytest.raises(ValueError, match='QueryKey'):
            call()
    # normalize=False: a plain tensor is used raw as query and key
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(N_S, 6, generator=gen) * torch.rand(N_S, 1,
                                                        generator=gen) * 3
    b = torch.randn(N_T, 6, generator=gen)
    raw = (a @ b.t()).double()
    scores, ids = csls_search(a, b, 3, 0, normalize=False)
    assert torch.equal(ids, raw.topk(3, dim=1).indices)
    assert torch.allclose(scores.double(), raw.topk(3, dim=1).values,
                          atol=1e-5)
    scores, ids = csls_search(a, b, 3, CSLS_K, normalize=False)
    assert torch.equal(ids, csls_matrix(raw).topk(3, dim=1).indices)
    assert torch.allclose(dense_similarity(a, b, normalize=False).double(),
                          raw, atol=1e-5)
    truth = torch.arange(N_S)
    assert torch.equal(true_ranks(a, b, truth, normalize=False),
                       ref_ranks(raw, truth))
    # the default normalises, so the raw scale is not what it ranks by
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    assert torch.equal(csls_search(a, b, 3, 0)[1],
                       cos.topk(3, dim=1).indices)
    assert not torch.equal(cos.topk(3, dim=1).indices,
                           raw.topk(3, dim=1).indices)


def _sharded_worker(rank, world, port, source, target, truth, sizes,
                    out_dir):
    from ricea_pyg.search import sharded_csls_search, sharded_true_ranks
    base = torch.cat([target.query, target.key], 1)  # shard both halves
    with _gloo_shard(rank, world, port, base, sizes) as (start, shard):
        d = source.query.size(1)
        shard = QueryKey(shard[:, :d].contiguous(),
                         shard[:, d:].contiguous())
        # Only rank 0 holds the sources: both halves are broadcast.
        q = source if rank == 0 else QueryKey(
            torch.zeros_like(source.query), torch.zeros_like(source.key))
        tr = truth if rank == 0 else torch.zeros_like(truth)
        out = {}
        for csls_k in (0, CSLS_K):
            out[csls_k] = (
                sharded_csls_search(QueryKey(q.query.clone(),
                                             q.key.clone()),
                                    shard, start, 4, csls_k),
                sharded_true_ranks(QueryKey(q.query.clone(),
                                            q.key.clone()),
                                   shard, start, tr.clone(), csls_k,
                                   batch_size=7))
        torch.save(out, os.path.join(out_dir, f'{rank}.pt'))


@pytest.mark.distributed
def test_sharded_search_and_ranks_equal_single_process(tmp_path, data):
    s, t, S = data
    sizes = (25, 15)
    truth = torch.arange(N_S)
    mp.spawn(_sharded_worker, args=(2, _free_port(), s, t, truth, sizes,
                                    str(tmp_path)), nprocs=2, join=True)
    for csls_k in (0, CSLS_K):
        ref_s, ref_i = csls_search(s, t, 4, csls_k)
        ref_r = true_ranks(s, t, truth, csls_k)
        dense = csls_matrix(S) if csls_k else S
        assert torch.equal(ref_r, ref_ranks(dense, truth))
        for rank in range(2):
            (scores, ids), ranks = torch.load(tmp_path / f'{rank}.pt')[
                csls_k]
            assert torch.equal(ids, ref_i)
            assert torch.allclose(scores, ref_s, atol=1e-6)
            assert torch.equal(ranks, ref_r)


@pytest.mark.parametrize('csls_k', [0, 3])
def test_approximate_metrics_equal_exact_when_deep_enough(csls_k):
    from ricea_pyg.metrics import (
        alignment_metrics,
        approximate_alignment_metrics,
    )
    gen = torch.Generator().manual_seed(4)
    src = torch.randn(120, 8, generator=gen)
    tgt = src + 0.9 * torch.randn(120, 8, generator=gen)
    pairs = torch.stack([torch.arange(60), torch.arange(60)])
    cand = (torch.arange(100), torch.arange(100))
    exact = alignment_metrics(src, tgt, pairs, csls_k, cand)
    approx = approximate_alignment_metrics(src, tgt, pairs, 1000, csls_k,
                                           cand, depth=100, kind='flat')
    assert approx['approx_queries'] == 60
    for key in ('hits@1', 'hits@10', 'mrr', 'r2l_hits@1', 'r2l_mrr'):
        assert approx[key] == pytest.approx(exact[key], abs=1e-9), key
    shallow = approximate_alignment_metrics(src, tgt, pairs, 1000, csls_k,
                                            cand, depth=10, kind='flat')
    assert shallow['hits@10'] == pytest.approx(exact['hits@10'])
    assert shallow['mrr'] <= exact['mrr']  # unretrieved ranks count 0
    sample = approximate_alignment_metrics(src, tgt, pairs, 20, csls_k,
                                           cand, depth=100, kind='flat')
    assert sample['approx_queries'] == 20
    assert sample == approximate_alignment_metrics(
        src, tgt, pairs, 20, csls_k, cand, depth=100, kind='flat')


def test_approximate_metrics_repeated_candidates_and_deep_csls():
    from ricea_pyg.metrics import approximate_alignment_metrics
    gen = torch.Generator().manual_seed(5)
    src = torch.randn(50, 8, generator=gen)
    tgt = src + 0.3 * torch.randn(50, 8, generator=gen)
    pairs = torch.stack([torch.arange(50), torch.arange(50)])
    once = approximate_alignment_metrics(src, tgt, pairs, csls_k=3,
                                         kind='flat')
    twice = approximate_alignment_metrics(
        src, tgt, pairs, csls_k=3, kind='flat',
        candidates=(pairs[0].repeat(2), pairs[1].repeat(2)))
    assert twice == once  # a repeated candidate does not tie with itself
    deep = approximate_alignment_metrics(src, tgt, pairs, csls_k=30,
                                         depth=10, kind='flat')
    assert 0 <= deep['hits@1'] <= 1  # depth grows to csls_k
