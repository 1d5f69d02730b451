import csv
import json
import os

import pytest

from ricea_pyg.cli import main

ARGS = ['train', '--dataset', 'synthetic', '--entities', '1500', '--epochs',
        '4', '--channels', '16', '--batch-size', '128', '--eval-every', '2',
        '--no-progress', '--threads', '1']
# Hits@1 within 0.01 needs enough pairs that 0.01 is more than a few of
# them: 4,000 entities give 400 validation and 2,400 test pairs.
BIG = ['--entities', '4000', '--batch-size', '256']


@pytest.mark.distributed
@pytest.mark.parametrize('extra', [BIG, BIG + [
    '--sampled', '--hard-negative-weight', '0.5']], ids=['full', 'sampled'])
def test_two_gloo_processes_match_one(tmp_path, extra):
    assert main(ARGS + extra + ['--out', str(tmp_path / 'one')]) == 0
    assert main(ARGS + extra + ['--out', str(tmp_path / 'two'),
                                '--nproc', '2']) == 0
    one, two = (json.load(open(tmp_path / d / 'metrics.json'))
                for d in ('one', 'two'))
    for split in ('val', 'test'):
        assert abs(one[split]['hits@1'] - two[split]['hits@1']) <= 0.01
    assert one['val']['hits@1'] > 0.3  # it learned something
    # Rank 0 alone writes: one log row per epoch, no stray files.
    with open(tmp_path / 'two' / 'log.csv') as f:
        assert len(list(csv.DictReader(f))) == 4
    assert sorted(os.listdir(tmp_path / 'two')) == sorted(
        os.listdir(tmp_path / 'one'))


def test_a_bad_sized_setting_fails_before_run_json(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(ARGS + ['--sampled', '--gat-layers', '3', '--out',
                        str(out)]) == 2
    assert 'one fan-out per GAT layer' in capsys.readouterr().err
    assert not (out / 'run.json').exists()


def test_nproc_and_torchrun_exclude_each_other(tmp_path, monkeypatch,
                                               capsys):
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert main(ARGS + ['--nproc', '2', '--out', str(tmp_path)]) == 2
    assert 'under torchrun leave it out' in capsys.readouterr().err


def _replica_worker(rank, port, sampled, results):
    import torch
    import torch.distributed as dist

    from ricea_pyg.data import synthetic_pair
    from ricea_pyg.train import TrainConfig, Trainer
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    try:
        data = synthetic_pair(400, seed=1)
        t = Trainer(data, TrainConfig(channels=8, epochs=2, batch_size=64,
                                      sampled=sampled, fanouts=[3, 2],
                                      progress=False))
        before = t.model.entity.weight.detach().clone()
        for _ in range(2):  # the batch order must agree in epoch 2 too
            t.train_epoch()
            t.epoch += 1
        state = t.generator.get_state()  # the shared batch order
        flat = torch.cat([p.detach().reshape(-1)
                          for p in t.model.parameters()])
        same = []
        for x in (flat, state.float()):
            gathered = [torch.empty_like(x) for _ in range(2)]
            dist.all_gather(gathered, x)
            same.append(bool(torch.equal(*gathered)))
        moved = int((t.model.entity.weight.detach() != before).any(1).sum())
        if rank == 0:
            results.put((all(same), moved))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize('sampled', [False, True])
def test_replicas_stay_identical(sampled):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    results = mp.get_context('spawn').SimpleQueue()
    mp.spawn(_replica_worker, args=(port, sampled, results), nprocs=2)
    identical, moved = results.get()
    assert identical and moved > 0
