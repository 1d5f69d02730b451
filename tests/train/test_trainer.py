import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ricea_pyg.data import synthetic_pair
from ricea_pyg.metrics import evaluate_embeddings
from ricea_pyg.train import (
    ConfigError,
    SelfTraining,
    TrainConfig,
    Trainer,
    persisting_pairs,
)


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


def test_schedule_honours_a_param_groups_lr_scale(data):
    # A user's optimiser may give a group its own multiple of the schedule.
    t = Trainer(data, small_config(epochs=1, warmup=0.0, fusion='adc'),
                log=quiet)
    fusion = {id(p) for p in t.model.fusion.parameters()}
    groups = [{'params': [p for p in t.params if id(p) not in fusion]},
              {'params': [p for p in t.params if id(p) in fusion],
               'lr_scale': 10.0}]
    t.optimizer = torch.optim.AdamW(groups, lr=t.config.lr)
    t.train_epoch()
    rest, scaled = t.optimizer.param_groups
    assert rest['lr'] > 0
    assert scaled['lr'] == pytest.approx(10 * rest['lr'])


def test_selection_uses_validation_and_tests_once(data, tmp_path):
    calls = []
    scores = iter([0.2, 0.9, 0.4])  # the middle evaluation must win

    class Recording(Trainer):
        def evaluate(self, split='val', **kw):
            calls.append((split, self.epoch))
            out = super().evaluate(split, **kw)
            if split == 'val':
                out['mrr'] = next(scores)
            return out

    # One name weight: nothing to choose, so validation is evaluate('val').
    t = Recording(data, small_config(epochs=6, name_weight=1.0),
                  out_dir=str(tmp_path), log=quiet)
    metrics = t.fit()
    test_calls = [c for c in calls if c[0] == 'test']
    assert len(test_calls) == 2  # CSLS and cosine, once each, at the end
    assert all(e == t.total_epochs for _, e in test_calls)
    assert [e for s, e in calls if s == 'val'] == [1, 3, 5]
    for name in ('last.pt', 'best.pt', 'log.csv'):
        assert os.path.isfile(tmp_path / name)
    assert set(metrics['test']) >= {'hits@1', 'hits@10', 'mrr', 'mr',
                                    'r2l_hits@1'}
    assert metrics['best_epoch'] == 4 and metrics['val']['mrr'] == 0.9
    best = torch.load(tmp_path / 'best.pt', weights_only=True)
    assert best['epoch'] == 4
    # The selected weights are the ones tested.
    for k, v in best['model'].items():
        assert torch.equal(v, t.model.state_dict()[k])


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
    t = Falling(data, small_config(epochs=8, eval_every=1, patience=2,
                                   name_weight=1.0), log=logs.append)
    m = t.fit()
    assert m['epochs_run'] == 3 and m['best_epoch'] == 1
    assert any('early stop' in line for line in logs)


def test_iterative_mode_adds_pairs_and_logs_correctness(data):
    logs = []
    c = small_config(epochs=6, iterative=True, iter_epochs=4, iter_every=1,
                     iter_add_every=2, lr=5e-3)
    t = Trainer(data, c, log=logs.append)
    before = t.train_pairs.clone()
    t.fit()
    added = [r for r in t.history if 'added' in r]
    assert added and t.train_pairs.size(1) == before.size(1) + sum(
        r['added'] for r in added)
    assert torch.equal(t.train_pairs[:, :before.size(1)], before)
    # The logged counts are the gold matches of the pairs actually added.
    new = t.train_pairs[:, before.size(1):].t().tolist()
    assert sum(r['added_correct'] for r in added) == sum(
        t.gold[s] == g for s, g in new)
    assert len(set(map(tuple, new))) == len(new)  # no pair added twice
    assert any(line.startswith('iterative: added') for line in logs)
    assert t.lr_at(6, 0.0) == 0.0  # stage 2 warms up again, at lr / 5
    assert t.lr_at(7, 0.5) <= 5e-3 * 0.2


def test_persisting_pairs_counts_consecutive_rounds():
    empty = torch.empty(3, 0, dtype=torch.long)
    r1 = torch.tensor([[0, 1, 2], [5, 6, 7]])
    streak, ok = persisting_pairs(r1, empty, 2)
    assert ok.numel() == 0 and streak[2].tolist() == [1, 1, 1]
    r2 = torch.tensor([[0, 1, 2], [5, 9, 7]])  # (1, 6) became (1, 9)
    streak, ok = persisting_pairs(r2, streak, 2)
    assert ok.tolist() == [[0, 2], [5, 7]]
    assert streak.t().tolist() == [[0, 5, 2], [1, 9, 1], [2, 7, 2]]
    r3 = torch.tensor([[1], [9]])  # (0, 5) and (2, 7) gone: streaks reset
    streak, ok = persisting_pairs(r3, streak, 2)
    assert ok.tolist() == [[1], [9]] and streak.t().tolist() == [[1, 9, 2]]
    with pytest.raises(ValueError, match='min_rounds'):
        persisting_pairs(r3, streak, 0)


