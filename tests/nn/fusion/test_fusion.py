"""Contract tests every registered fusion must pass, plus one specific test
per fusion (the meta-test checks that both exist)."""
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ricea_pyg.nn.fusion as fusion_pkg
from ricea_pyg.nn import (
    FUSIONS,
    ADCFusion,
    ConcatFusion,
    GlobalWeightFusion,
    MEAformerFusion,
    ModalityFusion,
    RelativeInteraction,
    fusion_resolver,
)

M, C, N = 4, 8, 6

# Constructor and expected repr for each registered fusion.
CASES = {
    ConcatFusion: (dict(num_modalities=M), 'ConcatFusion(4)'),
    GlobalWeightFusion: (dict(num_modalities=M),
                         'GlobalWeightFusion(4, mode=concat)'),
    MEAformerFusion: (dict(num_modalities=M, channels=C),
                      'MEAformerFusion(4, 8, num_layers=1, heads=1, '
                      'mode=concat)'),
    ADCFusion: (dict(num_modalities=M, channels=C),
                'ADCFusion(4, 8, uncertainty=row, calibration=geo, '
                'mode=concat)'),
}
ALL = list(CASES)


def make(cls, **extra):
    torch.manual_seed(0)
    kwargs, _ = CASES[cls]
    return cls(**{**kwargs, **extra})


def inputs(n=N, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, M, C, generator=gen)
    mask = torch.rand(n, M, generator=gen) > 0.3
    mask[0] = False                       # nothing present
    mask[1] = torch.tensor([False, True, False, False])  # K = 1
    mask[2] = True
    return x, mask


def test_every_fusion_has_a_test_case():
    registered = set(FUSIONS.values())
    subclasses = {obj for _, obj in inspect.getmembers(fusion_pkg,
                                                       inspect.isclass)
                  if issubclass(obj, ModalityFusion) and obj is not
                  ModalityFusion}
    missing = (registered | subclasses) - set(CASES)
    assert not missing, f'fusions without a test case: {missing}'
    names = {n for n, _ in inspect.getmembers(
        inspect.getmodule(test_every_fusion_has_a_test_case),
        inspect.isfunction)}
    for cls in CASES:
        assert f'test_{cls.__name__.lower()}_specific' in names, cls


@pytest.mark.parametrize('cls', ALL)
def test_repr(cls):
    assert repr(make(cls)) == CASES[cls][1]


@pytest.mark.parametrize('cls', ALL)
def test_resolver(cls):
    name = next(k for k, v in FUSIONS.items() if v is cls)
    kwargs, _ = CASES[cls]
    assert isinstance(fusion_resolver(name, **kwargs), cls)
    assert isinstance(fusion_resolver(cls.__name__, **kwargs), cls)
    inst = make(cls)
    assert fusion_resolver(inst) is inst


def test_resolver_unknown():
    with pytest.raises(ValueError, match='could not resolve'):
        fusion_resolver('nope', 2)


@pytest.mark.parametrize('cls', ALL)
def test_shapes_list_and_stacked(cls):
    f = make(cls)
    x, mask = inputs()
    out = f(x, mask=mask)
    out_list = f(list(x.unbind(1)), mask=mask)
    assert out.shape == (N, f.out_channels(C)) == (N, M * C)
    assert torch.allclose(out, out_list)
    fused, (w, u) = f(x, mask=mask, return_weights=True)
    assert torch.equal(fused, out) and w.shape == (N, M)
    assert u is None or u.shape == (N, M)


@pytest.mark.parametrize('cls', ALL)
def test_weights_normalised_and_exactly_zero_when_masked(cls):
    f = make(cls)
    x, mask = inputs()
    _, (w, u) = f(x, mask=mask, return_weights=True)
    assert (w[~mask] == 0).all()
    present = mask.any(-1)
    assert torch.allclose(w[present].sum(-1), torch.ones(int(present.sum())))
    if u is not None:
        assert (u[~mask] == 1).all() and ((u >= 0) & (u <= 1)).all()
        assert u[1, 1] == 0  # K = 1: no uncertainty


@pytest.mark.parametrize('cls', ALL)
def test_all_masked_row_is_zero_without_nan(cls):
    f = make(cls)
    x, mask = inputs()
    out, (w, _) = f(x, mask=mask, return_weights=True)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (w[0] == 0).all()


