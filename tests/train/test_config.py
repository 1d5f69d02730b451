import json

import pytest

from ricea_pyg.train import ConfigError, TrainConfig


def test_defaults_follow_method_md():
    c = TrainConfig()
    assert (c.lr, c.weight_decay, c.warmup, c.clip, c.batch_size, c.tau) == (
        5e-4, 1e-4, 0.15, 1.0, 3500, 0.1)
    assert c.candidates == 'test' and c.csls_k == 3


def test_file_and_overrides(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text(json.dumps({'epochs': 7, 'fusion': 'meaformer'}))
    c = TrainConfig.from_file(str(path), epochs=9)
    assert c.epochs == 9 and c.fusion == 'meaformer'
    toml = tmp_path / 'c.toml'
    toml.write_text('epochs = 3\nlr = 0.001\n')
    assert TrainConfig.from_file(str(toml)).lr == 0.001


def test_errors_name_the_problem(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text('{"epoch": 3}')
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainConfig.from_file(str(path))
    path.write_text('{"epochs": 3,\n oops}')
    with pytest.raises(ConfigError, match=r'c\.json:2'):
        TrainConfig.from_file(str(path))
    with pytest.raises(ConfigError, match='not found'):
        TrainConfig.from_file(str(tmp_path / 'none.json'))
    with pytest.raises(ConfigError, match='candidates'):
        TrainConfig(candidates='train')
    with pytest.raises(ConfigError, match='epochs'):
        TrainConfig(epochs=0)