def test_self_training_adds_only_pairs_that_persist(monkeypatch):
    import ricea_pyg.train.iterative as iterative
    # Scripted rounds of global (source, target) pairs; an embedding row
    # holds its entity id, so the fake search maps them to the free rows.
    rounds = iter([[(0, 0), (1, 1)], [(0, 0), (2, 2)], [(2, 2)],
                   [(1, 1)]])

    def fake_mnn(source, target, *args, **kwargs):
        s_row = {int(e): i for i, e in enumerate(source[:, 0])}
        t_row = {int(e): i for i, e in enumerate(target[:, 0])}
        return torch.tensor([[s_row[s], t_row[t]] for s, t in next(rounds)
                             ]).t()
    monkeypatch.setattr(iterative, 'mutual_nearest_neighbors', fake_mnn)
    st = SelfTraining(every=1, add_every=1, min_rounds=2)
    emb = torch.arange(4.0).unsqueeze(1)
    pairs = torch.empty(2, 0, dtype=torch.long)
    added = []
    for epoch in range(4):
        before = pairs.size(1)
        pairs, info = st.step(emb, emb, pairs, epoch)
        added.append(pairs[:, before:].t().tolist())
    # Round 1 adds nothing, even though an addition is due on every round;
    # (0, 0) persists in round 2, (2, 2) in round 3; (1, 1) is found in
    # rounds 1 and 4, never twice in a row.
    assert added == [[], [[0, 0]], [[2, 2]], []]
    state = st.state_dict()
    assert state['streak'].t().tolist() == [[1, 1, 1]]
    # Once one side has no unaligned entity left, a round finds nothing.
    every = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    pairs, info = st.step(emb, emb, every, 5)
    assert info == {'mnn': 0, 'persisting': 0} and torch.equal(pairs, every)


def test_iterative_schedule_is_validated():
    with pytest.raises(ConfigError, match='multiple of iter_every'):
        small_config(iterative=True, iter_every=2, iter_add_every=3)
    with pytest.raises(ValueError, match='multiple of every'):
        SelfTraining(every=3, add_every=4)


def test_evaluate_embeddings_candidates():
    # Source 0's true target is 0; the non-test target 2 is closer.
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tgt = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    pairs = torch.tensor([[0, 1], [0, 1]])
    test = evaluate_embeddings(src, tgt, pairs, csls_k=0, candidates='test')
    every = evaluate_embeddings(src, tgt, pairs, csls_k=0, candidates='all')
    assert test['hits@1'] == 1.0 and test['mr'] == 1.0
    assert every['hits@1'] == 0.5 and every['mr'] == 1.5
    with pytest.raises(ValueError, match='candidates'):
        evaluate_embeddings(src, tgt, pairs, candidates='train')


def test_evaluate_embeddings_old_place_warns():
    from ricea_pyg.train import evaluate_embeddings as old
    pairs = torch.tensor([[0], [0]])
    with pytest.warns(DeprecationWarning, match='ricea_pyg.metrics'):
        out = old(torch.eye(2), torch.eye(2), pairs, csls_k=0)
    assert out['hits@1'] == 1.0


def test_resume_refuses_other_settings(data, tmp_path):
    Trainer(data, small_config(epochs=2), out_dir=str(tmp_path),
            log=quiet).fit()
    t = Trainer(data, small_config(epochs=2, lr=1e-3), out_dir=str(tmp_path),
                log=quiet)
    with pytest.raises(ValueError, match='lr: checkpoint 0.0005, now 0.001'):
        t.fit(resume=True)


def test_resume_accepts_a_checkpoint_from_before_a_new_setting(data):
    # A checkpoint written before a config field existed resumes with that
    # field at its default; the same field at another value is refused.
    t = Trainer(data, small_config(epochs=2), log=quiet)
    state = t.state_dict()
    del state['config']['lambda_uncertainty']
    Trainer(data, small_config(epochs=2), log=quiet).load_state_dict(state)
    other = Trainer(data, small_config(epochs=2, lambda_uncertainty=0.5),
                    log=quiet)
    with pytest.raises(ValueError, match='lambda_uncertainty: checkpoint 0.0, now 0.5'):
        other.load_state_dict(state)


TRAIN = [sys.executable, '-m', 'ricea_pyg.cli', 'train', '--dataset',
         'synthetic', '--entities', '1500', '--channels', '48',
         '--batch-size', '256', '--epochs', '30', '--eval-every', '3',
         '--checkpoint-every', '1', '--threads', '1', '--no-progress']


def _metrics(folder):
    import json
    with open(os.path.join(folder, 'metrics.json')) as f:
        m = json.load(f)
    return m['val'], m['test'], m['best_epoch']


# A short first stage leaves the model weak, so pairs keep being found,
# dropped and added through the whole second stage.
ITERATIVE = ['--iterative', '--epochs', '3', '--iter-epochs', '27',
             '--iter-every', '1', '--iter-add-every', '2']


# Sampled mini-batches with FAISS hard negatives: the sampler's generator,
# SparseAdam's state and the per-epoch negative cache must all resume.
SAMPLED = ['--sampled', '--fanouts', '5,3', '--hard-negative-weight', '0.5']


