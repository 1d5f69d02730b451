"""Training, model selection on validation, iterative mode and resuming."""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from ricea_pyg.data.split import unaligned_entities
from ricea_pyg.loss import RICEALoss
from ricea_pyg.metrics import alignment_metrics
from ricea_pyg.models.ricea import RICEA, ModelOutput, PairInputs
from ricea_pyg.search.csls import mutual_nearest_neighbors
from ricea_pyg.train.checkpoint import atomic_save, atomic_write, load_checkpoint
from ricea_pyg.train.config import TrainConfig

__all__ = ['Trainer', 'build_model', 'evaluate_embeddings']

ALIGN = ('source', 'aligned_with', 'target')


def build_model(inputs: PairInputs, config: TrainConfig) -> RICEA:
    return RICEA.from_inputs(
        inputs, channels=config.channels, fusion=config.fusion,
        fusion_kwargs=config.fusion_kwargs, gat_layers=config.gat_layers,
        gat_heads=config.gat_heads, gat_diag=config.gat_diag,
        dropout=config.dropout)


def evaluate_embeddings(source: Tensor, target: Tensor, pairs: Tensor,
                        csls_k: int = 3, candidates: str = 'test'
                        ) -> Dict[str, float]:
    r"""Hits@1/10, MRR, MR in both directions for :obj:`pairs` ``[2, P]``.

    ``candidates='test'`` ranks against the targets (sources) of
    :obj:`pairs` only, the standard protocol of MEAformer and its peers;
    ``'all'`` ranks against every entity of the other KG.
    """
    if candidates == 'test':
        cand = (pairs[0], pairs[1])
    elif candidates == 'all':
        cand = None
    else:
        raise ValueError(f"candidates must be 'test' or 'all' (got "
                         f'{candidates!r})')
    return alignment_metrics(source, target, pairs, csls_k=csls_k,
                             candidates=cand)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split(out: ModelOutput, b: int):
    def part(x, sl):
        return None if x is None else x[sl]
    halves = []
    for sl in (slice(0, b), slice(b, 2 * b)):
        halves.append(ModelOutput(
            out.fused[sl], out.x[sl], out.mask[sl], out.weights[sl],
            part(out.uncertainty, sl),
            {k: v[sl] for k, v in out.extras.items()}))
    return halves


