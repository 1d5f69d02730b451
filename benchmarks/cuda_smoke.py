"""CUDA smoke check: the same short training on CPU and on CUDA, for the GAT
and the relation-aware encoder (with Dual-AMN's hard negatives), then
one-to-one inference on the GPU. Prints metrics and times; needs a GPU.

    python benchmarks/cuda_smoke.py --entities 3000 --epochs 5
"""
from __future__ import annotations

import argparse
import time

import torch

from ricea_pyg.data import synthetic_pair
from ricea_pyg.train import TrainConfig, Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--entities', type=int, default=3000)
    p.add_argument('--epochs', type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit('no CUDA device: nothing to check')
    data = synthetic_pair(args.entities, seed=0)
    for encoder, hard in (('gat', 0.0), ('relational', 1.0)):
        results = {}
        for device in ('cpu', 'cuda'):
            config = TrainConfig(channels=64, epochs=args.epochs,
                                 batch_size=512, eval_every=args.epochs,
                                 structure_encoder=encoder,
                                 hard_negative_weight=hard, progress=False)
            start = time.perf_counter()
            trainer = Trainer(data, config, device=device, log=lambda s: None)
            metrics = trainer.fit()
            results[device] = (metrics, time.perf_counter() - start)
        for device, (m, wall) in results.items():
            print(f"{encoder:10s} {device:4s} val hits@1 "
                  f"{m['val']['hits@1']:.4f} test hits@1 "
                  f"{m['test']['hits@1']:.4f} one-to-one "
                  f"{m['test']['one_to_one_hits@1']:.4f} "
                  f"epoch {m['epoch_time_s']:.2f}s wall {wall:.1f}s")


if __name__ == '__main__':
    main()