@pytest.mark.parametrize('extra', [[], ITERATIVE, SAMPLED],
                         ids=['plain', 'iterative', 'sampled'])
def test_resume_after_kill_matches_uninterrupted(tmp_path, extra):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    full, killed = str(tmp_path / 'full'), str(tmp_path / 'killed')
    cmd = TRAIN + extra
    subprocess.run(cmd + ['--out', full], env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen(cmd + ['--out', killed], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = os.path.join(killed, 'log.csv')
    # Kill inside stage 2 of the iterative run, where pairs are pending.
    lines = 8 if extra is ITERATIVE else 5
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once enough epochs are logged
        if os.path.isfile(log) and sum(1 for _ in open(log)) > lines:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.isfile(os.path.join(killed, 'metrics.json')), \
        'the run finished before it could be killed'
    state = torch.load(os.path.join(killed, 'last.pt'), weights_only=True)
    assert 0 < state['epoch'] < 30
    if extra is ITERATIVE:  # killed in stage 2, after pairs were added
        seeds = 450  # 30 % of the 1,500 synthetic pairs
        assert state['epoch'] > 3 and state['train_pairs'].size(1) > seeds
    subprocess.run(cmd + ['--out', killed, '--resume'], env=env,
                   check=True, capture_output=True)
    assert _metrics(killed) == _metrics(full)
    if extra is ITERATIVE:
        with open(os.path.join(full, 'log.csv')) as f:
            assert any(r['added'] for r in csv.DictReader(f))


def test_sampled_training_updates_only_the_sampled_rows(data):
    t = Trainer(data, small_config(sampled=True, fanouts=[1, 1],
                                   hard_negative_weight=1.0,
                                   hard_negative_k=2), log=quiet)
    assert t.config.eval_queries == 0 and t.sampler is not None  # small
    assert t.model.entity.sparse and t.sparse_optimizer is not None
    table = t.model.entity.weight
    before = table.detach().clone()
    batch = t.inputs.rows(t.train_pairs[:, :3])
    t._negative_cache = None
    loss, parts = t._sampled_step(batch)
    assert math.isfinite(parts['hard_negative'])
    loss.backward()
    touched = table.grad.coalesce().indices()[0].unique()
    # 3 pairs and 2 negatives per query on each side, 1 neighbour per hop.
    assert 6 <= touched.numel() <= (6 + 12) * 3
    t.sparse_optimizer.step()
    moved = (table.detach() != before).any(1).nonzero().view(-1)
    assert torch.equal(moved, touched)


def test_sampled_and_full_training_reach_similar_accuracy():
    data = synthetic_pair(1500, seed=2)
    hits = {}
    for sampled in (False, True):
        t = Trainer(data, small_config(epochs=6, sampled=sampled,
                                       batch_size=128, eval_queries=0),
                    log=quiet)
        hits[sampled] = t.fit()['test']['hits@1']
    assert hits[True] > 0.8 and abs(hits[True] - hits[False]) < 0.05


def test_resume_accepts_sizes_recorded_before_they_were_resolved(data):
    t = Trainer(data, small_config(epochs=2, batch_size=None), log=quiet)
    state = t.state_dict()
    assert state['config']['batch_size'] is None  # kept as asked
    state['config']['batch_size'] = 3500  # as checkpoints before 0.2 did
    Trainer(data, small_config(epochs=2, batch_size=None),
            log=quiet).load_state_dict(state)
    state['config']['batch_size'] = 1000
    with pytest.raises(ValueError, match='batch_size: checkpoint 1000, now 3500'):
        Trainer(data, small_config(epochs=2, batch_size=None),
                log=quiet).load_state_dict(state)


def test_sampling_needs_one_fanout_per_layer(data):
    with pytest.raises(ConfigError, match='one fan-out per GAT layer'):
        Trainer(data, small_config(sampled=True, fanouts=[5]), log=quiet)
    with pytest.raises(ConfigError, match="structure_encoder='gat' only"):
        Trainer(data, small_config(sampled=True, channels=12,
                                   structure_encoder='relational'), log=quiet)


def test_size_based_defaults():
    c = TrainConfig()
    small = c.resolve(15_000, 15_000, 6)
    assert (small.sampled, small.channels, small.eval_queries) == (
        False, 300, 0)
    mid = c.resolve(100_000, 99_000, 6)
    assert (mid.sampled, mid.channels, mid.eval_queries, mid.batch_size) == (
        True, 300, 10_000, 1024)
    assert small.batch_size == 3500
    big = c.resolve(1_000_000, 1_000_000, 6)
    assert (big.sampled, big.channels) == (True, 64)
    # Set values win over the size.
    assert TrainConfig(channels=32, sampled=False).resolve(
        10**6, 10**6, 6).channels == 32


def test_relational_encoder_with_hard_negatives_trains(data):
    def run(weight):
        t = Trainer(data, small_config(epochs=2, structure_encoder='relational',
                                       channels=12,
                                       hard_negative_weight=weight),
                    log=quiet)
        t.fit()
        return t
    with_hard, without = run(1.0), run(0.0)
    hard = [r['hard_negative'] for r in with_hard.history]
    assert len(hard) == 2 and all(math.isfinite(h) for h in hard)
    assert 'hard_negative' not in without.history[0]
    # The term reaches the entity table and the relation table.
    for name in ('entity.weight', 'structure.rel_emb'):
        a = dict(with_hard.model.named_parameters())[name]
        b = dict(without.model.named_parameters())[name]
        assert not torch.allclose(a, b)


def test_dual_amn_joint_loss_scores_every_entity(data):
    from ricea_pyg.loss import dual_amn_loss
    t = Trainer(data, small_config(joint_loss='dual_amn', fusion='concat'),
                log=quiet)
    rows = t.inputs.rows(t.train_pairs[:, :8])
    torch.manual_seed(0)
    loss, parts = t._full_step(rows)
    model, inputs = t.model, t.inputs
    torch.manual_seed(0)  # the same dropout, if any
    out = model(inputs)
    h, pairs = torch.nn.functional.normalize(out.fused, dim=1), rows.t()
    joint = dual_amn_loss(h[rows[0]], h[rows[1]], h, h,
                          source_index=pairs, target_index=pairs)
    assert parts['joint'] == pytest.approx(float(joint.detach()), rel=1e-5)
    icl = Trainer(data, small_config(fusion='concat'), log=quiet)
    icl.model.load_state_dict(model.state_dict())
    _, icl_parts = icl._full_step(rows)
    assert icl_parts['joint'] != pytest.approx(parts['joint'])
    # The other terms are the method's, unchanged.
    assert parts['in'] == pytest.approx(icl_parts['in'], rel=1e-5)
    loss.backward()
    assert model.entity.weight.grad.abs().sum() > 0
    t.fit()
    assert all(math.isfinite(r['loss']) for r in t.history)


def test_dual_amn_joint_loss_config_errors(data):
    with pytest.raises(ConfigError, match="joint_loss must be 'icl'"):
        small_config(joint_loss='nce')
    with pytest.raises(ConfigError, match='set sampled=false'):
        Trainer(data, small_config(joint_loss='dual_amn', sampled=True,
                                   fanouts=[5, 5]), log=quiet)
    with pytest.raises(ConfigError, match="needs scoring='fused'"):
        Trainer(data, small_config(joint_loss='dual_amn', fusion='adc',
                                   fusion_kwargs={'scoring': 'pair_mean'}),
                log=quiet)


def test_relational_channels_split_into_blocks():
    with pytest.raises(ConfigError, match='not a multiple of 6'):
        TrainConfig(structure_encoder='relational', channels=16)
    c = TrainConfig(structure_encoder='relational')
    assert c.resolve(15_000, 15_000, 2).channels == 768
    assert c.resolve(10**6, 10**6, 5).channels == 72  # 384 // 5 = 76 -> 6 x 12
    assert TrainConfig(structure_encoder='relational', gat_layers=1
                       ).resolve(15_000, 15_000, 2).channels == 512


def test_labels_beside_are_not_trained(data):
    # The loss reads the fused part only: other label rows, same loss.
    config = small_config(modalities=['graph', 'rel', 'attr'],
                          label_channels=32, label_mode='beside',
                          fusion='concat')
    t = Trainer(data, config, log=quiet)
    rows = t.inputs.rows(t.train_pairs[:, :8])
    loss, _ = t._full_step(rows)
    before = t.model.embed(t.inputs).fused
    t.inputs.features['labels'] = torch.randn_like(
        t.inputs.features['labels'].float()).to(
            t.inputs.features['labels'].dtype)
    again, _ = t._full_step(rows)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
    # Search reads them: the embedding does change.
    after = t.model.embed(t.inputs).fused
    assert after.size(1) == 3 * 16 + t.inputs.features['labels'].size(1)
    assert torch.equal(after[:, :48], before[:, :48])
    assert not torch.allclose(after[:, 48:], before[:, 48:])


def test_label_weight_is_chosen_on_validation(data, tmp_path):
    choices = [0.1, 0.5, 0.9]
    config = small_config(modalities=['graph', 'rel', 'attr'],
                          label_channels=32, label_mode='beside',
                          label_weight=choices, fusion='concat',
                          eval_every=1)
    t = Trainer(data, config, out_dir=str(tmp_path), log=quiet)
    assert t.model.beside_weight == 0.1  # the first until validation
    metrics = t.fit()
    # Each validation chose the g with the best validation MRR among the
    # choices, computed from the model at that g.
    for row in t.history:
        assert row['val_label_weight'] in choices
    g = metrics['label_weight']
    assert g == metrics['val']['label_weight'] == t.model.beside_weight
    scores = {}
    for w in choices:
        t.model.beside_weight = w
        scores[w] = t.evaluate('val')['mrr']
    assert scores[g] == pytest.approx(max(scores.values()), abs=1e-12)
    assert scores[g] == pytest.approx(metrics['val']['mrr'], abs=1e-6)
    # The selected model keeps its g in both checkpoints.
    best = torch.load(tmp_path / 'best.pt', weights_only=False)
    last = torch.load(tmp_path / 'last.pt', weights_only=False)
    assert best['label_weight'] == last['best_label_weight'] == g
    again = Trainer(data, config, out_dir=str(tmp_path), log=quiet)
    again.load_state_dict(last)
    assert again.best_label_weight == g
    assert again.model.beside_weight == last['label_weight']


def test_one_label_weight_is_not_searched(data):
    config = small_config(modalities=['graph', 'rel', 'attr'],
                          label_channels=32, label_mode='beside',
                          label_weight=[0.3], fusion='concat')
    t = Trainer(data, config, log=quiet)
    metrics = t.fit()
    assert metrics['label_weight'] == 0.3
    assert 'label_weight' not in metrics['val']


def test_name_weight_is_chosen_on_validation_with_label_weight(data,
                                                                tmp_path):
    names, labels = [1.0, 0.5, 0.1], [0.2, 0.6]
    config = small_config(modalities=['graph', 'rel', 'name', 'char'],
                          label_channels=32, label_mode='beside',
                          label_weight=labels, name_weight=names,
                          fusion='meaformer', eval_every=1)
    t = Trainer(data, config, out_dir=str(tmp_path), log=quiet)
    assert t.model.score_weights == {}  # 1, the first until validation
    metrics = t.fit()
    for row in t.history:
        assert row['val_name_weight'] in names
        assert row['val_label_weight'] in labels
    s, g = metrics['name_weight'], metrics['label_weight']
    assert s == metrics['val']['name_weight']
    assert t.model.score_weights == ({} if s == 1 else
                                     {'name': s, 'char': s})
    # The best of the grid, each point computed from the model itself.
    scores = {}
    for w in names:
        for h in labels:
            t.model.score_weights = {'name': w, 'char': w}
            t.model.beside_weight = h
            scores[w, h] = t.evaluate('val')['mrr']
    assert scores[s, g] == pytest.approx(max(scores.values()), abs=1e-12)
    assert scores[s, g] == pytest.approx(metrics['val']['mrr'], abs=1e-6)
    # Both checkpoints keep it, and resuming restores it.
    best = torch.load(tmp_path / 'best.pt', weights_only=False)
    last = torch.load(tmp_path / 'last.pt', weights_only=False)
    assert best['score_weights'] == last['best_score_weights'] == \
        ({} if s == 1 else {'name': s, 'char': s})
    again = Trainer(data, config, out_dir=str(tmp_path), log=quiet)
    again.load_state_dict(last)
    assert again.best_score_weights == best['score_weights']
    assert again.model.score_weights == last['score_weights']


def test_name_weight_needs_names_and_blocks(data, monkeypatch):
    from ricea_pyg.train import resolve_config
    from ricea_pyg.train import trainer as trainer_module
    assert resolve_config(data, small_config()).name_weight == [
        1.0, 0.5, 0.25, 0.1]
    # The default choices fall back to 1 where nothing can be weighed ...
    for kw in (dict(modalities=['graph', 'rel']),
               dict(fusion='global', fusion_kwargs={'mode': 'sum'})):
        assert resolve_config(data, small_config(**kw)).name_weight == 1.0
    # ... and on large graphs, where each choice is a validation search;
    # a list asked for stays.
    monkeypatch.setattr(trainer_module, 'SAMPLED_FROM', 100)
    assert resolve_config(data, small_config()).name_weight == 1.0
    assert resolve_config(data, small_config(
        name_weight=[1.0, 0.3])).name_weight == [1.0, 0.3]
    monkeypatch.undo()
    # ... choices asked for are refused.
    with pytest.raises(ConfigError, match='no name modality'):
        resolve_config(data, small_config(modalities=['graph', 'rel'],
                                          name_weight=[1.0, 0.3]))
    with pytest.raises(ConfigError, match="mode='sum'"):
        resolve_config(data, small_config(
            fusion='global', fusion_kwargs={'mode': 'sum'}, name_weight=0.5))
    for bad in ([], 0, -1.0, [1.0, float('inf')], True):
        with pytest.raises(ConfigError, match='name_weight must be'):
            small_config(name_weight=bad)
    assert TrainConfig.from_checkpoint({}).name_weight == 1.0


def test_model_selector_patience_restarts_in_each_stage():
    from ricea_pyg.train import ModelSelector
    sel = ModelSelector('mrr', patience=2)
    model = torch.nn.Linear(1, 1)
    for score in (0.5, 0.4, 0.3):
        sel.update(1, 1, {'mrr': score}, model)
    assert sel.stopped == {1: True, 2: False}
    sel.update(5, 2, {'mrr': 0.45}, model)  # one miss in stage 2 only
    assert sel.stopped[2] is False
    sel.update(6, 2, {'mrr': 0.44}, model)
    assert sel.stopped[2] is True and sel.best['epoch'] == 1
    again = ModelSelector('mrr', patience=2)
    again.load_state_dict(sel.state_dict())
    assert again.state_dict() == sel.state_dict()


def test_hard_negatives_need_the_graph_modality():
    with pytest.raises(ConfigError, match="add 'graph'"):
        small_config(modalities=['rel'], hard_negative_weight=1.0)


def test_persisting_pairs_drop_pairs_below_the_margin():
    empty = torch.empty(3, 0, dtype=torch.long)
    found = torch.tensor([[0, 1, 2], [5, 6, 7]])
    margin = torch.tensor([0.5, 0.05, 0.2])
    streak, ok = persisting_pairs(found, empty, 1, margin, 0.1)
    assert ok.tolist() == [[0, 2], [5, 7]]
    # A pair under the margin breaks its streak like a pair not found.
    streak, ok = persisting_pairs(found, streak, 2,
                                  torch.tensor([0.5, 0.5, 0.01]), 0.1)
    assert ok.tolist() == [[0], [5]]
    assert streak.t().tolist() == [[0, 5, 2], [1, 6, 1]]
    with pytest.raises(ValueError, match='margin must be'):
        persisting_pairs(found, empty, 1, torch.ones(2), 0.1)


def test_self_training_margin_keeps_the_confident_pairs():
    # Sources 0 and 1 have one clear counterpart each; source 2 sits
    # halfway between targets 2 and 3, so its margin is small.
    src = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0.9]])
    tgt = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0.8],
                        [0, 0, 0.8, 1.0]])
    none = torch.empty(2, 0, dtype=torch.long)
    loose = SelfTraining(every=1, add_every=1, min_rounds=1, csls_k=0)
    strict = SelfTraining(every=1, add_every=1, min_rounds=1, csls_k=0,
                          min_margin=0.1)
    assert loose.step(src, tgt, none, 0)[0].t().tolist() == [
        [0, 0], [1, 1], [2, 2]]
    assert strict.step(src, tgt, none, 0)[0].t().tolist() == [[0, 0], [1, 1]]


