import json

import pytest

from ricea_pyg.train import ConfigError, TrainConfig


def test_defaults_follow_method_md():
    c = TrainConfig().resolve(15_000, 15_000, 6)  # DBP15K's size
    assert (c.lr, c.weight_decay, c.warmup, c.clip, c.batch_size, c.tau,
            c.channels) == (5e-4, 1e-4, 0.15, 1.0, 3500, 0.1, 300)
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


@pytest.mark.parametrize('key,value,fix', [
    ('tau', 0.0, 'positive'), ('tau', -0.1, 'positive'),
    ('lr', 0.0, 'positive'), ('lr', float('nan'), 'positive'),
    ('alpha', -0.01, '[0, 1]'), ('alpha', 1.5, '[0, 1]'),
    ('clip', -1.0, '>= 0'), ('weight_decay', -1e-4, '>= 0'),
    ('dropout', 1.0, '[0, 1)'), ('dropout', -0.1, '[0, 1)'),
    ('lambda_tcp', -1.0, '>= 0'), ('tau', 'hot', 'must be a number'),
    ('batch_size', 0, 'at least 1'),
])
def test_range_errors_name_key_value_and_fix(key, value, fix):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{key: value})
    text = str(e.value)
    assert '\n' not in text and key in text and repr(value) in text
    assert fix in text


def test_range_edges_are_accepted():
    c = TrainConfig(alpha=0.0, clip=0.0, weight_decay=0.0, dropout=0.0,
                    lambda_tcp=0.0, epochs=1, batch_size=1)
    assert TrainConfig(alpha=1.0, dropout=0.99).alpha == 1.0
    assert c.clip == 0.0


def test_propagation_defaults_by_size_and_errors():
    assert TrainConfig().resolve(15_000, 15_000, 4).propagate == ['name',
                                                                  'char']
    assert TrainConfig().resolve(100_000, 10, 4).propagate == []
    assert TrainConfig(propagate=('name',)).propagate == ['name']
    assert TrainConfig(propagate=[]).resolve(10, 10, 2).propagate == []
    with pytest.raises(ConfigError, match='propagate must be a list'):
        TrainConfig(propagate='name')
    with pytest.raises(ConfigError, match='propagation_hops'):
        TrainConfig(propagation_hops=0)


def test_label_mode_and_weight_are_checked():
    assert TrainConfig(label_mode='beside', label_weight=0.25).label_weight \
        == 0.25
    with pytest.raises(ConfigError, match="label_mode must be 'fused' or "
                       "'beside'"):
        TrainConfig(label_mode='side')
    assert TrainConfig(label_weight=(0.25, 0.5)).label_weight == [0.25, 0.5]
    for bad in (0, 1, 1.5, True, '0.5', [], [0.5, 1.0], [0.5, None]):
        with pytest.raises(ConfigError, match=r'label_weight must be a '
                           r'number in \(0, 1\)'):
            TrainConfig(label_weight=bad)
    # A checkpoint from before the option scored its labels through the
    # fusion.
    assert TrainConfig.from_checkpoint({}).label_mode == 'fused'


def test_labels_beside_need_labels():
    from ricea_pyg.data import synthetic_pair
    from ricea_pyg.train import resolve_config
    data = synthetic_pair(60, seed=0)
    with pytest.raises(ConfigError, match="label_mode='beside'.*none"):
        resolve_config(data, TrainConfig(label_mode='beside'))  # names
    resolved = resolve_config(data, TrainConfig(
        label_mode='beside', modalities=['graph', 'rel']))
    assert resolved.label_channels == 1024


def test_recipe_sets_its_fields_and_overrides_win():
    from ricea_pyg.train import RECIPES
    config = TrainConfig.recipe('structure-only', seed=3, label_rounds=0)
    fields = RECIPES['structure-only']
    for key, value in fields.items():
        if key != 'label_rounds':
            assert getattr(config, key) == value
    assert config.seed == 3 and config.label_rounds == 0
    config.label_weight.append(0.9)  # a copy: the recipe stays as it was
    assert 0.9 not in RECIPES['structure-only']['label_weight']
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        TrainConfig.recipe('fast')
    with pytest.raises(ConfigError, match="recipe 'structure-only'"):
        TrainConfig.recipe('structure-only', epoch=3)
