"""The pair-mean score (``scoring='pair_mean'``) and the auxiliary-loss
contract that makes a fusion train as a drop-in layer (issue 13, items 1
and 4)."""
import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.loss import (
    auxiliary_loss,
    auxiliary_losses,
    icl_terms,
    in_batch_logits,
    tcp_loss,
    uncertainty_loss,
)
from ricea_pyg.metrics import auroc
from ricea_pyg.nn import ADCFusion, FusionOutput, fusion_resolver
from ricea_pyg.nn.fusion import SCORINGS, pair_mean_query_key
from ricea_pyg.search import QueryKey
from tests.nn.fusion.test_fusion import ALL, CASES

M, C = 4, 8


def _inputs(n=7, seed=0, missing=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, M, C, generator=g)
    mask = torch.rand(n, M, generator=g) > (0.3 if missing else -1)
    mask[:, 0] = True
    return x, mask


def _pairwise(x_a, w_a, m_a, x_b, w_b, m_b):
    """0.5 * sum_m (w_m(a) + w_m(b)) cos_m(a, b) over modalities both have."""
    cos = torch.einsum('amc,bmc->abm', F.normalize(x_a, dim=-1),
                       F.normalize(x_b, dim=-1))
    both = m_a[:, None, :] & m_b[None, :, :]
    w = 0.5 * (w_a[:, None, :] + w_b[None, :, :])
    return torch.where(both, w * cos, torch.zeros(())).sum(-1)


@pytest.mark.parametrize('cls', ALL)
def test_query_key_score_is_the_pair_mean_formula(cls):
    kwargs, _ = CASES[cls]
    torch.manual_seed(0)
    fusion = cls(**kwargs, scoring='pair_mean').eval()
    xa, ma = _inputs(seed=1)
    xb, mb = _inputs(n=5, seed=2)
    xa[~ma] = float('nan')  # what lies under a mask never reaches a score
    a, b = fusion.forward_full(xa, ma), fusion.forward_full(xb, mb)
    scores = a.query @ b.key.t()
    xa = torch.where(ma[..., None], xa, torch.zeros(()))
    ref = _pairwise(xa, a.weights, ma, xb, b.weights, mb)
    assert torch.allclose(scores, ref, atol=1e-6)
    # Symmetric: <q(a), k(b)> = <q(b), k(a)>.
    assert torch.allclose(scores, (b.query @ a.key.t()).t(), atol=1e-6)


def test_uniform_weights_give_the_concatenation_cosine():
    x, _ = _inputs(missing=False)
    out = fusion_resolver('concat', num_modalities=M,
                          scoring='pair_mean').forward_full(x)
    fused = F.normalize(out.fused, dim=-1)
    assert torch.allclose(out.query @ out.key.t(), fused @ fused.t(),
                          atol=1e-6)


def test_pair_mean_has_no_profile_term():
    # Same per-modality cosines to both candidates; the candidate whose
    # weight profile matches the query's wins under the fused cosine only.
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]).repeat(3, 1, 1)
    w = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    q, k = pair_mean_query_key(x, w, mask)
    fused = F.normalize(x.mul(w[..., None]).flatten(1), dim=-1)
    profile = fused[0] @ fused[1:].t()
    assert profile[0] > profile[1] + 0.05  # the artefact
    pair = q[0] @ k[1:].t()
    assert torch.allclose(pair[0], pair[1])  # same cosines, same score


def test_scoring_default_and_choices():
    x, mask = _inputs()
    for cls in ALL:
        out = cls(**CASES[cls][0]).forward_full(x, mask)
        assert out.query is None and out.key is None
        assert out.mask is not None and torch.equal(out.mask, mask)
    assert SCORINGS == ('fused', 'pair_mean')
    with pytest.raises(ValueError, match='scoring'):
        ADCFusion(M, C, scoring='cosine')


def test_icl_on_query_key_equals_the_readable_logits_and_gradients():
    g = torch.Generator().manual_seed(3)
    leaves = [torch.randn(6, 5, generator=g, requires_grad=True)
              for _ in range(4)]
    sq, sk, tq, tk = leaves
    src, tgt = QueryKey(sq, sk), QueryKey(tq, tk)
    l2r, r2l = icl_terms(src, tgt, tau=0.3)
    (l2r.sum() + 2 * r2l.sum()).backward()
    ours = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    ref_l2r = -in_batch_logits(src, tgt, 0.3).log_softmax(-1).diagonal()
    assert torch.allclose(l2r, ref_l2r, atol=1e-5)
    # Target j reads column j of <q(s), k(t)> (the score is assumed
    # symmetric) and its same-KG row <q(t_j), k(t)>.
    same_t = tq @ tk.t() / 0.3
    same_t.fill_diagonal_(float('-inf'))
    col = torch.cat([(sq @ tk.t() / 0.3).t(), same_t], 1)
    assert torch.allclose(r2l, -col.log_softmax(-1).diagonal(), atol=1e-5)
    # On a symmetric (pair-mean) score both directions equal the readable
    # form, gradients included.
    x = torch.randn(12, M, C, generator=g)
    w = torch.softmax(torch.randn(12, M, generator=g), -1)
    w.requires_grad_(True)
    mask = torch.ones(12, M, dtype=torch.bool)

    def loss(readable):
        q, k = pair_mean_query_key(x, w, mask)
        s, t = QueryKey(q[:6], k[:6]), QueryKey(q[6:], k[6:])
        if readable:
            a = -in_batch_logits(s, t, 0.3).log_softmax(-1).diagonal()
            b = -in_batch_logits(t, s, 0.3).log_softmax(-1).diagonal()
        else:
            a, b = icl_terms(s, t, 0.3)
        return a.sum() + 2 * b.sum()
    g_ours = torch.autograd.grad(loss(False), w)[0]
    g_ref = torch.autograd.grad(loss(True), w)[0]
    assert torch.allclose(g_ours, g_ref, atol=1e-5)
    assert ours[0].abs().sum() > 0 and ours[3].abs().sum() > 0