def test_pair_mean_scoring_trains_and_searches_with_its_own_score(data):
    """With scoring='pair_mean' the loss, validation and test all compare
    query/key embeddings (issue 13, item 1), and the uncertainty loss is a
    logged part of the objective."""
    from ricea_pyg.search import QueryKey
    t = Trainer(data, small_config(
        epochs=2, fusion='adc', fusion_kwargs={'scoring': 'pair_mean'},
        lambda_uncertainty=0.5), log=quiet)
    parts = t.train_epoch()
    assert 'uncertainty' in parts and parts['uncertainty'] > 0
    src, tgt, out = t.embeddings()
    assert isinstance(src, QueryKey) and isinstance(tgt, QueryKey)
    pairs = t.val_pairs
    assert t.evaluate('val') == evaluate_embeddings(src, tgt, pairs,
                                                    t.config.csls_k)
    # Not the cosine of the fused vectors.
    n_s = src.size(0)
    cosine = out.fused[:n_s] @ out.fused[n_s:].t()
    assert not torch.allclose(src.query @ tgt.key.t(), cosine, atol=1e-3)


def test_inputs_propagate_text_modalities_by_default(data):
    from ricea_pyg.data import PairInputs
    from ricea_pyg.nn import FeaturePropagation, PropagationGraph
    from ricea_pyg.train import model_inputs
    raw = PairInputs.from_data(data)
    t = Trainer(data, small_config(epochs=1), log=quiet)
    graph = PropagationGraph(raw.edge_index, raw.edge_type,
                             raw.num_entities, raw.num_relations)
    for m in ('name', 'char'):  # stored in float16
        assert t.inputs.features[m].dtype == torch.float16
        assert torch.allclose(t.inputs.features[m].float(),
                              FeaturePropagation(2)(raw.features[m], graph),
                              rtol=2**-10, atol=1e-7)
    for m in ('attr', 'img'):
        assert torch.equal(t.inputs.features[m], raw.features[m])
    off = model_inputs(data, small_config(propagate=[]))
    assert torch.equal(off.features['name'], raw.features['name'])
    one = model_inputs(data, small_config(propagate=['img'],
                                          propagation_hops=1))
    assert one.features['img'].size(1) == 2 * raw.features['img'].size(1)
    assert torch.equal(one.features['name'], raw.features['name'])
    # The default skips what the model does not read; a named one must be.
    quiet_mods = model_inputs(data, small_config(modalities=['graph', 'rel'],
                                                 label_channels=0))
    assert set(quiet_mods.features) == {'rel'}
    with pytest.raises(ConfigError, match=r"propagate names \['name'\]"):
        model_inputs(data, small_config(modalities=['graph', 'rel'],
                                        propagate=['name']))


