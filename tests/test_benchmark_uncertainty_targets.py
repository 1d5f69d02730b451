"""benchmarks/uncertainty_targets.py's TCP targets (no training)."""
from types import SimpleNamespace

import pytest
import torch

from ricea_pyg.loss import tcp_target

from .conftest import load_benchmark, unload_benchmark


@pytest.fixture(scope='module')
def targets():
    yield load_benchmark('uncertainty_targets')
    unload_benchmark('uncertainty_targets')


def test_tcp_targets_and_their_quantiles(targets):
    gen = torch.Generator().manual_seed(0)
    num_source, pairs, M = 12, 10, 3
    x = torch.randn(25, M, 8, generator=gen)
    trainer = SimpleNamespace(
        train_pairs=torch.stack([torch.arange(pairs),
                                 torch.randperm(13, generator=gen)[:pairs]]),
        inputs=SimpleNamespace(num_source=num_source),
        config=SimpleNamespace(batch_size=4, tau=0.1))
    ents, fail, rank = targets.tcp_targets(
        trainer, x, torch.Generator().manual_seed(0))
    # Both sides of every pair, once each; targets side by side.
    expected = torch.cat([trainer.train_pairs[0],
                          trainer.train_pairs[1] + num_source])
    assert torch.equal(ents.sort().values, expected.sort().values)
    assert fail.shape == rank.shape == (2 * pairs, M)
    # Groups of batch_size pairs (4, 4, 2), source rows then target rows:
    # the first group's source half is 1 - p of tcp_target on its pairs.
    src, tgt = ents[:4], ents[4:8]
    p_s, p_t = tcp_target(x[src], x[tgt], 0.1)
    torch.testing.assert_close(fail[:4], 1 - p_s)
    torch.testing.assert_close(fail[4:8], 1 - p_t)
    # The quantile keeps the order of 1 - p within its block and spans
    # [0, 1] there.
    for lo, hi in ((0, 4), (4, 8), (16, 18)):
        block, q = fail[lo:hi], rank[lo:hi]
        assert torch.equal(block.argsort(0), q.argsort(0))
        assert torch.equal(q.min(0).values, torch.zeros(M))
        assert torch.equal(q.max(0).values, torch.ones(M))