def test_uncertainty_loss_hand_checked():
    u = torch.tensor([[0.2, 0.9], [0.5, float('nan')]])
    p = torch.tensor([[0.7, 0.1], [0.4, 0.3]])
    valid = torch.tensor([[True, True], [True, False]])
    expected = ((0.2 - 0.3) ** 2 + (0.9 - 0.9) ** 2 + (0.5 - 0.6) ** 2) / 3
    assert uncertainty_loss(u, p, valid).item() == pytest.approx(expected)


def test_auxiliary_losses_of_each_fusion():
    x, mask = _inputs()
    p = torch.rand(x.size(0), M, generator=torch.Generator().manual_seed(4))
    for cls in ALL:
        out = cls(**CASES[cls][0]).forward_full(x, mask)
        parts = auxiliary_losses(out, p)
        expected = {'tcp', 'uncertainty'} if cls is ADCFusion else set()
        assert set(parts) == expected, cls
        if cls is ADCFusion:
            assert parts['tcp'].item() == pytest.approx(
                tcp_loss(out.aux.confidence, p, mask).item())
        total = auxiliary_loss(out, p, lambda_tcp=0.5,
                               lambda_uncertainty=2.0)
        ref = sum(auxiliary_losses(out, p, 0.5, 2.0).values(),
                  torch.zeros(()))
        assert total.item() == pytest.approx(ref.item())
    with pytest.raises(ValueError, match=r'\[N, M\]'):
        auxiliary_loss(out, p[:, :2])


def test_drop_in_adc_trains_every_parameter():
    """A task loss on the fused output plus the one auxiliary call gives
    every ADCFusion parameter a non-zero gradient, with inputs that need no
    gradient themselves."""
    torch.manual_seed(0)
    x, mask = _inputs(n=32)
    fusion = ADCFusion(M, C, features='z', ffn=True)
    out = fusion.forward_full(x, mask)
    head = torch.nn.Linear(fusion.out_channels(C), 3)
    y = torch.arange(32) % 3
    p = torch.rand(32, M, generator=torch.Generator().manual_seed(5))
    loss = F.cross_entropy(head(out.fused), y) + auxiliary_loss(out, p)
    loss.backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_default_adc_fuses_inputs_so_the_task_loss_skips_the_transformer():
    # The method as specified: weights are constants, the output is built
    # from x; the transformer learns from RICEALoss's L_out instead.
    x, mask = _inputs()
    fusion = ADCFusion(M, C)
    with pytest.raises(RuntimeError, match='does not require grad'):
        fusion(x, mask).sum().backward()


def test_select_keeps_every_field():
    x, mask = _inputs()
    out = ADCFusion(M, C, scoring='pair_mean').forward_full(x, mask)
    part = out.select(torch.tensor([1, 3]))
    assert isinstance(part, FusionOutput)
    for a, b in zip(part, out):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b[[1, 3]])
    assert torch.equal(part.aux.confidence, out.aux.confidence[[1, 3]])


def test_auroc_hand_checked_and_refusals():
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]),
                 torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([0, 1])) == 0.5
    with pytest.raises(ValueError, match='both classes'):
        auroc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match='finite'):
        auroc(torch.tensor([float('nan'), 2.0]), torch.tensor([0, 1]))


def test_a_fusion_written_for_extras_still_feeds_its_losses():
    from ricea_pyg.nn import ModalityFusion

    class Old(ModalityFusion):
        def fuse(self, x, mask):
            w = mask.float() / mask.sum(-1, keepdim=True)
            return FusionOutput(x.flatten(1), w, None,
                                {'confidence': w.clone()})

    x, mask = _inputs()
    out = Old(M, C).forward_full(x, mask)
    assert torch.equal(out.aux.confidence, out.weights)
    assert torch.equal(out.mask, mask)

    class Wrong(Old):
        def fuse(self, x, mask):
            return super().fuse(x, mask)._replace(aux={'conf': mask})
    with pytest.raises(ValueError, match="'conf'"):
        Wrong(M, C).forward_full(x, mask)


def test_forward_returns_the_uncertainty_detached():
    x, mask = _inputs()
    fusion = ADCFusion(M, C)
    _, (_, u) = fusion(x, mask, return_weights=True)
    assert not u.requires_grad
    assert fusion.forward_full(x, mask).uncertainty.requires_grad