def test_resume_refuses_a_checkpoint_from_before_propagation(data, tmp_path):
    t = Trainer(data, small_config(epochs=1), out_dir=str(tmp_path),
                log=quiet)
    t.fit()
    state = torch.load(tmp_path / 'last.pt', weights_only=False)
    del state['config']['propagate']  # as saved before the option existed
    with pytest.raises(ValueError, match='propagate'):
        Trainer(data, small_config(epochs=1), log=quiet).load_state_dict(
            state)


def test_structure_only_inputs_get_seed_labels(data):
    from ricea_pyg.data import ALIGN, PairInputs
    from ricea_pyg.nn import PropagationGraph, SeedLabelPropagation
    from ricea_pyg.train import model_inputs
    config = small_config(modalities=['graph', 'rel'])
    inputs = model_inputs(data, config)
    assert inputs.modalities == ['graph', 'rel', 'labels']
    assert inputs.mask.shape == (inputs.num_entities, 3)
    raw = PairInputs.from_data(data, ['graph', 'rel'])
    graph = PropagationGraph(raw.edge_index, raw.edge_type,
                             raw.num_entities, raw.num_relations)
    ref = SeedLabelPropagation(1024, 2)(
        raw.rows(data[ALIGN].train_index), graph,
        torch.Generator().manual_seed(config.seed), dtype=torch.float16)
    assert torch.equal(inputs.features['labels'], ref)
    t = Trainer(data, config, log=quiet)
    assert t.config.label_channels == 1024
    assert t.model.modalities == ['graph', 'rel', 'labels']
    # With names, or switched off, there is no labels modality.
    assert 'labels' not in model_inputs(data, small_config()).modalities
    assert 'labels' not in model_inputs(data, small_config(
        modalities=['graph', 'rel'], label_channels=0)).modalities
    with pytest.raises(ConfigError, match='label_channels'):
        TrainConfig(label_channels=-1)


