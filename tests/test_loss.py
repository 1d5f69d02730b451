import math

import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.loss import (
    RICEALoss,
    UncertaintyWeighting,
    icl_loss,
    icl_terms,
    in_batch_logits,
    tcp_loss,
    tcp_target,
    true_counterpart_probability,
)
from ricea_pyg.models import ModelOutput
from ricea_pyg.nn import FusionAuxiliary


def test_icl_hand_checked():
    # Orthonormal pairs, tau = 1: each row sees logits [1, 0 | -inf, 0].
    s = torch.eye(2)
    loss = icl_loss(s, s.clone(), tau=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)


@pytest.mark.parametrize('batch', [1, 2, 7])
def test_icl_terms_equal_cross_entropy_over_in_batch_logits(batch):
    s, t = torch.randn(batch, 5), torch.randn(batch, 5)
    l2r, r2l = icl_terms(s, t, tau=0.3)
    idx = torch.arange(batch)
    ref_l2r = F.cross_entropy(in_batch_logits(s, t, 0.3), idx,
                              reduction='none')
    ref_r2l = F.cross_entropy(in_batch_logits(t, s, 0.3), idx,
                              reduction='none')
    assert torch.allclose(l2r, ref_l2r, atol=1e-5)
    assert torch.allclose(r2l, ref_r2l, atol=1e-5)
    p_s, p_t = true_counterpart_probability(s, t, 0.3)
    assert torch.allclose(p_s, (-ref_l2r).exp(), atol=1e-5)


def test_icl_gradients_finite_and_batched():
    s = torch.randn(3, 4, 6, requires_grad=True)
    t = torch.randn(3, 4, 6)
    l2r, r2l = icl_terms(s, t)
    assert l2r.shape == (3, 4)
    assert torch.allclose(l2r[1], icl_terms(s[1], t[1])[0])
    (l2r.sum() + r2l.sum()).backward()
    assert torch.isfinite(s.grad).all()
    one = torch.randn(1, 6, requires_grad=True)
    icl_loss(one, torch.randn(1, 6)).backward()  # B = 1: no same-KG term
    assert torch.isfinite(one.grad).all()


def test_icl_weights():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    l2r, r2l = icl_terms(s, t)
    expected = (0.5 * (l2r + r2l))[[0, 2]].mean()
    assert torch.allclose(icl_loss(s, t, weight=w), expected)
    assert icl_loss(s, t, weight=torch.zeros(4)).item() == 0.0


def test_tcp_target_and_loss_hand_checked():
    # B = 2 pairs, M = 1 modality, tau = 1.
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    p_s, p_t = tcp_target(s, t, tau=1.0)
    e = math.e
    # source 0: cross [1, 1], same-KG [masked, 0] -> p = e / (2e + 1)
    # source 1: cross [0, 0], same-KG [0, masked] -> p = 1 / 3
    assert torch.allclose(p_s[:, 0], torch.tensor([e / (2 * e + 1), 1 / 3]))
    # target 0: cross [1, 0], same-KG [masked, 1] -> e / (2e + 1)
    assert torch.allclose(p_t[0, 0], torch.tensor(e / (2 * e + 1)))
    assert not p_s.requires_grad
    logits = in_batch_logits(s[:, 0], t[:, 0], 1.0)
    assert logits.shape == (2, 4) and logits[0, 2] == float('-inf')
    c = torch.tensor([[0.5], [0.5]], requires_grad=True)
    valid = torch.tensor([[True], [False]])
    loss = tcp_loss(c, p_s, valid)
    assert torch.allclose(loss, (0.5 - p_s[0, 0]).abs())
    loss.backward()
    assert c.grad[1, 0] == 0
    assert tcp_loss(c, p_s, torch.zeros_like(valid)) == 0


@pytest.mark.parametrize('module', ['ricea_pyg.nn.fusion',
                                    'ricea_pyg.nn.fusion.functional'])
@pytest.mark.parametrize('name', ['tcp_loss', 'tcp_target'])
def test_tcp_old_names_warn_and_point_to_loss(module, name):
    import importlib

    import ricea_pyg.loss
    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning,
                      match=rf'{module}\.{name} moved to '
                            rf'ricea_pyg\.loss\.{name}') as record:
        moved = getattr(old, name)
    assert moved is getattr(ricea_pyg.loss, name)
    assert record[0].filename == __file__  # points at the caller
    assert name not in old.__all__
    with pytest.raises(AttributeError, match='no attribute'):
        old.tcp_nothing  # noqa: B018