@pytest.mark.parametrize('cls', ALL)
def test_gradients_reach_only_present_modalities(cls):
    f = make(cls)
    x, mask = inputs()
    x.requires_grad_()
    out = f(x, mask=mask)
    readout = torch.randn(out.shape, generator=torch.Generator()
                          .manual_seed(1))
    (out * readout).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all()
    assert (x.grad[mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize('cls', ALL)
def test_permutation_equivariance(cls):
    f = make(cls)
    x, mask = inputs(n=10)
    perm = torch.randperm(10)
    assert torch.allclose(f(x, mask=mask)[perm], f(x[perm], mask=mask[perm]),
                          atol=1e-6)


@pytest.mark.parametrize('cls', ALL)
def test_determinism_under_seed(cls):
    x, mask = inputs()
    a, b = make(cls), make(cls)
    assert torch.equal(a(x, mask=mask), b(x, mask=mask))


@pytest.mark.parametrize('cls', [c for c in ALL if c is not ConcatFusion])
def test_reset_parameters_changes_parameters(cls):
    f = make(cls)
    params = list(f.parameters())
    assert params
    with torch.no_grad():
        for p in params:
            p.fill_(0.123)
    f.reset_parameters()
    assert all(not torch.all(p == 0.123) for p in params)


@pytest.mark.parametrize('cls', ALL)
def test_torch_compile(cls):
    f = make(cls)
    x, mask = inputs()
    compiled = torch.compile(f)
    assert torch.allclose(compiled(x, mask=mask), f(x, mask=mask),
                          atol=1e-5)


@pytest.mark.parametrize('cls', ALL)
def test_sum_mode_or_ragged(cls):
    f = make(cls)
    x, mask = inputs()
    if cls.ragged:
        xs = [x[:, m, :m + 2] for m in range(M)]
        out = f(xs, mask=mask)
        assert out.shape == (N, sum(m + 2 for m in range(M)))
        assert f.out_channels([m + 2 for m in range(M)]) == out.size(1)
    else:
        with pytest.raises(ValueError, match='common size'):
            f([x[:, m, :m + 2] for m in range(M)], mask=mask)
    if 'mode' in inspect.signature(cls).parameters:
        g = make(cls, mode='sum')
        assert g(x, mask=mask).shape == (N, C) and g.out_channels(C) == C


@pytest.mark.parametrize('cls', ALL)
def test_bad_input_shapes(cls):
    f = make(cls)
    x, mask = inputs()
    with pytest.raises(ValueError, match='expects'):
        f(x[:, :2])
    with pytest.raises(ValueError, match='mask must be'):
        f(x, mask=mask[:, :2])


finite_scales = st.sampled_from([0.0, 1e-8, 1.0, 1e3, 1e6])


@pytest.mark.parametrize('cls', ALL)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(scale=finite_scales, seed=st.integers(0, 10_000),
       k=st.integers(0, M), zero_vectors=st.booleans())
def test_extreme_inputs_stay_finite(cls, scale, seed, k, zero_vectors):
    f = make(cls)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, M, C, generator=gen) * scale
    if zero_vectors:
        x[:, 0] = 0
    mask = torch.zeros(5, M, dtype=torch.bool)
    mask[:, :k] = True
    x.requires_grad_()
    out, (w, u) = f(x, mask=mask, return_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert u is None or torch.isfinite(u).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# -- one specific test per fusion --------------------------------------------

def test_concatfusion_specific():
    f = make(ConcatFusion)
    x, mask = inputs()
    out, (w, _) = f(x, mask=mask, return_weights=True)
    norms = out.view(N, M, C).norm(dim=-1)
    assert torch.allclose(norms, mask.float(), atol=1e-6)
    assert torch.allclose(w[2], torch.full((M,), 0.25))


def test_globalweightfusion_specific():
    f = make(GlobalWeightFusion)
    with torch.no_grad():
        f.logits.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x, mask = inputs()
    _, (w, _) = f(x, mask=mask, return_weights=True)
    assert torch.allclose(w[2], torch.tensor([0.0, 1.0, 2.0, 3.0]).softmax(0))
    x.requires_grad_()
    f(x, mask=mask).sum().backward()
    assert f.logits.grad is not None and f.logits.grad.abs().sum() > 0


def test_meaformerfusion_specific():
    f = make(MEAformerFusion)
    x, mask = inputs()
    out = f.forward_full(x, mask)
    attn = out.extras['attention']
    rows = mask.view(N, 1, M, 1).float()
    received = (attn * rows).sum(dim=(1, 2)) / (M ** 0.5)
    expected = received.masked_fill(~mask, float('-inf')).softmax(-1)
    assert torch.allclose(out.weights[2:], expected[2:], atol=1e-6)
    # Attention is the weight: the gradient reaches the transformer.
    out.fused.sum().backward()
    assert f.transformer.layers[0].qkv.weight.grad.abs().sum() > 0


def test_adcfusion_specific():
    torch.manual_seed(0)
    f = ADCFusion(num_modalities=4, channels=32)
    xs = [torch.randn(7, 32) for _ in range(4)]
    mask = torch.rand(7, 4) > 0.2
    fused, (w, u) = f(xs, mask=mask, return_weights=True)
    assert fused.shape == (7, 128) and w.shape == u.shape == (7, 4)
    # The calibration step alone, on a RelativeInteraction output.
    inter = f.interaction(xs, mask)
    assert isinstance(f.interaction, RelativeInteraction)
    step = f.calibrate(inter)
    assert torch.allclose(step.fused, fused) and torch.equal(step.weights, w)
    # w = softmax(b * RC / T) over present modalities.
    e = step.extras
    expected = (e['belief'] * e['rc']).masked_fill(~mask, float('-inf'))
    rows = mask.any(-1)
    assert torch.allclose(w[rows], expected[rows].softmax(-1), atol=1e-6)


def test_adc_weights_are_constants_unless_weights_grad():
    x, mask = inputs()
    x.requires_grad_()
    f = make(ADCFusion)
    f(x, mask=mask).sum().backward()
    assert x.grad is not None
    assert f.interaction.confidence.weights[0].grad is None
    assert f.interaction.transformer.layers[0].qkv.weight.grad is None
    g = make(ADCFusion, weights_grad=True)
    out = g(x, mask=mask)
    (out * torch.randn(out.shape)).sum().backward()
    assert g.interaction.confidence.weights[0].grad.abs().sum() > 0


def test_adc_calibration_only_in_eval():
    x, mask = inputs()
    f = make(ADCFusion, calibrate_in_train=False)
    train = f.train().forward_full(x, mask)
    assert torch.equal(train.extras['rc'], mask.float())
    evaluation = f.eval().forward_full(x, mask)
    assert not torch.equal(evaluation.extras['rc'], mask.float())


@pytest.mark.parametrize('uncertainty', ['row', 'col', 'entity'])
@pytest.mark.parametrize('calibration', ['geo', 'pdf_remnant'])
def test_adc_switches(uncertainty, calibration):
    x, mask = inputs()
    f = make(ADCFusion, uncertainty=uncertainty, calibration=calibration,
             temperature=0.5, heads=2, num_layers=2, ffn=True,
             shared_confidence=True, dropout=0.1)
    out, (w, u) = f(x, mask=mask, return_weights=True)
    assert torch.isfinite(out).all() and (w[~mask] == 0).all()
    with pytest.raises(ValueError):
        make(ADCFusion, uncertainty='bad')


def test_relative_interaction_outputs():
    torch.manual_seed(0)
    ri = RelativeInteraction(M, C, heads=2)
    assert repr(ri) == 'RelativeInteraction(4, 8, num_layers=1, heads=2)'
    x, mask = inputs()
    out = ri(x, mask)
    assert out.z.shape == (N, M, C) and out.attention.shape == (N, 2, M, M)
    assert (out.z[~mask] == 0).all() and (out.confidence[~mask] == 0).all()
    k = mask.sum(-1)
    assert torch.allclose(out.holo.sum(-1)[k > 0], (k - 1).clamp_min(1)
                          .float()[k > 0] * (k[k > 0] > 1) + (k[k > 0] == 1),
                          atol=1e-5)
    assert torch.allclose(out.belief, out.confidence + out.holo)
    assert not out.belief.requires_grad
    # Attention puts no mass on missing keys.
    keys = (~mask).view(N, 1, 1, M).expand_as(out.attention)
    assert (out.attention[keys] == 0).all()
    # The confidence MLP learns from a loss on c (L_tcp).
    out.confidence.sum().backward()
    assert ri.confidence.weights[0].grad.abs().sum() > 0


def test_per_modality_confidence_mlp_is_separate():
    ri = RelativeInteraction(M, C)
    x, mask = inputs()
    x = x.clone()
    mask = torch.ones_like(mask)
    c1 = ri(x, mask).confidence
    x[:, 0] += 1.0
    c2 = ri(x, mask).confidence
    assert not torch.allclose(c1[:, 0], c2[:, 0])
    assert torch.allclose(c1[:, 1:], c2[:, 1:])