def test_checkpointed_fusion_trains_the_same_model(data):
    states = []
    for flag in (False, True):
        t = Trainer(data, small_config(epochs=2, checkpoint_fusion=flag),
                    log=quiet)
        assert t.model.checkpoint_fusion is flag
        for _ in range(2):
            t.train_epoch()
            t.epoch += 1
        states.append(t.model.state_dict())
    for k, v in states[0].items():
        assert torch.allclose(v, states[1][k], atol=1e-5), k


def test_propagation_imputes_missing_rows_from_neighbours():
    from ricea_pyg.data import PairInputs
    from ricea_pyg.nn import FeaturePropagation, PropagationGraph
    from ricea_pyg.train import model_inputs
    data = synthetic_pair(200, missing={'name': 0.4}, seed=3)
    # An isolated entity without a name keeps it missing: no neighbour has
    # one to give.
    rel = data['source', 'rel', 'source']
    isolated = 0
    keep = (rel.edge_index != isolated).all(0)
    rel.edge_index, rel.edge_type = rel.edge_index[:, keep], \
        rel.edge_type[keep]
    data['source'].mask_name[isolated] = False
    data['source'].x_name[isolated] = 0
    # Whatever a missing row holds is ignored: the schema says zero.
    garbage = data.clone()
    for side in ('source', 'target'):
        x, m = garbage[side].x_name, garbage[side].mask_name
        x[~m] = 5.0
    raw = PairInputs.from_data(data)
    col = raw.modalities.index('name')
    before = raw.mask[:, col].clone()
    config = small_config(propagate=['name'])
    inputs = model_inputs(data, config)
    after = inputs.mask[:, col]
    graph = PropagationGraph(raw.edge_index, raw.edge_type,
                             raw.num_entities, raw.num_relations)
    ref = FeaturePropagation(2)(raw.features['name'], graph)
    assert torch.allclose(inputs.features['name'].float(), ref,
                          rtol=2**-10, atol=1e-7)
    # Present after = present before, or reached by a neighbour with it.
    assert torch.equal(after, before | ref.ne(0).any(1))
    filled = after & ~before
    assert filled.sum() > 0
    width = raw.features['name'].size(1)  # hop 0 of an imputed row is 0
    assert bool((inputs.features['name'][filled, :width] == 0).all())
    assert not bool(after[isolated])
    # Only the propagated modality changes; the raw mask is untouched.
    others = [i for i in range(len(raw.modalities)) if i != col]
    assert torch.equal(inputs.mask[:, others], raw.mask[:, others])
    assert torch.equal(PairInputs.from_data(data).mask[:, col], before)
    dirty = model_inputs(garbage, config)
    assert torch.equal(dirty.features['name'], inputs.features['name'])
    assert torch.equal(dirty.mask, inputs.mask)
    kept = model_inputs(data, small_config(propagate=['name'],
                                           impute_missing=False))
    assert torch.equal(kept.mask, raw.mask)
    assert TrainConfig.from_checkpoint(
        {'propagate': ['name']}).impute_missing is False


