import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from ricea_pyg.io import atomic_save
from ricea_pyg.train.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from ricea_pyg.train.config import TrainConfig


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='train first'):
        load_checkpoint(str(tmp_path / 'none.pt'))
    bad = tmp_path / 'bad.pt'
    bad.write_text('not a checkpoint')
    with pytest.raises(ValueError, match='refused'):
        load_checkpoint(str(bad))
    old = str(tmp_path / 'old.pt')
    atomic_save({'model': {}}, old)  # no format version
    with pytest.raises(ValueError, match='retrain'):
        load_checkpoint(old)
    future = str(tmp_path / 'future.pt')
    atomic_save({'format_version': FORMAT_VERSION + 1}, future)
    with pytest.raises(ValueError, match='format version'):
        load_checkpoint(future)


@pytest.mark.parametrize('fusion, kwargs, temperature', [
    ('adc', {}, 1.0),  # trained with the method's default, pinned
    ('RICEA', {'mode': 'sum'}, 1.0),  # any alias, other options kept
    ('adc', {'temperature': 4.0}, 4.0),  # named: kept
    ('concat', {}, None),  # no temperature to pin
])
def test_version_2_checkpoints_keep_adc_temperature_1(tmp_path, fusion,
                                                      kwargs, temperature):
    path = str(tmp_path / 'v2.pt')
    atomic_save({'format_version': 2, 'config': {
        'fusion': fusion, 'fusion_kwargs': dict(kwargs)}}, path)
    state = load_checkpoint(path)
    assert state['format_version'] == FORMAT_VERSION == 4
    got = state['config']['fusion_kwargs']
    assert got.get('temperature') == temperature
    # Version 3's step runs next: the gradient it trained with, too.
    assert got.get('transformer_input_grad') == (
        None if temperature is None else True)
    assert {k: v for k, v in got.items()
            if k not in ('temperature', 'transformer_input_grad')} == {
        k: v for k, v in kwargs.items() if k != 'temperature'}
    config = TrainConfig.from_checkpoint(state['config'])
    assert config.fusion_kwargs.get('temperature') == temperature
    # A current checkpoint means the current default.
    atomic_save({'format_version': FORMAT_VERSION, 'config': {
        'fusion': fusion, 'fusion_kwargs': dict(kwargs)}}, path)
    assert load_checkpoint(path)['config']['fusion_kwargs'] == kwargs


@pytest.mark.parametrize('fusion, kwargs, pinned', [
    ('adc', {}, True),  # trained with the gradient through, pinned
    ('ricea', {'temperature': 1.0}, True),  # other options kept
    ('adc', {'transformer_input_grad': False}, False),  # named: kept
    ('meaformer', {}, None),  # not ADC
])
def test_version_3_checkpoints_keep_adc_transformer_input_grad(
        tmp_path, fusion, kwargs, pinned):
    path = str(tmp_path / 'v3.pt')
    atomic_save({'format_version': 3, 'config': {
        'fusion': fusion, 'fusion_kwargs': dict(kwargs)}}, path)
    state = load_checkpoint(path)
    assert state['format_version'] == FORMAT_VERSION
    got = state['config']['fusion_kwargs']
    assert got.get('transformer_input_grad') == pinned
    assert {k: v for k, v in got.items()
            if k != 'transformer_input_grad'} == {
        k: v for k, v in kwargs.items() if k != 'transformer_input_grad'}


def test_version_1_is_refused_with_the_versions_read(tmp_path):
    path = str(tmp_path / 'v1.pt')
    atomic_save({'format_version': 1}, path)
    with pytest.raises(ValueError, match='reads 2 to 4'):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ('EVIL CODE RAN',))


def test_pickled_code_never_runs(tmp_path):
    path = str(tmp_path / 'evil.pt')
    torch.save({'format_version': FORMAT_VERSION, 'x': _Evil()}, path)
    code = ('import sys; from ricea_pyg.train.checkpoint import '
            'load_checkpoint\ntry:\n    load_checkpoint(sys.argv[1])\n'
            'except ValueError as e:\n    print("refused:", e)')
    out = subprocess.run([sys.executable, '-c', code, path],
                         capture_output=True, text=True, check=True).stdout
    assert 'EVIL CODE RAN' not in out and out.startswith('refused:')


def test_rng_state_roundtrip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    path = str(tmp_path / 'rng.pt')
    atomic_save({'format_version': FORMAT_VERSION, 'rng': rng_state()},
                path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item(),
                random.gauss(0, 1))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(path)['rng'])
    assert (random.random(), np.random.rand(), torch.rand(1).item(),
            random.gauss(0, 1)) == expected
