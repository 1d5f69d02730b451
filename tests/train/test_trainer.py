import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ricea_pyg.data import synthetic_pair
from ricea_pyg.train import TrainConfig, Trainer, evaluate_embeddings


def small_config(**kw):
    base = dict(channels=16, epochs=4, batch_size=64, eval_every=2,
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope='module')
def data():
    return synthetic_pair(300, missing={'img': 0.3}, seed=5)


def quiet(_):
    pass


def test_schedule_warmup_then_cosine(data):
    t = Trainer(data, small_config(epochs=10, warmup=0.2), log=quiet)
    assert t.lr_at(0, 0.0) == 0.0
    assert t.lr_at(1, 0.0) == pytest.approx(5e-4 * 0.1 / 0.2)
    assert t.lr_at(2, 0.0) == pytest.approx(5e-4)
    assert t.lr_at(6, 0.0) == pytest.approx(5e-4 * 0.5 * (1 + math.cos(
        math.pi * 0.5)))


def test_selection_uses_validation_and_tests_once(data, tmp_path):
    calls = []

    class Recording(Trainer):
        def evaluate(self, split='val', **kw):
            calls.append((split, self.epoch))
            return super().evaluate(split, **kw)

    t = Recording(data, small_config(), out_dir=str(tmp_path), log=quiet)
    metrics = t.fit()
    test_calls = [c for c in calls if c[0] == 'test']
    assert len(test_calls) == 2  # CSLS and cosine, once each, at the end
    assert all(e == t.total_epochs for _, e in test_calls)
    assert [e for s, e in calls if s == 'val'] == [1, 3]
    for name in ('last.pt', 'best.pt', 'log.csv'):
        assert os.path.isfile(tmp_path / name)
    assert set(metrics['test']) >= {'hits@1', 'hits@10', 'mrr', 'mr',
                                    'r2l_hits@1'}
    assert metrics['best_epoch'] in (2, 4)


def test_deterministic_with_seed(data):
    a = Trainer(data, small_config(), log=quiet).fit()
    b = Trainer(data, small_config(), log=quiet).fit()
    assert a['test'] == b['test'] and a['val'] == b['val']


def test_early_stopping_on_patience(data):
    scores = iter([0.5, 0.4, 0.3, 0.9])

    class Falling(Trainer):
        def evaluate(self, split='val', **kw):
            out = super().evaluate(split, **kw)
            if split == 'val':
                out['mrr'] = next(scores)
            return out

    logs = []
    t = Falling(data, small_config(epochs=8, eval_every=1, patience=2),
                log=logs.append)
    m = t.fit()
    assert m['epochs_run'] == 3 and m['best_epoch'] == 1
    assert any('early stop' in line for line in logs)


def test_iterative_mode_adds_pairs_and_logs_correctness(data):
    logs = []
    c = small_config(epochs=6, iterative=True, iter_epochs=4, iter_every=1,
                     iter_add_every=2, lr=5e-3)
    t = Trainer(data, c, log=logs.append)
    before = t.train_pairs.size(1)
    t.fit()
    added = [r for r in t.history if 'added' in r]
    assert t.train_pairs.size(1) == before + sum(r['added'] for r in added)
    assert added and all(0 <= r['added_correct'] <= r['added']
                         for r in added)
    assert any(line.startswith('iterative: added') for line in logs)
    assert t.lr_at(6, 0.0) == 0.0  # stage 2 warms up again, at lr / 5
    assert t.lr_at(7, 0.5) <= 5e-3 * 0.2


def test_evaluate_embeddings_candidates():
    src = torch.eye(4)
    tgt = torch.eye(4)[[1, 0, 2, 3]]
    pairs = torch.tensor([[0, 1], [1, 0]])
    test = evaluate_embeddings(src, tgt, pairs, csls_k=0, candidates='test')
    every = evaluate_embeddings(src, tgt, pairs, csls_k=0, candidates='all')
    assert test['hits@1'] == every['hits@1'] == 1.0
    with pytest.raises(ValueError, match='candidates'):
        evaluate_embeddings(src, tgt, pairs, candidates='train')


def test_resume_refuses_other_settings(data, tmp_path):
    Trainer(data, small_config(epochs=2), out_dir=str(tmp_path),
            log=quiet).fit()
    t = Trainer(data, small_config(epochs=2, lr=1e-3), out_dir=str(tmp_path),
                log=quiet)
    with pytest.raises(ValueError, match="'lr'"):
        t.fit(resume=True)


TRAIN = [sys.executable, '-m', 'ricea_pyg.cli', 'train', '--dataset',
         'synthetic', '--entities', '1500', '--channels', '48',
         '--batch-size', '256', '--epochs', '30', '--eval-every', '3',
         '--checkpoint-every', '1', '--threads', '1', '--no-progress']


def _metrics(folder):
    import json
    with open(os.path.join(folder, 'metrics.json')) as f:
        m = json.load(f)
    return m['val'], m['test'], m['best_epoch']


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    full, killed = str(tmp_path / 'full'), str(tmp_path / 'killed')
    subprocess.run(TRAIN + ['--out', full], env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen(TRAIN + ['--out', killed], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = os.path.join(killed, 'log.csv')
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few epochs are logged
        if os.path.isfile(log) and sum(1 for _ in open(log)) > 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.isfile(os.path.join(killed, 'metrics.json')), \
        'the run finished before it could be killed'
    state = torch.load(os.path.join(killed, 'last.pt'), weights_only=False)
    assert 0 < state['epoch'] < 30
    subprocess.run(TRAIN + ['--out', killed, '--resume'], env=env,
                   check=True, capture_output=True)
    assert _metrics(killed) == _metrics(full)