def test_unaligned_mutual_pairs_skip_covered_entities():
    from torch.nn import functional as F

    from ricea_pyg.train.iterative import unaligned_mutual_pairs
    gen = torch.Generator().manual_seed(0)
    src = F.normalize(torch.randn(12, 8, generator=gen), dim=1)
    tgt = F.normalize(src + 0.05 * torch.randn(12, 8, generator=gen), dim=1)
    known = torch.tensor([[0, 1, 2], [0, 1, 2]])
    found, margin = unaligned_mutual_pairs(src, tgt, known, csls_k=0,
                                           margin=True)
    # Brute force on the free block: mutual best by cosine.
    free = torch.arange(3, 12)
    sim = src[free] @ tgt[free].t()
    want = [(int(free[i]), int(free[j])) for i, j in
            enumerate(sim.argmax(1).tolist()) if sim[:, j].argmax() == i]
    assert sorted(map(tuple, found.t().tolist())) == sorted(want)
    top2 = sim.topk(2, dim=1).values
    gap = {int(free[i]): float(top2[i, 0] - top2[i, 1]) for i in range(9)}
    assert margin.tolist() == pytest.approx([gap[s] for s in
                                             found[0].tolist()])
    everything = torch.arange(12).expand(2, -1)
    none, gap = unaligned_mutual_pairs(src, tgt, everything, margin=True)
    assert none.shape == (2, 0) and gap.shape == (0,)


