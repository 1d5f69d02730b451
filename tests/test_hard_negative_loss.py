import pytest
import torch

from ricea_pyg.loss import dual_amn_loss, hard_negative_ids
from ricea_pyg.search import AlignmentIndex


def naive(source, target, s_cand, t_cand, s_index=None, t_index=None,
          s_neg=None, t_neg=None, gamma=30.0, bias=10.0, margin=1.0):
    """Term by term, one query and one candidate at a time."""
    total = 0.0
    for b in range(source.size(0)):
        pos = ((source[b] - target[b]) ** 2).sum()
        for query, table, neg, index in (
                (source[b], t_cand, t_neg, t_index),
                (target[b], s_cand, s_neg, s_index)):
            ids = range(table.size(0)) if neg is None else neg[b].tolist()
            d = torch.stack([pos - ((query - table[e]) ** 2).sum() + margin
                             for e in ids if e >= 0 and
                             (index is None or e != index[b])])
            z = (d - d.detach().mean()) / d.detach().std(correction=0)
            total = total + torch.logsumexp(gamma * z + bias, 0)
    return total / source.size(0)


def tables(n_s=7, n_t=6, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s_cand = torch.randn(n_s, dim, generator=gen, dtype=torch.double)
    t_cand = torch.randn(n_t, dim, generator=gen, dtype=torch.double)
    return s_cand.requires_grad_(), t_cand.requires_grad_()


def grads(fn, *inputs):
    loss = fn()
    return [loss.detach()] + list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize('exclude', [False, True])
def test_equals_naive_loop(exclude):
    s_cand, t_cand = tables()
    s_idx, t_idx = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 4])
    kw = dict(s_index=s_idx, t_index=t_idx) if exclude else {}

    def ours():  # the pairs are rows of the tables, as in training
        return dual_amn_loss(s_cand[s_idx], t_cand[t_idx], s_cand, t_cand,
                             kw.get('s_index'), kw.get('t_index'),
                             gamma=3.0, bias=1.0, margin=0.5)

    def ref():
        return naive(s_cand[s_idx], t_cand[t_idx], s_cand, t_cand, **kw,
                     gamma=3.0, bias=1.0, margin=0.5)

    for a, b in zip(grads(ours, s_cand, t_cand), grads(ref, s_cand, t_cand)):
        assert torch.allclose(a, b, atol=1e-10)


def test_candidate_ids_equal_the_naive_loop_and_the_full_form():
    s_cand, t_cand = tables()
    source = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    target = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    s_idx, t_idx = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 4])
    gen = torch.Generator().manual_seed(1)
    # K = all, each row in its own order: equal to the full form.
    s_all = torch.stack([torch.randperm(7, generator=gen) for _ in range(3)])
    t_all = torch.stack([torch.randperm(6, generator=gen) for _ in range(3)])
    inputs = (source, target, s_cand, t_cand)
    full = grads(lambda: dual_amn_loss(*inputs, s_idx, t_idx), *inputs)
    by_ids = grads(lambda: dual_amn_loss(*inputs, s_idx, t_idx, s_all,
                                         t_all), *inputs)
    for a, b in zip(full, by_ids):
        assert torch.allclose(a, b, atol=1e-10)
    # K < N with missing slots (-1) and counterparts among the ids.
    s_neg = torch.tensor([[1, 0, -1, 2], [2, 3, 6, 0], [5, -1, 4, 1]])
    t_neg = torch.tensor([[0, 1, 5, 3], [2, -1, 3, 0], [4, 0, 1, -1]])
    ours = grads(lambda: dual_amn_loss(*inputs, s_idx, t_idx, s_neg, t_neg),
                 *inputs)
    ref = grads(lambda: naive(*inputs, s_idx, t_idx, s_neg, t_neg), *inputs)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10)
    assert not torch.allclose(ours[0], full[0])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64,
                                   torch.bfloat16])
def test_equal_distances_are_finite(dtype):
    x = torch.ones(4, 3, dtype=dtype, requires_grad=True)
    loss = dual_amn_loss(x[:2], x[2:], x, x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # All d equal: z = 0, so the loss is log(N) + bias per direction.
    expected = 2 * (torch.tensor(4.0).log() + 10)
    assert loss.float().item() == pytest.approx(expected.item(), rel=1e-2)
    # Distinct candidates at equal distance from both queries.
    circle = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]],
                          dtype=dtype, requires_grad=True)
    zero = torch.zeros(1, 2, dtype=dtype, requires_grad=True)
    loss = dual_amn_loss(zero, zero, circle, circle)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(circle.grad).all()