class Trainer:
    r"""Trains :class:`~ricea_pyg.models.RICEA` on a pair in the library's
    :class:`HeteroData` schema.

    * AdamW, cosine schedule with linear warm-up, gradient clipping; the
      graph encoder runs on the full graph every step.
    * The model is selected on the validation pairs only (``select_metric``,
      CSLS as configured); the test pairs are evaluated once, at the end,
      with the selected model. Early stopping after ``patience``
      evaluations without improvement.
    * Iterative mode (method.md): a second stage at ``lr *
      iter_lr_factor`` where mutual nearest neighbours among unaligned
      entities that persist over two rounds join the training pairs.
    * With :obj:`out_dir`: ``last.pt`` every ``checkpoint_every`` epochs and
      ``best.pt`` at each new best (atomic writes), ``log.csv``,
      ``metrics.json``, TensorBoard events if it is installed.
      :meth:`fit` with ``resume=True`` continues from ``last.pt`` to the
      same numbers as an uninterrupted run.

    Args:
        data (HeteroData): See ``docs/data.md``.
        config (TrainConfig): (default: ``TrainConfig()``)
        out_dir (str, optional): Output folder.
        device (str or torch.device, optional): (default: CUDA if
            available, else CPU)
        log (callable): Receives each log line. (default: ``tqdm.write``)
    """

    def __init__(self, data: HeteroData, config: Optional[TrainConfig] = None,
                 out_dir: Optional[str] = None, device=None,
                 log: Optional[Callable[[str], None]] = None):
        self.config = config = config or TrainConfig()
        self.out_dir = out_dir
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        self.device = torch.device(device or ('cuda' if
                                              torch.cuda.is_available()
                                              else 'cpu'))
        self.log = log or tqdm.write
        split = data[ALIGN]
        self.train_pairs = split.train_index.clone()
        self.val_pairs, self.test_pairs = split.val_index, split.test_index
        # Gold counterparts, only to report how many added pairs are right.
        gold = torch.cat([split.train_index, split.val_index,
                          split.test_index], dim=1)
        self.gold = dict(zip(gold[0].tolist(), gold[1].tolist()))
        self.inputs = PairInputs.from_data(data, config.modalities).to(
            self.device)
        _seed_everything(config.seed)
        self.model = build_model(self.inputs, config).to(self.device)
        self.criterion = RICEALoss(len(self.inputs.modalities), config.tau,
                                   config.alpha, config.lambda_tcp,
                                   config.uncertainty_weighting).to(
                                       self.device)
        self.params = list(self.model.parameters()) + list(
            self.criterion.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.epoch = 0
        self.best = {'score': -math.inf, 'epoch': -1, 'val': {}}
        self.best_state: Optional[dict] = None
        self.evals_since_best = 0
        self.stage_stopped = {1: False, 2: False}
        self.pending = torch.empty(2, 0, dtype=torch.long)
        self.history: List[Dict] = []
        self._tb = None

    # -- schedule -------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        c = self.config
        return c.epochs + (c.iter_epochs if c.iterative else 0)

    def _stage(self, epoch: int) -> int:
        return 1 if epoch < self.config.epochs else 2

    def lr_at(self, epoch: int, fraction: float) -> float:
        """Cosine with linear warm-up over each stage; ``fraction`` is the
        progress within the epoch."""
        c = self.config
        if self._stage(epoch) == 1:
            start, length, base = 0, c.epochs, c.lr
        else:
            start, length, base = c.epochs, c.iter_epochs, c.lr * \
                c.iter_lr_factor
        t = (epoch - start + fraction) / length
        if c.warmup > 0 and t < c.warmup:
            return base * t / c.warmup
        progress = (t - c.warmup) / max(1e-12, 1 - c.warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- one epoch ----------------------------------------------------------------
    def train_epoch(self) -> Dict[str, float]:
        self.model.train()
        c = self.config
        rows = self.inputs.rows(self.train_pairs.to(self.device))
        perm = torch.randperm(rows.size(1), generator=self.generator).to(
            self.device)
        steps = math.ceil(rows.size(1) / c.batch_size)
        totals: Dict[str, float] = {}
        for step in range(steps):
            lr = self.lr_at(self.epoch, step / steps)
            for group in self.optimizer.param_groups:
                group['lr'] = lr
            batch = rows[:, perm[step * c.batch_size:(step + 1) *
                                 c.batch_size]]
            b = batch.size(1)
            out = self.model(self.inputs, batch.reshape(-1))
            loss, parts = self.criterion(*_split(out, b))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, c.clip)
            self.optimizer.step()
            parts['loss'] = float(loss.detach())
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / steps
        totals['lr'] = lr
        return totals

    # -- evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def embeddings(self):
        out = self.model.embed(self.inputs)
        n_s = self.inputs.num_source
        return out.fused[:n_s], out.fused[n_s:], out

    def evaluate(self, split: str = 'val', csls_k: Optional[int] = None,
                 candidates: Optional[str] = None, embeddings=None
                 ) -> Dict[str, float]:
        """Metrics of the current model on ``'val'`` or ``'test'``
        (:obj:`embeddings`: a result of :meth:`embeddings` to reuse)."""
        pairs = {'val': self.val_pairs, 'test': self.test_pairs}[split]
        src, tgt, _ = embeddings or self.embeddings()
        return evaluate_embeddings(
            src, tgt, pairs.to(self.device),
            self.config.csls_k if csls_k is None else csls_k,
            candidates or self.config.candidates)

    # -- iterative mode -----------------------------------------------------------
    def _iterate(self, stage_epoch: int) -> Dict[str, int]:
        c = self.config
        src, tgt, _ = self.embeddings()
        free_s, free_t = unaligned_entities(self.train_pairs, src.size(0),
                                            tgt.size(0))
        mnn = mutual_nearest_neighbors(src[free_s.to(src.device)],
                                       tgt[free_t.to(tgt.device)], c.csls_k,
                                       c.iter_threshold).cpu()
        found = torch.stack([free_s[mnn[0]], free_t[mnn[1]]])
        # Keep the pairs found in this round and the previous one.
        prev = set(zip(*self.pending.tolist())) if self.pending.numel() \
            else set()
        now = set(zip(*found.tolist()))
        keep = sorted(prev & now) if prev else sorted(now)
        self.pending = (torch.tensor(keep, dtype=torch.long).t() if keep
                        else torch.empty(2, 0, dtype=torch.long))
        info = {'mnn': len(now), 'persisting': len(keep)}
        if (stage_epoch + 1) % c.iter_add_every == 0 and keep:
            correct = sum(self.gold.get(s) == t for s, t in keep)
            self.train_pairs = torch.cat([self.train_pairs, self.pending], 1)
            self.pending = torch.empty(2, 0, dtype=torch.long)
            info.update(added=len(keep), added_correct=correct)
            self.log(f'iterative: added {len(keep)} pairs, {correct} correct '
                     f'({correct / len(keep):.1%}; gold used for this line '
                     f'only); {self.train_pairs.size(1)} training pairs')
        return info

    # -- checkpoints --------------------------------------------------------------
    def _path(self, name: str) -> Optional[str]:
        return os.path.join(self.out_dir, name) if self.out_dir else None

    def state_dict(self) -> dict:
        return {
            'config': self.config.to_dict(), 'epoch': self.epoch,
            'model': self.model.state_dict(),
            'criterion': self.criterion.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'generator': self.generator.get_state(),
            'rng': {'torch': torch.get_rng_state(),
                    'python': random.getstate(),
                    'numpy': np.random.get_state()},
            'best': self.best, 'best_state': self.best_state,
            'evals_since_best': self.evals_since_best,
            'stage_stopped': self.stage_stopped,
            'train_pairs': self.train_pairs, 'pending': self.pending,
            'history': self.history, 'modalities': self.inputs.modalities,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = {k: v for k, v in state['config'].items() if k != 'progress'}
        now = {k: v for k, v in self.config.to_dict().items()
               if k != 'progress'}
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise ValueError(f'cannot resume: the checkpoint was trained '
                             f'with different settings ({diff}); use the '
                             'same config or a new --out folder')
        self.model.load_state_dict(state['model'])
        self.criterion.load_state_dict(state['criterion'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.generator.set_state(state['generator'])
        torch.set_rng_state(state['rng']['torch'])
        random.setstate(state['rng']['python'])
        np.random.set_state(state['rng']['numpy'])
        self.epoch = state['epoch']
        self.best, self.best_state = state['best'], state['best_state']
        self.evals_since_best = state['evals_since_best']
        self.stage_stopped = state['stage_stopped']
        self.train_pairs, self.pending = (state['train_pairs'],
                                          state['pending'])
        self.history = state['history']

    def _checkpoint(self) -> None:
        if self.out_dir:
            atomic_save(self.state_dict(), self._path('last.pt'))

    def _write_log(self, row: Dict) -> None:
        if not self.out_dir:
            return
        keys: List[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]

        def write(f):
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
        atomic_write(self._path('log.csv'), write, binary=False)
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(self._path('tensorboard'))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != 'epoch':
                    self._tb.add_scalar(k, v, row['epoch'])

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict:
        """Trains (or continues), selects on validation, tests once.

        Returns the metrics dict that is also written to
        ``out_dir/metrics.json``: ``val`` (of the selected model), ``test``
        (CSLS as configured), ``test_cosine``, ``best_epoch``,
        ``epoch_time_s``, ``wall_time_s``, ``config``.
        """
        c = self.config
        start = time.perf_counter()
        if resume and self.out_dir and os.path.isfile(self._path('last.pt')):
            self.load_state_dict(load_checkpoint(self._path('last.pt')))
            self.log(f'resumed from {self._path("last.pt")} at epoch '
                     f'{self.epoch}')
        bar = tqdm(total=self.total_epochs, initial=self.epoch,
                   disable=not c.progress, desc='train', leave=False)
        while self.epoch < self.total_epochs:
            stage = self._stage(self.epoch)
            if self.stage_stopped[stage]:  # early-stopped: skip the rest
                self.epoch = c.epochs if stage == 1 else self.total_epochs
                continue
            t0 = time.perf_counter()
            row = {'epoch': self.epoch + 1, 'stage': stage,
                   **self.train_epoch()}
            row['train_pairs'] = self.train_pairs.size(1)
            row['time_s'] = time.perf_counter() - t0
            stage_epoch = self.epoch - (0 if stage == 1 else c.epochs)
            if stage == 2 and (stage_epoch + 1) % c.iter_every == 0:
                row.update(self._iterate(stage_epoch))
            last_of_stage = self.epoch + 1 in (c.epochs, self.total_epochs)
            if (self.epoch + 1) % c.eval_every == 0 or last_of_stage:
                val = self.evaluate('val')
                row.update({f'val_{k}': v for k, v in val.items()})
                score = val[c.select_metric]
                if score > self.best['score']:
                    self.best = {'score': score, 'epoch': self.epoch + 1,
                                 'val': val}
                    self.best_state = copy.deepcopy(self.model.state_dict())
                    self.evals_since_best = 0
                    if self.out_dir:
                        atomic_save({'model': self.best_state,
                                     'config': c.to_dict(),
                                     'modalities': self.inputs.modalities,
                                     'epoch': self.epoch + 1, 'val': val},
                                    self._path('best.pt'))
                else:
                    self.evals_since_best += 1
                    if c.patience and self.evals_since_best >= c.patience:
                        self.stage_stopped[stage] = True
                        self.log(f'early stop in stage {stage} at epoch '
                                 f'{self.epoch + 1} (best '
                                 f'{c.select_metric} {self.best["score"]:.4f}'
                                 f' at epoch {self.best["epoch"]})')
            self.history.append(row)
            self.log(self._line(row))
            self.epoch += 1
            bar.update(1)
            self._write_log(row)
            if self.epoch % c.checkpoint_every == 0:
                self._checkpoint()
        bar.close()
        self._checkpoint()
        return self._finish(time.perf_counter() - start)

    def _line(self, row: Dict) -> str:
        s = (f"epoch {row['epoch']:4d} | stage {row['stage']} | loss "
             f"{row['loss']:.4f} | lr {row['lr']:.2e} | {row['time_s']:.2f}s")
        if 'val_mrr' in row:
            s += (f" | val hits@1 {row['val_hits@1']:.4f} mrr "
                  f"{row['val_mrr']:.4f}")
        return s

    def _finish(self, fit_time: float) -> Dict:
        c = self.config
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        emb = self.embeddings()  # once, for both scorings
        test = self.evaluate('test', embeddings=emb)
        test_cos = self.evaluate('test', csls_k=0, embeddings=emb)
        times = [r['time_s'] for r in self.history]
        metrics = {
            'val': self.best['val'], 'test': test, 'test_cosine': test_cos,
            'best_epoch': self.best['epoch'], 'epochs_run': len(times),
            'epoch_time_s': float(np.median(times)) if times else None,
            'train_pairs': self.train_pairs.size(1),
            'fit_time_s': fit_time, 'config': c.to_dict(),
        }
        self.log(f"best epoch {self.best['epoch']}: val hits@1 "
                 f"{self.best['val'].get('hits@1', float('nan')):.4f}; test "
                 f"hits@1 {test['hits@1']:.4f} hits@10 {test['hits@10']:.4f} "
                 f"mrr {test['mrr']:.4f} (csls_k={c.csls_k}, candidates="
                 f"{c.candidates})")
        if self._tb:
            self._tb.close()
        return metrics

    def write_metrics(self, metrics: Dict, wall_time_s: float) -> None:
        """``out_dir/metrics.json`` with the total wall time added."""
        metrics['wall_time_s'] = wall_time_s
        if self.out_dir:
            atomic_write(self._path('metrics.json'),
                         lambda f: json.dump(metrics, f, indent=2),
                         binary=False)