def test_label_rounds_bootstrap_the_labels_not_the_model(data, tmp_path):
    config = small_config(modalities=['graph', 'rel', 'attr'],
                          label_channels=32, label_mode='beside',
                          label_weight=[0.3, 0.7], fusion='concat',
                          eval_every=1, label_rounds=2)
    lines = []
    t = Trainer(data, config, out_dir=str(tmp_path), log=lines.append)
    metrics = t.fit()
    rounds = metrics['label_rounds']
    assert [r['round'] for r in rounds] == [1, 2]
    assert sum('label round' in line for line in lines) == 2
    last = torch.load(tmp_path / 'last.pt', weights_only=False)
    best = torch.load(tmp_path / 'best.pt', weights_only=False)
    trained = last['selector']['best']['score']  # saved before the rounds
    scores = [trained] + [r['val_mrr'] for r in rounds]
    chosen = metrics['label_round']
    assert chosen == max(range(3), key=lambda r: (scores[r], -r))
    assert best['label_round'] == chosen
    # The weights are the trained ones: rounds change the labels only.
    for k, v in last['selector']['best_state'].items():
        assert torch.equal(best['model'][k], v)
    from ricea_pyg.data import ALIGN
    train = data[ALIGN].train_index
    pairs = best['train_pairs']
    assert torch.equal(pairs[:, :train.size(1)], train)
    added = pairs[:, train.size(1):]
    assert added.size(1) == (rounds[chosen - 1]['added'] if chosen else 0)
    assert not set(added[0].tolist()) & set(train[0].tolist())
    assert not set(added[1].tolist()) & set(train[1].tolist())
    # The model is tested with the selected round's labels and g.
    assert t.evaluate('val')['mrr'] == pytest.approx(metrics['val']['mrr'],
                                                     abs=1e-6)
    assert t.model.beside_weight == best['label_weight']


def test_seed_labels_are_rebuilt_only_for_other_pairs(data, monkeypatch):
    from ricea_pyg.train import trainer as trainer_module
    built = []
    real = trainer_module.seed_labels

    def counting(inputs, pairs, config):
        built.append(pairs.size(1))
        return real(inputs, pairs, config)

    monkeypatch.setattr(trainer_module, 'seed_labels', counting)
    config = small_config(modalities=['graph', 'rel'], epochs=2,
                          eval_every=1)
    t = Trainer(data, config, device='cpu', log=quiet)
    t.fit()
    assert len(built) == 1  # model_inputs; the selected pairs are the same
    assert torch.equal(t.inputs.features['labels'],
                       real(t.inputs, t.best_train_pairs, t.config))
    # Other pairs get their own labels; the same content is not rebuilt.
    fewer = t.train_pairs[:, :-5].clone()
    t._refresh_labels(fewer)
    assert len(built) == 2
    assert torch.equal(t.inputs.features['labels'],
                       real(t.inputs, fewer, t.config))
    t._refresh_labels(fewer.clone())
    assert len(built) == 2
    t._refresh_labels(t.best_train_pairs)
    assert len(built) == 3


def test_label_rounds_need_seed_labels(data):
    from ricea_pyg.train import ConfigError
    with pytest.raises(ConfigError, match='label_rounds=1 bootstraps'):
        Trainer(data, small_config(modalities=['graph', 'rel'],
                                   label_channels=0, label_rounds=1),
                log=quiet)
    with pytest.raises(ConfigError, match='label_rounds=1 bootstraps'):
        Trainer(data, small_config(label_rounds=1), log=quiet)  # names
    with pytest.raises(ConfigError, match="label_mode='beside' scores .* and "
                       "label_rounds=1 bootstraps .*or label_mode='fused' and "
                       'label_rounds=0'):
        Trainer(data, small_config(label_mode='beside', label_rounds=1),
                log=quiet)
    with pytest.raises(ConfigError, match='label_rounds must be'):
        small_config(label_rounds=-1)


def test_model_selector_rescore_keeps_the_state():
    from ricea_pyg.train import ModelSelector
    sel = ModelSelector('mrr')
    model = torch.nn.Linear(1, 1)
    sel.update(3, 1, {'mrr': 0.5}, model)
    state = sel.best_state
    assert not sel.rescore({'mrr': 0.5}, label_round=1)  # a tie keeps it
    assert sel.rescore({'mrr': 0.6}, label_round=2)
    assert sel.best == {'score': 0.6, 'epoch': 3, 'val': {'mrr': 0.6},
                        'label_round': 2}
    assert sel.best_state is state