def test_bad_input_raises():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    cand = torch.randn(5, 4)
    with pytest.raises(ValueError, match='same non-empty'):
        dual_amn_loss(s, t[:2], cand, cand)
    with pytest.raises(ValueError, match=r'target_candidates must be \[N, 4'):
        dual_amn_loss(s, t, cand, cand[:, :2])
    with pytest.raises(ValueError, match=r'source_negatives must be .*\[B, K'):
        dual_amn_loss(s, t, cand, cand, source_negatives=torch.zeros(
            3, dtype=torch.long))
    with pytest.raises(ValueError, match='outside'):
        dual_amn_loss(s, t, cand, cand, target_index=torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match='no negative candidate'):
        dual_amn_loss(s, t, cand, cand, target_index=torch.tensor([0, 1, 2]),
                      target_negatives=torch.tensor([[0, -1], [1, 2], [3, 4]]))


@pytest.mark.parametrize('prebuilt', [False, True])
def test_hard_negative_ids(prebuilt):
    gen = torch.Generator().manual_seed(2)
    cand = torch.randn(30, 5, generator=gen)
    queries = cand[:4] + 0.01 * torch.randn(4, 5, generator=gen)
    table = AlignmentIndex('flat', metric='l2').add(cand) if prebuilt \
        else cand
    dist = torch.cdist(queries, cand)
    ids = hard_negative_ids(queries, table, 3)
    assert torch.equal(ids, dist.topk(3, largest=False).indices)
    # The counterpart (row i, the nearest) is skipped, not wasted.
    exclude = torch.tensor([0, 1, 2, 29])
    ids = hard_negative_ids(queries, table, 3, exclude=exclude)
    ref = dist.scatter(1, exclude.view(-1, 1), float('inf'))
    assert torch.equal(ids, ref.topk(3, largest=False).indices)
    with pytest.raises(ValueError, match="metric='l2'"):
        hard_negative_ids(queries, AlignmentIndex('flat').add(cand), 3)


def test_both_kgs_in_one_table_exclude_the_query_and_its_counterpart():
    from ricea_pyg.loss import dual_amn_loss
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(12, 5, generator=gen, requires_grad=True)
    l_rows, r_rows = torch.tensor([0, 2, 4]), torch.tensor([7, 9, 11])
    both = torch.stack([l_rows, r_rows], 1)
    loss = dual_amn_loss(table[l_rows], table[r_rows], table, table,
                         source_index=both, target_index=both)
    # Reference: each query against the 10 other rows, by hand.
    ref = 0
    for lr, rr in zip(l_rows.tolist(), r_rows.tolist()):
        keep = [e for e in range(12) if e not in (lr, rr)]
        pos = (table[lr] - table[rr]).pow(2).sum()
        for q in (lr, rr):
            d = pos - (table[q] - table[keep]).pow(2).sum(-1) + 1.0
            z = (d - d.detach().mean()) / d.detach().std(correction=0)
            ref = ref + torch.logsumexp(30 * z + 10, 0)
    assert torch.allclose(loss, ref / 3, atol=1e-4)
    ids = torch.arange(12).expand(3, 12)  # the [B, K] form, K = all
    same = dual_amn_loss(table[l_rows], table[r_rows], table, table,
                         source_index=both, target_index=both,
                         source_negatives=ids, target_negatives=ids)
    assert torch.allclose(same, loss, atol=1e-5)


def test_dense_gradient_equals_autograd_over_ids_with_repeated_exclusions():
    # The whole-table path has a hand-written backward; the [B, K] path
    # with every row is plain autograd over the same formula.
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(9, 3, generator=gen, dtype=torch.double,
                        requires_grad=True)
    rows = torch.tensor([[0, 5], [1, 6], [2, 7]])
    # Row 0's exclusions name its source twice: excluded once.
    exclude = torch.cat([rows, rows[:, :1]], 1)
    ids = torch.arange(9).expand(3, 9)
    dense, by_ids = [
        grads(lambda kw=kw: dual_amn_loss(
            table[rows[:, 0]] * 2, table[rows[:, 1]], table, table,
            source_index=exclude, target_index=rows, **kw), table)
        for kw in ({}, dict(source_negatives=ids, target_negatives=ids))]
    for a, b in zip(dense, by_ids):
        assert torch.allclose(a, b, atol=1e-12)
    # Large gamma pushes most softmax terms below the floor of the dense
    # path: still equal, and finite.
    dense, by_ids = [
        grads(lambda kw=kw: dual_amn_loss(
            table[rows[:, 0]], table[rows[:, 1]], table, table,
            source_index=rows, target_index=rows, gamma=300.0, **kw), table)
        for kw in ({}, dict(source_negatives=ids, target_negatives=ids))]
    for a, b in zip(dense, by_ids):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-8)
    with pytest.raises(ValueError, match='no negative candidate'):
        every = torch.arange(9).expand(3, 9)
        dual_amn_loss(table[:3], table[3:6], table, table,
                      target_index=every)