def test_uncertainty_weighting_hand_checked():
    uw = UncertaintyWeighting(3)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.0, math.log(2.0), 5.0]))
    total = uw([torch.tensor(3.0), torch.tensor(4.0), None])
    assert total.item() == pytest.approx(3.0 + 2.0 + math.log(2.0))
    total.backward()
    assert uw.log_vars.grad[2] == 0  # an absent term contributes nothing
    with pytest.raises(ValueError, match='expected 3'):
        uw([torch.tensor(1.0)])


def _outputs(b=5, m=3, d=4, extras=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(2):
        x = torch.randn(b, m, d, generator=g)
        mask = torch.ones(b, m, dtype=torch.bool)
        aux = None
        if extras:
            aux = FusionAuxiliary(z=torch.randn(b, m, d, generator=g),
                                  confidence=torch.rand(b, m, generator=g))
        outs.append(ModelOutput(x.flatten(1), x, mask, torch.full(
            (b, m), 1.0 / m), None, aux))
    return outs


def test_ricea_loss_parts_hand_checked():
    src, tgt = _outputs()
    crit = RICEALoss(3, tau=0.1, uncertainty_weighting=False)
    total, parts = crit(src, tgt)
    assert set(parts) == {'joint', 'in', 'out', 'tcp'}
    assert parts['joint'] == pytest.approx(
        icl_loss(src.fused, tgt.fused).item(), rel=1e-5)
    l_in = sum(icl_loss(src.x[:, m], tgt.x[:, m]) for m in range(3))
    assert parts['in'] == pytest.approx(l_in.item(), rel=1e-5)
    p_s, p_t = tcp_target(src.x, tgt.x, 0.1)  # the functional reference
    tcp = 0.5 * (tcp_loss(src.extras['confidence'], p_s, src.mask)
                 + tcp_loss(tgt.extras['confidence'], p_t, tgt.mask))
    assert parts['tcp'] == pytest.approx(tcp.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-5)


def test_ricea_loss_without_transformer_or_confidence():
    src, tgt = _outputs(extras=False)
    _, parts = RICEALoss(3)(src, tgt)
    assert set(parts) == {'joint', 'in'}


def test_ricea_loss_missing_modality_contributes_zero():
    src, tgt = _outputs()
    src.mask[:, 2] = False
    crit = RICEALoss(3, lambda_tcp=0.0)
    total, parts = crit(src, tgt)
    total.backward()
    assert crit.in_weighting.log_vars.grad[2] == 0
    assert crit.in_weighting.log_vars.grad[0] != 0
    assert 'tcp' not in parts


@pytest.mark.parametrize('shape', [(1, 3), (5, 4), (2, 6, 3), (3, 1, 2),
                                   (2, 2, 4, 3)])
def test_icl_terms_gradcheck_against_autograd_reference(shape):
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(*shape, generator=gen, dtype=torch.double,
                    requires_grad=True)
    t = torch.randn(*shape, generator=gen, dtype=torch.double,
                    requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: icl_terms(a, b, 0.5),
                                    (s, t))
    g1, g2 = torch.randn(2, *shape[:-1], generator=gen, dtype=torch.double)
    ours = torch.autograd.grad((icl_terms(s, t, 0.2)[0] * g1).sum()
                               + (icl_terms(s, t, 0.2)[1] * g2).sum(),
                               (s, t))
    idx = torch.arange(shape[-2])
    ce = torch.nn.functional.cross_entropy

    def ref_dir(a, b):
        logits = in_batch_logits(a, b, 0.2)
        return ce(logits.reshape(-1, logits.size(-1)),
                  idx.repeat(logits.numel() // logits.size(-1)
                             // shape[-2]), reduction='none').view(
                      shape[:-1])
    ref = torch.autograd.grad((ref_dir(s, t) * g1).sum()
                              + (ref_dir(t, s) * g2).sum(), (s, t))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_icl_terms_refuses_rows_of_different_shapes():
    s, t = torch.randn(2, 5, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match=r'one shape \[\.\.\., B, d\]'):
        icl_terms(s, t)
    with pytest.raises(ValueError, match='one shape'):
        icl_terms(torch.randn(3), torch.randn(3))
