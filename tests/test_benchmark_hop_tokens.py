"""benchmarks/hop_tokens.py's input rewiring (no training)."""
import pytest
import torch

from ricea_pyg.data import synthetic_pair
from ricea_pyg.train import TrainConfig, model_inputs

from .conftest import load_benchmark, unload_benchmark


@pytest.fixture(scope='module')
def hop_tokens():
    yield load_benchmark('hop_tokens')
    unload_benchmark('hop_tokens')


def test_each_hop_is_a_token(hop_tokens):
    data = synthetic_pair(200, missing={'name': 0.4}, seed=3)
    config = TrainConfig(channels=16, propagate=['name'], progress=False)
    whole = model_inputs(data, config)
    split = hop_tokens.hop_token_inputs(model_inputs, 2)(data, config)
    col = whole.modalities.index('name')
    assert split.modalities == (whole.modalities[:col] +
                                ['name', 'name_h1', 'name_h2'] +
                                whole.modalities[col + 1:])
    assert torch.equal(torch.cat([split.features[m] for m in
                                  ('name', 'name_h1', 'name_h2')], dim=1),
                       whole.features['name'])
    # The other modalities keep their features and masks.
    for m in whole.modalities:
        if m != 'name':
            assert torch.equal(split.mask[:, split.modalities.index(m)],
                               whole.mask[:, whole.modalities.index(m)])
            if m in whole.features:
                assert torch.equal(split.features[m], whole.features[m])
    # A hop is present where the name was and its block is not zero: an
    # imputed name (no own name) has no hop-0 token.
    own = split.mask[:, split.modalities.index('name')]
    assert torch.equal(own, whole.mask[:, col] &
                       split.features['name'].ne(0).any(1))
    assert bool((whole.mask[:, col] & ~own).any())
    # Only what is propagated is split; a width that is not hops + 1
    # blocks is refused.
    plain = TrainConfig(channels=16, propagate=[], progress=False)
    assert hop_tokens.hop_token_inputs(model_inputs, 2)(
        data, plain).modalities == model_inputs(data, plain).modalities
    width = whole.features['name'].size(1)
    wrong = next(h for h in range(3, width) if width % (h + 1))
    with pytest.raises(ValueError, match=f'not {wrong + 1} blocks'):
        hop_tokens.hop_token_inputs(model_inputs, wrong)(data, config)


def test_use_hop_tokens_rewires_the_trainer(hop_tokens, monkeypatch):
    from ricea_pyg.train import trainer as trainer_module
    # Restored after the test, as the benchmark's process never is.
    monkeypatch.setattr(trainer_module, 'model_inputs',
                        trainer_module.model_inputs)
    monkeypatch.setattr(trainer_module, 'NAME_MODALITIES',
                        trainer_module.NAME_MODALITIES)
    hop_tokens.use_hop_tokens(2)
    assert trainer_module.NAME_MODALITIES == (
        'name', 'name_h1', 'name_h2', 'char', 'char_h1', 'char_h2')
    data = synthetic_pair(100, seed=3)
    config = TrainConfig(channels=16, propagate=['name'], progress=False)
    assert trainer_module.model_inputs(data, config).modalities == (
        hop_tokens.hop_token_inputs(model_inputs, 2)(data,
                                                     config).modalities)
