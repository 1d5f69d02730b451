"""Bad configurations and tiny data fail early with one clear line
(issue 16, item 7)."""
import pytest
import torch

from ricea_pyg.data import split_alignment
from ricea_pyg.data.synthetic import synthetic_pair
from ricea_pyg.train import ConfigError, TrainConfig


def _one_line(e):
    text = str(e.value)
    assert '\n' not in text
    return text


@pytest.mark.parametrize('modalities,words', [
    ([], ['modalities', 'empty', 'at least one']),
    (['img', 'name', 'img'], ['repeats', "'img'", 'once']),
    (['graph', 'image'], ["'image'", 'choose from', "'img'"]),
    ('graph,rel', ['list of names', "'graph,rel'"]),
])
def test_bad_modalities(modalities, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(modalities=modalities)
    text = _one_line(e)
    for word in words:
        assert word in text


def test_empty_modalities_from_command_line_style_value():
    # `--modalities ','` splits to an empty list.
    with pytest.raises(ConfigError, match='modalities is empty'):
        TrainConfig.from_dict({'modalities': [m for m in ','.split(',')
                                              if m.strip()]})


def test_cli_refuses_empty_modalities(capsys):
    from ricea_pyg.cli import main
    assert main(['train', '--dataset', 'synthetic', '--entities', '50',
                 '--modalities', ',', '--no-progress', '--out',
                 '/nonexistent/never-written']) == 2
    assert 'modalities is empty' in capsys.readouterr().err


def test_good_modalities_pass():
    assert TrainConfig(modalities=['graph', 'name']).modalities == [
        'graph', 'name']


def test_unknown_fusion_kwarg_names_key_and_valid_ones():
    with pytest.raises(ConfigError) as e:
        TrainConfig(fusion='global', fusion_kwargs={'mdoe': 'sum'})
    text = _one_line(e)
    assert "'mdoe'" in text and "'sum'" in text
    # the valid keys follow the fusion's signature (which may grow)
    assert "'mode'" in text.split('valid keys:')[1]


def test_fusion_kwargs_checked_against_the_chosen_fusion():
    # 'heads' is an argument of the ADC fusion, not of the concat one.
    assert TrainConfig(fusion='adc', fusion_kwargs={'heads': 2})
    assert TrainConfig(fusion='GlobalWeightFusion',
                       fusion_kwargs={'mode': 'sum'})
    with pytest.raises(ConfigError, match="key 'heads'.*ConcatFusion"):
        TrainConfig(fusion='concat', fusion_kwargs={'heads': 2})
    # Set by the model itself: passing them again would clash.
    with pytest.raises(ConfigError, match="'channels'"):
        TrainConfig(fusion_kwargs={'channels': 8})
    with pytest.raises(ConfigError, match='object of keyword'):
        TrainConfig(fusion_kwargs=['mode'])


def test_unknown_fusion_name():
    with pytest.raises(ConfigError, match=r"fusion='nope'.*'adc'"):
        TrainConfig(fusion='nope')


def test_tiny_split_says_how_many_pairs_are_needed():
    for n in (0, 1, 2):
        pairs = torch.arange(n).repeat(2, 1)
        with pytest.raises(ValueError, match=f'at least 3 .*got {n}'):
            split_alignment(pairs)
    parts = split_alignment(torch.arange(3).repeat(2, 1))
    assert [parts[k].size(1) for k in ('train_index', 'val_index',
                                       'test_index')] == [1, 1, 1]
    # Without a validation share, two pairs suffice.
    parts = split_alignment(torch.arange(2).repeat(2, 1), val_ratio=0.0)
    assert parts['train_index'].size(1) == parts['test_index'].size(1) == 1


def test_split_official_mask_leaving_no_test_pairs():
    with pytest.raises(ValueError, match='test without pairs'):
        split_alignment(torch.arange(5).repeat(2, 1), val_ratio=0.0,
                        train_mask=torch.ones(5, dtype=torch.bool))


@pytest.mark.parametrize('n', [0, -5])
def test_synthetic_pair_needs_entities(n):
    with pytest.raises(ValueError, match=f'num_entities >= 1 .*got {n}'):
        synthetic_pair(n)


def test_synthetic_pair_too_small_to_split():
    with pytest.raises(ValueError, match='at least 3 aligned pairs'):
        synthetic_pair(2)


def test_one_epoch_one_step_trains():
    # The trainer uses the rate at the middle of each step, so even a run of
    # one epoch of one batch moves the weights (it was lr 0 before).
    from ricea_pyg.train import Trainer
    data = synthetic_pair(60, seed=1)
    trainer = Trainer(data, TrainConfig(epochs=1, batch_size=4096,
                                        channels=8, progress=False),
                      log=lambda _: None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.train_epoch()
    assert row['lr'] > 0
    assert any(not torch.equal(v, trainer.model.state_dict()[k])
               for k, v in before.items())
