"""The training loop: it composes the schedule, model selection,
self-training, checkpoints and the run log, each in a module of its own."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import warnings
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from ricea_pyg.data.inputs import PairInputs
from ricea_pyg.data.sampling import NeighborSampler
from ricea_pyg.data.schema import ALIGN
from ricea_pyg.io import atomic_save, atomic_write
from ricea_pyg.loss import RICEALoss, dual_amn_loss, hard_negative_ids
from ricea_pyg.metrics import evaluate_embeddings as _evaluate_embeddings
from ricea_pyg.models.ricea import RICEA, ModelOutput
from ricea_pyg.nn.propagation import (
    FeaturePropagation,
    PropagationGraph,
    SeedLabelPropagation,
)
from ricea_pyg.train.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from ricea_pyg.train.config import (
    LABEL_CHANNELS,
    LABELS,
    NAME_MODALITIES,
    NAME_WEIGHTS,
    SAMPLED_FROM,
    ConfigError,
    TrainConfig,
    resume_conflicts,
)
from ricea_pyg.train.iterative import SelfTraining, unaligned_mutual_pairs
from ricea_pyg.train.log import RunLog
from ricea_pyg.train.schedule import StagedSchedule
from ricea_pyg.train.selection import ModelSelector

__all__ = ['Trainer', 'build_model', 'model_inputs', 'seed_labels',
           'PROPAGATED_DTYPE',
           'evaluate_embeddings']


def resolve_config(inputs, config: TrainConfig) -> TrainConfig:
    """:obj:`config` with its size-dependent settings made concrete for
    :obj:`inputs` (:meth:`TrainConfig.resolve`), checked. :obj:`inputs` is a
    :class:`PairInputs` or the :class:`HeteroData` pair itself (sizes only,
    nothing copied: the CLI checks before it writes ``run.json``)."""
    if isinstance(inputs, PairInputs):
        sizes, mods = (inputs.num_source, inputs.num_target), \
            inputs.modalities
    else:
        sizes = (inputs['source'].num_nodes, inputs['target'].num_nodes)
        mods = config.modalities or list(inputs.modalities)
    if config.label_channels is None:
        structure_only = 'graph' in mods and 'name' not in mods
        config = dataclasses.replace(config, label_channels=(
            LABEL_CHANNELS if structure_only and max(sizes) < SAMPLED_FROM
            else 0))
    # (what needs the seed labels, the other fix) for each option that does
    needs = [(what, fix) for on, what, fix in (
        (config.label_mode == 'beside', "label_mode='beside' scores the seed "
         'labels beside the fusion', "label_mode='fused'"),
        (config.label_rounds, f'label_rounds={config.label_rounds} '
         'bootstraps the seed labels', 'label_rounds=0')) if on]
    if needs and not config.label_channels:
        raise ConfigError(f'{" and ".join(w for w, _ in needs)}, but this '
                          'model has none (label_channels resolves to '
                          f'{config.label_channels}: by default they are off '
                          'with names and from 100k entities per KG); set '
                          'label_channels (e.g. 1024) or '
                          f'{" and ".join(f for _, f in needs)}')
    if config.label_channels and LABELS not in mods:
        mods = list(mods) + [LABELS]
    named = [m for m in NAME_MODALITIES if m in mods]
    summed = config.fusion_kwargs.get('mode', 'concat') != 'concat'
    default_names = config.name_weights == list(NAME_WEIGHTS)
    if default_names and max(sizes) >= SAMPLED_FROM:
        # Each choice is one more (approximate) validation search there.
        config = dataclasses.replace(config, name_weight=1.0)
    elif (not named or summed) and config.name_weights != [1.0]:
        if not default_names:  # asked for
            why = ("the fusion adds the modalities up (mode='sum'), so "
                   'their blocks cannot be weighed' if named else
                   f'this model has no name modality '
                   f'({list(NAME_MODALITIES)})')
            raise ConfigError(f'name_weight={config.name_weight!r}, but '
                              f'{why}; set name_weight to 1')
        config = dataclasses.replace(config, name_weight=1.0)
    # Modalities the fusion sees: labels beside it are not among them.
    fused = len(mods) - (config.label_mode == 'beside' and LABELS in mods)
    config = config.resolve(*sizes, fused)
    if config.sampled and 'graph' in mods:
        if len(config.fanouts) != config.gat_layers:
            raise ConfigError(f'sampled training needs one fan-out per GAT '
                              f'layer: fanouts={config.fanouts} but '
                              f'gat_layers={config.gat_layers}')
        if config.structure_encoder != 'gat':
            raise ConfigError("sampled training supports structure_encoder="
                              "'gat' only; set sampled=false for the "
                              'relational encoder')
    if config.joint_loss == 'dual_amn':
        if config.sampled:
            raise ConfigError("joint_loss='dual_amn' scores every entity in "
                              'each step, which sampled training avoids; set '
                              "sampled=false, or keep joint_loss='icl' with "
                              'hard_negative_weight > 0 (FAISS-mined '
                              'negatives)')
        if config.fusion_kwargs.get('scoring', 'fused') != 'fused':
            raise ConfigError("joint_loss='dual_amn' compares distances "
                              "between fused vectors, so it needs scoring="
                              "'fused' (got fusion_kwargs scoring="
                              f"{config.fusion_kwargs['scoring']!r}); drop "
                              "it or use joint_loss='icl'")
    return config


def model_inputs(data: HeteroData, config: TrainConfig,
                 seed_pairs: Optional[Tensor] = None) -> PairInputs:
    """:obj:`data` as the model that :obj:`config` describes reads it:
    :class:`PairInputs` of its modalities, with the features of
    ``config.propagate`` replaced by :class:`FeaturePropagation` over the
    triples (``propagation_hops + 1`` times as wide, stored as
    :data:`PROPAGATED_DTYPE`). With ``config.impute_missing`` an entity
    that lacks a propagated modality but has a neighbour with it takes the
    neighbours' hops and counts as present (Feature Propagation's
    imputation); one without such a neighbour stays masked. Training,
    evaluation and ``ricea align`` all build their inputs here.

    A ``propagate`` left at None takes the default modalities the data
    has; a modality named explicitly must be among the model's. With
    ``label_channels`` > 0 the inputs get one more modality, ``'labels'``:
    :class:`SeedLabelPropagation` of :obj:`seed_pairs` (default: the
    data's training pairs), drawn with ``config.seed``.
    """
    inputs = PairInputs.from_data(data, config.modalities)
    resolved = resolve_config(inputs, config)
    mods = resolved.propagate
    if config.propagate is None:
        mods = [m for m in mods if m in inputs.features]
    missing = [m for m in mods if m not in inputs.features]
    if missing:
        raise ConfigError(f'propagate names {missing}, which the model does '
                          f'not read (its feature modalities: '
                          f'{sorted(inputs.features)}); remove them from '
                          'propagate')
    if mods:
        propagation = FeaturePropagation(config.propagation_hops)
        inputs.mask = inputs.mask.clone()
        for m in mods:
            present = inputs.mask[:, inputs.modalities.index(m)]
            # Missing rows must be zero whatever the data holds there, or
            # propagation would spread them.
            x = inputs.features[m].masked_fill(~present.view(-1, 1), 0)
            x = propagation(x, _propagation_graph(inputs))
            if config.impute_missing:
                present |= x.ne(0).any(dim=1)
            inputs.features[m] = x.to(PROPAGATED_DTYPE)
    if resolved.label_channels:
        if seed_pairs is None and ALIGN in data.edge_types:
            seed_pairs = data[ALIGN].train_index
        if seed_pairs is None or seed_pairs.numel() == 0:
            raise ConfigError('label_channels > 0 needs seed pairs (the '
                              "data's train_index is empty); set "
                              'label_channels to 0')
        inputs.modalities.append(LABELS)
        inputs.features[LABELS] = seed_labels(inputs, seed_pairs, resolved)
        inputs.mask = torch.cat([inputs.mask, inputs.mask.new_ones(
            inputs.num_entities, 1)], dim=1)
    return inputs


#: Storage type of the propagated features and seed labels: their rows are
#: unit vectors, so float16 keeps a relative error of 2^-11 in half the
#: memory (0.65 -> 0.33 GB of name and bigram features on DBP15K); the
#: projections compute in float32.
PROPAGATED_DTYPE = torch.float16


def _propagation_graph(inputs: PairInputs) -> PropagationGraph:
    return inputs.cached('propagation_graph', lambda: PropagationGraph(
        inputs.edge_index, inputs.edge_type, inputs.num_entities,
        inputs.num_relations))


def seed_labels(inputs: PairInputs, seed_pairs: Tensor,
                config: TrainConfig) -> Tensor:
    """The ``'labels'`` features of :obj:`inputs` for these ``[2, P]``
    (source, target) seed pairs: :class:`SeedLabelPropagation` with the
    resolved :obj:`config`'s width and hops, its labels drawn with
    ``config.seed`` (so that evaluation rebuilds what training saw)."""
    return SeedLabelPropagation(config.label_channels,
                                config.propagation_hops)(
        inputs.rows(seed_pairs.to(inputs.edge_index.device)),
        _propagation_graph(inputs),
        torch.Generator().manual_seed(config.seed), dtype=PROPAGATED_DTYPE)


def build_model(inputs: PairInputs, config: TrainConfig) -> RICEA:
    """The :class:`RICEA` model that :obj:`config` describes, sized for
    :obj:`inputs` (size-dependent settings resolved for them)."""
    config = resolve_config(inputs, config)
    return RICEA.from_inputs(
        inputs, channels=config.channels, fusion=config.fusion,
        fusion_kwargs=config.fusion_kwargs, gat_layers=config.gat_layers,
        gat_heads=config.gat_heads, gat_diag=config.gat_diag,
        dropout=config.dropout, structure_encoder=config.structure_encoder,
        sparse_grad=bool(config.sampled),
        checkpoint_fusion=config.checkpoint_fusion,
        beside=([LABELS] if config.label_mode == 'beside' and LABELS in
                inputs.modalities else ()),
        beside_weight=config.label_weights[0],
        score_weights=name_score_weights(inputs.modalities,
                                         config.name_weights[0]))


def name_score_weights(modalities, weight: float) -> Dict[str, float]:
    """:attr:`RICEA.score_weights` that weigh the name modalities of
    :obj:`modalities` by :obj:`weight`."""
    return {m: weight for m in NAME_MODALITIES if m in modalities}


def evaluate_embeddings(*args, **kwargs) -> Dict[str, float]:
    """Deprecated: moved to :func:`ricea_pyg.metrics.evaluate_embeddings`."""
    warnings.warn('ricea_pyg.train.evaluate_embeddings is deprecated; use '
                  'ricea_pyg.metrics.evaluate_embeddings', DeprecationWarning,
                  stacklevel=2)
    return _evaluate_embeddings(*args, **kwargs)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _quiet(_: str) -> None:
    pass


def _process_group():
    """``(rank, world_size)`` of the default process group, or ``(0, 1)``
    outside :mod:`torch.distributed`."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _every_entity_loss(h: Tensor, batch: Tensor) -> Tensor:
    """:func:`dual_amn_loss` of the ``[2, B]`` row pairs :obj:`batch` of
    :obj:`h` with every entity of both KGs but the pair itself a negative
    (Dual-AMN's choice; ``benchmarks/structure_only.py`` measured it ahead
    of the other KG alone)."""
    pair_rows = batch.t()
    return dual_amn_loss(h[batch[0]], h[batch[1]], h, h,
                         source_index=pair_rows, target_index=pair_rows)


def _halves(out: ModelOutput, b: int):
    """The source and target halves of a batch of ``2 b`` rows."""
    return [out.select(sl) for sl in (slice(0, b), slice(b, 2 * b))]


class Trainer:
    r"""Trains :class:`~ricea_pyg.models.RICEA` on a pair in the library's
    :class:`HeteroData` schema.

    * AdamW with :class:`~ricea_pyg.train.schedule.StagedSchedule` (cosine
      after a linear warm-up) and gradient clipping; below
      :data:`~ricea_pyg.train.config.SAMPLED_FROM` entities per KG the
      graph encoder runs on the full graph every step.
    * On large graphs (``sampled``, by default from
      :data:`~ricea_pyg.train.config.SAMPLED_FROM` entities per KG) each
      step encodes only the sampled neighbourhood of its pairs
      (:class:`~ricea_pyg.data.sampling.NeighborSampler`, ``fanouts``), the
      entity table gets sparse gradients and
      :class:`~torch.optim.SparseAdam`, and validation uses
      :func:`~ricea_pyg.metrics.approximate_alignment_metrics` on
      ``eval_queries`` sampled pairs. The table then has no weight decay
      and no gradient clipping (the other parameters keep both). An epoch
      costs
      :math:`O(P \prod_h f_h)` for :math:`P` seed pairs, not
      :math:`O(P N)`.
    * :class:`~ricea_pyg.train.selection.ModelSelector` selects on the
      validation pairs only (``select_metric``, CSLS as configured); the
      test pairs are evaluated once, at the end, with the selected model.
      Early stopping after ``patience`` evaluations without improvement.
    * Iterative mode: :class:`~ricea_pyg.train.iterative.SelfTraining` adds
      mutual nearest neighbours that persist across rounds, in a second
      stage at ``lr * iter_lr_factor``.
    * With :obj:`out_dir`: ``last.pt`` every ``checkpoint_every`` epochs and
      ``best.pt`` at each new best (atomic writes), ``log.csv``,
      ``metrics.json``, TensorBoard events if it is installed.
      :meth:`fit` with ``resume=True`` continues from ``last.pt`` to the
      same numbers as an uninterrupted run.

    * Under :mod:`torch.distributed` (``ricea train --nproc N`` or
      ``torchrun``): every process holds the model, takes its share of each
      batch's seed pairs, and the gradients are averaged across processes
      (sparse ones as sparse tensors) before each identical optimiser step,
      so the replicas never diverge. Every process evaluates (the results
      are the same); only rank 0 logs and writes files.

    Args:
        data (HeteroData): A pair in the library's schema
            (``docs/data.md``).
        config (TrainConfig, optional): Every setting of the run.
            (default: ``TrainConfig()``)
        out_dir (str, optional): Folder for checkpoints, logs and metrics.
            (default: :obj:`None`, nothing written)
        device (str or torch.device, optional): Where to train. (default:
            CUDA if available, else CPU)
        log (callable, optional): Receives each log line. (default:
            ``tqdm.write``)
    """

    def __init__(self, data: HeteroData, config: Optional[TrainConfig] = None,
                 out_dir: Optional[str] = None, device=None,
                 log: Optional[Callable[[str], None]] = None):
        config = config or TrainConfig()
        self.rank, self.world_size = _process_group()
        self.out_dir = out_dir  # read by every rank (resume), written by 0
        if out_dir and self.rank == 0:
            os.makedirs(out_dir, exist_ok=True)
        self.device = torch.device(device or ('cuda' if
                                              torch.cuda.is_available()
                                              else 'cpu'))
        self.log = log or tqdm.write
        if self.rank != 0:
            self.log = _quiet
        split = data[ALIGN]
        self.train_pairs = split.train_index.clone()
        self.best_train_pairs = self.train_pairs
        self.best_label_weight = config.label_weights[0]
        self.val_pairs, self.test_pairs = split.val_index, split.test_index
        # Gold counterparts, only to report how many added pairs are right.
        gold = torch.cat([split.train_index, split.val_index,
                          split.test_index], dim=1)
        self.gold = dict(zip(gold[0].tolist(), gold[1].tolist()))
        self.inputs = model_inputs(data, config).to(self.device)
        # The pairs the inputs' seed labels were built from (model_inputs
        # reads the split's train_index), so that an unchanged set is not
        # rebuilt: a rebuild takes 15-20 s on DBP15K.
        self._label_pairs = self.train_pairs.cpu().clone()
        # Checkpoints keep the settings as asked (None = by size), so that
        # resuming compares like with like; the run uses them resolved.
        self.requested_config = config
        self.config = config = resolve_config(self.inputs, config)
        _seed_everything(config.seed)
        self.model = build_model(self.inputs, config).to(self.device)
        self.best_score_weights = self.model.score_weights
        self.sampler = None
        if config.sampled and self.model.entity is not None:
            self.sampler = NeighborSampler(self.inputs.edge_index,
                                           self.inputs.num_entities,
                                           config.fanouts)
        self.criterion = RICEALoss(len(self.model.modalities), config.tau,
                                   config.alpha, config.lambda_tcp,
                                   config.uncertainty_weighting,
                                   config.lambda_uncertainty).to(
                                       self.device)
        self.params = list(self.model.parameters()) + list(
            self.criterion.parameters())
        self.sparse_optimizer = None
        if self.sampler is not None:  # only the rows a batch touches move
            table = self.model.entity.weight
            self.params = [p for p in self.params if p is not table]
            self.sparse_optimizer = torch.optim.SparseAdam([table],
                                                           lr=config.lr)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.sample_generator = torch.Generator()  # seeded each epoch
        self.schedule = StagedSchedule.from_config(config)
        self.selector = ModelSelector(config.select_metric, config.patience)
        self.self_training = (SelfTraining.from_config(config)
                              if config.iterative else None)
        self.run_log = RunLog(out_dir if self.rank == 0 else None)
        self.epoch = 0

    # -- schedule -------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        return self.schedule.total_epochs

    def lr_at(self, epoch: int, fraction: float) -> float:
        return self.schedule.lr_at(epoch, fraction)

    @property
    def history(self):
        return self.run_log.rows

    @property
    def best(self) -> Dict:
        return self.selector.best

    # -- one epoch ----------------------------------------------------------------
    def train_epoch(self) -> Dict[str, float]:
        self.model.train()
        c = self.config
        rows = self.inputs.rows(self.train_pairs.to(self.device))
        perm = torch.randperm(rows.size(1), generator=self.generator).to(
            self.device)
        steps = math.ceil(rows.size(1) / c.batch_size)
        totals: Dict[str, float] = {}
        self._negative_cache = None  # refreshed once per epoch
        # Neighbour draws: their count depends on this process's seeds, so
        # they get their own stream (the shared permutation must stay the
        # same on every process), reseeded per epoch for exact resumes.
        self.sample_generator.manual_seed(
            (c.seed + 1) * 1_000_003 + self.epoch * 1_009 + self.rank)
        for step in range(steps):
            # The rate at the middle of the step: neither the first step
            # (warm-up) nor the last (cosine) is wasted at 0, and a one-step
            # run still trains.
            lr = self.lr_at(self.epoch, (step + 0.5) / steps)
            for opt in self._optimizers():
                for group in opt.param_groups:
                    # A group may carry its own multiple of the schedule.
                    group['lr'] = lr * group.get('lr_scale', 1.0)
            batch = rows[:, perm[step * c.batch_size:(step + 1) *
                                 c.batch_size]]
            # This process's share of the batch (all of it on one process).
            batch = batch[:, self.rank::self.world_size]
            for opt in self._optimizers():
                opt.zero_grad(set_to_none=True)
            parts = {}
            if batch.size(1) > 0:
                if self.sampler is not None:
                    loss, parts = self._sampled_step(batch)
                else:
                    loss, parts = self._full_step(batch)
                loss.backward()
                parts['loss'] = float(loss.detach())
            if self.world_size > 1:
                self._average_gradients()
            if c.clip > 0:  # the dense parameters (not the sparse table)
                torch.nn.utils.clip_grad_norm_(self.params, c.clip)
            for opt in self._optimizers():
                opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / steps
        totals['lr'] = lr
        return totals

    def _average_gradients(self) -> None:
        """Mean of every gradient over the processes. A parameter that got
        no gradient on any process keeps none (as on one process); one that
        got it on some only counts zeros for the others."""
        import torch.distributed as dist
        table = None if self.model.entity is None else self.model.entity.weight
        params = list(self.model.parameters()) + list(
            self.criterion.parameters())
        has = torch.tensor([p.grad is not None for p in params],
                           dtype=torch.float32, device=params[0].device)
        dist.all_reduce(has)
        for p, count in zip(params, has.tolist()):
            if count == 0:
                continue
            if p is table and self.sparse_optimizer is not None:
                grad = p.grad
                if grad is None:
                    grad = torch.sparse_coo_tensor(
                        torch.empty(1, 0, dtype=torch.long, device=p.device),
                        p.new_empty(0, p.size(1)), p.shape)
                grad = grad.coalesce()
                if dist.get_backend() == 'nccl':  # no sparse all-reduce
                    grad = grad.to_dense()
                    dist.all_reduce(grad)
                    grad = grad.to_sparse(1)  # SparseAdam takes sparse only
                else:
                    dist.all_reduce(grad)
                p.grad = grad / self.world_size
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world_size

    def _optimizers(self):
        return [o for o in (self.optimizer, self.sparse_optimizer)
                if o is not None]

    def _full_step(self, batch: Tensor):
        """Loss of one batch with the graph encoder on the whole graph."""
        graph = self.model.graph_embeddings(self.inputs)
        if self.config.joint_loss == 'dual_amn':
            # Unit rows, as search scores them. Each process runs the model
            # on every entity (no speed-up from more processes).
            out = self.model(self.inputs, graph=graph, beside=False)
            joint = _every_entity_loss(F.normalize(out.fused, dim=1), batch)
            loss, parts = self.criterion(out.select(batch[0]),
                                         out.select(batch[1]), joint=joint)
        else:
            out = self.model(self.inputs, batch.reshape(-1), graph=graph,
                             beside=False)
            loss, parts = self.criterion(*_halves(out, batch.size(1)))
        if self.config.hard_negative_weight > 0 and graph is not None:
            hard = _every_entity_loss(graph, batch)
            loss = loss + self.config.hard_negative_weight * hard
            parts['hard_negative'] = float(hard.detach())
        return loss, parts

    def _sampled_step(self, batch: Tensor):
        """Loss of one batch with the graph encoder on the sampled
        neighbourhood of its pairs (and of their hard negatives)."""
        b = batch.size(1)
        seeds = batch.reshape(-1)
        negatives = None
        if self.config.hard_negative_weight > 0:
            negatives, missing = self._hard_negatives(batch)  # [2, B, K]
            seeds = torch.cat([seeds, negatives.reshape(-1)])
        sub = self.sampler.sample(seeds, self.sample_generator)
        graph = self.model.sampled_graph_embeddings(sub)
        out = self.model(self.inputs, batch.reshape(-1), graph=graph[:2 * b],
                         graph_rows=True, beside=False)
        loss, parts = self.criterion(*_halves(out, b))
        if negatives is not None:
            k = negatives.size(2)
            table = graph[2 * b:]  # [2 B K, d]: target negatives, then source
            ids = torch.arange(b * k, device=table.device).view(b, k)
            hard = dual_amn_loss(graph[:b], graph[b:2 * b], table[b * k:],
                                 table[:b * k],
                                 source_negatives=ids.masked_fill(
                                     missing[1], -1),
                                 target_negatives=ids.masked_fill(
                                     missing[0], -1))
            loss = loss + self.config.hard_negative_weight * hard
            parts['hard_negative'] = float(hard.detach())
        return loss, parts

    def _hard_negatives(self, batch: Tensor):
        """``[2, B, K]`` rows: the K nearest target entities of each
        source (then source entities of each target) by the graph embedding
        cached at the start of the epoch, from exact l2 indexes
        (:class:`AlignmentIndex`); and ``[2, B, K]`` True where fewer than
        K exist (the row is then a placeholder)."""
        from ricea_pyg.search.index import AlignmentIndex
        n_s = self.inputs.num_source
        if self._negative_cache is None:
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                g = self.model.graph_embeddings(self.inputs).detach()
            self.model.train(was)
            self._negative_cache = (g, [
                AlignmentIndex('flat', metric='l2', progress=False).add(part)
                for part in (g[n_s:], g[:n_s])])
        g, (targets, sources) = self._negative_cache
        k = self.config.hard_negative_k
        to_t = hard_negative_ids(g[batch[0]], targets, k,
                                 exclude=batch[1] - n_s)
        to_s = hard_negative_ids(g[batch[1]], sources, k, exclude=batch[0])
        missing = torch.stack([to_t < 0, to_s < 0])
        rows = torch.stack([to_t.clamp_min(0) + n_s, to_s.clamp_min(0)])
        return rows, missing

    # -- evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def embeddings(self):
        # Large graphs: only what search needs, not [N, M, d] of parts.
        out = self.model.embed(self.inputs, search_only=bool(
            self.config.sampled))
        n_s = self.inputs.num_source
        emb = out.embeddings  # what the loss compares, so search does too
        return emb[:n_s], emb[n_s:], out

    def evaluate(self, split: str = 'val', csls_k: Optional[int] = None,
                 candidates: Optional[str] = None, embeddings=None,
                 one_to_one: bool = False) -> Dict[str, float]:
        """Metrics of the current model on ``'val'`` or ``'test'``
        (:obj:`embeddings`: a result of :meth:`embeddings` to reuse;
        :obj:`one_to_one`: add one-to-one Hits@1). With ``eval_queries``
        > 0: approximate search on that many sampled pairs (seeded by
        ``seed``), and no one-to-one Hits@1."""
        pairs = {'val': self.val_pairs, 'test': self.test_pairs}[split]
        src, tgt, _ = embeddings or self.embeddings()
        return self._evaluate_pairs(src, tgt, pairs, csls_k, candidates,
                                    one_to_one)

    def _evaluate_pairs(self, src, tgt, pairs: Tensor,
                        csls_k: Optional[int] = None,
                        candidates: Optional[str] = None,
                        one_to_one: bool = False) -> Dict[str, float]:
        return _evaluate_embeddings(
            src, tgt, pairs.to(self.device),
            self.config.csls_k if csls_k is None else csls_k,
            candidates or self.config.candidates, one_to_one,
            progress=None if self.config.progress else False,
            num_queries=self.config.eval_queries, seed=self.config.seed,
            # embed() returns them unit-norm: no second copy on big graphs.
            normalize=False if self.config.eval_queries else None)

    # -- checkpoints --------------------------------------------------------------
    def _path(self, name: str) -> Optional[str]:
        return os.path.join(self.out_dir, name) if self.out_dir else None

    def state_dict(self) -> dict:
        return {
            'format_version': FORMAT_VERSION,
            'config': self.requested_config.to_dict(), 'epoch': self.epoch,
            'model': self.model.state_dict(),
            'criterion': self.criterion.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'sparse_optimizer': (None if self.sparse_optimizer is None else
                                 self.sparse_optimizer.state_dict()),
            'generator': self.generator.get_state(), 'rng': rng_state(),
            'selector': self.selector.state_dict(),
            'self_training': (self.self_training.state_dict()
                              if self.self_training else None),
            'train_pairs': self.train_pairs, 'log': self.run_log.state_dict(),
            'best_train_pairs': self.best_train_pairs,
            # g of the model's score (label_weight) and the name weight, as
            # last chosen on validation, and of the selected model
            'label_weight': self.model.beside_weight,
            'best_label_weight': self.best_label_weight,
            'score_weights': self.model.score_weights,
            'best_score_weights': self.best_score_weights,
            'modalities': self.inputs.modalities,
        }

    def load_state_dict(self, state: dict) -> None:
        # Through TrainConfig, so that a field added since fills its default.
        # Resolved for this data, so that a checkpoint that recorded the
        # sizes (before they were chosen by size) compares equal.
        saved = {k: v for k, v in resolve_config(
            self.inputs, TrainConfig.from_checkpoint(state['config']))
                 .to_dict().items() if k != 'progress'}
        now = {k: v for k, v in self.config.to_dict().items()
               if k != 'progress'}
        if saved != now:
            raise ValueError(f'cannot resume: the checkpoint was trained '
                             f'with different settings '
                             f'({resume_conflicts(saved, now)}); use the '
                             'same config or a new --out folder')
        self.model.load_state_dict(state['model'])
        self.criterion.load_state_dict(state['criterion'])
        self.optimizer.load_state_dict(state['optimizer'])
        if self.sparse_optimizer is not None:
            self.sparse_optimizer.load_state_dict(state['sparse_optimizer'])
        self.generator.set_state(state['generator'])
        set_rng_state(state['rng'])
        self.epoch = state['epoch']
        self.selector.load_state_dict(state['selector'])
        if self.self_training is not None:
            self.self_training.load_state_dict(state['self_training'])
        self.train_pairs = state['train_pairs']
        self.best_train_pairs = state.get('best_train_pairs',
                                          self.train_pairs)
        self.model.beside_weight = state.get('label_weight',
                                             self.model.beside_weight)
        self.best_label_weight = state.get('best_label_weight',
                                           self.best_label_weight)
        self.model.score_weights = state.get('score_weights',
                                             self.model.score_weights)
        self.best_score_weights = state.get('best_score_weights',
                                            self.best_score_weights)
        if LABELS in self.inputs.modalities:
            self._refresh_labels()
        self.run_log.load_state_dict(state['log'])

    def _refresh_labels(self, pairs: Optional[Tensor] = None) -> None:
        """The seed-label features of :obj:`pairs` (default: the current
        training pairs). Labels are a function of the pairs and the seed,
        so the same pairs keep the features they have (also on a GPU, where
        the first ones were built on the CPU). Whatever writes
        ``inputs.features['labels']`` otherwise must reset
        ``_label_pairs``."""
        pairs = self.train_pairs if pairs is None else pairs
        if torch.equal(pairs.cpu(), self._label_pairs):
            return
        self.inputs.features[LABELS] = seed_labels(self.inputs, pairs,
                                                   self.config)
        self._label_pairs = pairs.cpu().clone()

    def _checkpoint(self) -> None:
        if self.out_dir and self.rank == 0:
            atomic_save(self.state_dict(), self._path('last.pt'))

    def _save_best(self, val: Dict[str, float]) -> None:
        if self.out_dir and self.rank == 0:
            atomic_save({'format_version': FORMAT_VERSION,
                         'model': self.selector.best_state,
                         'config': self.requested_config.to_dict(),
                         'modalities': self.inputs.modalities,
                         # what its seed labels were built from
                         'train_pairs': self.best_train_pairs,
                         'label_weight': self.best_label_weight,
                         'score_weights': self.best_score_weights,
                         'epoch': self.best['epoch'], 'val': val,
                         'label_round': self.best.get('label_round', 0)},
                        self._path('best.pt'))

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict:
        """Trains (or continues), selects on validation, tests once.

        Returns the metrics dict that is also written to
        ``out_dir/metrics.json``: ``val`` (of the selected model), ``test``
        (CSLS as configured), ``test_cosine``, ``best_epoch``,
        ``epoch_time_s``, ``wall_time_s``, ``config``.
        """
        c, sched = self.config, self.schedule
        start = time.perf_counter()
        if resume and self.out_dir and os.path.isfile(self._path('last.pt')):
            self.load_state_dict(load_checkpoint(self._path('last.pt')))
            self.log(f'resumed from {self._path("last.pt")} at epoch '
                     f'{self.epoch}')
        bar = tqdm(total=self.total_epochs, initial=self.epoch,
                   disable=not c.progress or self.rank != 0, desc='train',
                   leave=False)
        while self.epoch < self.total_epochs:
            stage = sched.stage(self.epoch)
            if self.selector.stopped[stage]:  # early-stopped: skip the rest
                self.epoch = sched.stage_end(stage)
                continue
            t0 = time.perf_counter()
            row = {'epoch': self.epoch + 1, 'stage': stage,
                   **self.train_epoch()}
            row['train_pairs'] = self.train_pairs.size(1)
            row['time_s'] = time.perf_counter() - t0
            emb = None  # embeddings of this epoch's weights, made once
            if stage == 2 and self.self_training.is_round(
                    sched.stage_epoch(self.epoch)):
                emb = self.embeddings()
                row.update(self._self_training_round(emb))
            if ((self.epoch + 1) % c.eval_every == 0
                    or sched.is_last_of_stage(self.epoch)):
                row.update(self._validate(stage, emb))
            self.log(self._line(row))
            self.epoch += 1
            bar.update(1)
            self.run_log.append(row)
            if self.epoch % c.checkpoint_every == 0:
                self._checkpoint()
        bar.close()
        self._checkpoint()
        return self._finish(time.perf_counter() - start)

    def _self_training_round(self, embeddings) -> Dict[str, int]:
        src, tgt, _ = embeddings
        self.train_pairs, info = self.self_training.step(
            src, tgt, self.train_pairs,
            self.schedule.stage_epoch(self.epoch), gold=self.gold)
        if 'added' in info and LABELS in self.inputs.modalities:
            self._refresh_labels()  # LightEA: added pairs become seeds
        if 'added' in info:
            n, ok = info['added'], info['added_correct']
            self.log(f'iterative: added {n} pairs, {ok} correct '
                     f'({ok / n:.1%}; gold used for this line only); '
                     f'{self.train_pairs.size(1)} training pairs')
        return info

    def _validation_metrics(self, embeddings=None) -> Dict[str, float]:
        labels = self.config.label_weights if self.model.beside else []
        names = self.config.name_weights
        if len(labels) > 1 or len(names) > 1:
            return self._choose_score_weights(labels or [None], names,
                                              embeddings)
        return self.evaluate('val', embeddings=embeddings)

    def _validate(self, stage: int, embeddings=None) -> Dict[str, float]:
        val = self._validation_metrics(embeddings)
        if self.selector.update(self.epoch + 1, stage, val, self.model):
            self.best_train_pairs = self.train_pairs
            self.best_label_weight = self.model.beside_weight
            self.best_score_weights = self.model.score_weights
            self._save_best(val)
        elif self.selector.stopped[stage]:
            self.log(f'early stop in stage {stage} at epoch {self.epoch + 1} '
                     f'(best {self.config.select_metric} '
                     f'{self.best["score"]:.4f} at epoch '
                     f'{self.best["epoch"]})')
        return {f'val_{k}': v for k, v in val.items()}

    def _choose_score_weights(self, labels: List[Optional[float]],
                              names: List[float], embeddings=None
                              ) -> Dict[str, float]:
        """Validation metrics at each seed-label weight :math:`g` of
        :obj:`labels` (None: the model has none beside the fusion) and each
        name weight of :obj:`names`, from one run of the model
        (:meth:`RICEA.rescore`, :meth:`RICEA.reweigh`); the best by
        ``select_metric`` (the first on a tie) becomes the model's. Its
        metrics carry them as ``label_weight`` and ``name_weight``."""
        src, tgt, _ = embeddings or self.embeddings()
        pairs = self.val_pairs.to(self.device)
        if self.config.candidates == 'test' and not self.config.eval_queries:
            # Only the validation rows are ranked: rescore those alone.
            src, tgt = src[pairs[0]], tgt[pairs[1]]
            pairs = torch.arange(pairs.size(1), device=self.device).expand(
                2, -1)
        metric, best = self.config.select_metric, None
        mods = self.model.modalities
        for s in names:
            weights = name_score_weights(mods, s)
            ns, nt = (self.model.rescore(src, weights),
                      self.model.rescore(tgt, weights))
            for g in labels:
                val = self._evaluate_pairs(
                    *((ns, nt) if g is None else
                      (self.model.reweigh(ns, g), self.model.reweigh(nt, g))),
                    pairs)
                if best is None or val[metric] > best[2][metric]:
                    best = s, g, val
        s, g, val = best
        self.model.score_weights = name_score_weights(mods, s)
        extra = {'name_weight': s} if len(names) > 1 else {}
        if g is not None:
            self.model.beside_weight = g
            if len(labels) > 1:
                extra['label_weight'] = g
        return {**val, **extra}

    def _load_best(self) -> None:
        """The selected model, its :math:`g` and its seed labels."""
        self.model.load_state_dict(self.selector.best_state)
        self.model.beside_weight = self.best_label_weight
        self.model.score_weights = self.best_score_weights
        if LABELS in self.inputs.modalities:  # the inputs it was chosen on
            self._refresh_labels(self.best_train_pairs)

    def _label_rounds(self) -> List[Dict]:
        """LightEA's iteration on the selected model, without training:
        each round scores every entity with the current seed labels, and
        the mutual nearest neighbours among the entities that no training
        pair covers (:func:`unaligned_mutual_pairs`) join the training
        pairs in the seed labels, in place of the previous round's (so
        wrong pairs do not pile up). The weights stay; validation selects
        the round, the trained labels (round 0) included, and the selected
        round's pairs are what ``best.pt`` builds its labels from."""
        c = self.config
        seeds, rounds = self.best_train_pairs, []
        for r in range(1, c.label_rounds + 1):
            t0 = time.perf_counter()
            src, tgt, _ = self.embeddings()
            found, _ = unaligned_mutual_pairs(src, tgt, seeds, c.csls_k,
                                              progress=c.progress)
            pairs = torch.cat([seeds, found.to(seeds.device)], dim=1)
            self._refresh_labels(pairs)
            val = self._validation_metrics()
            ok = sum(self.gold.get(s) == t for s, t in found.t().tolist())
            rounds.append({'round': r, 'added': found.size(1),
                           'added_correct': ok, 'time_s':
                           time.perf_counter() - t0,
                           **{f'val_{k}': v for k, v in val.items()}})
            self.log(f'label round {r}: {found.size(1)} pairs in the seed '
                     f'labels beside the {seeds.size(1)} training pairs, '
                     f'{ok} correct (gold used for this line only) | val '
                     f'hits@1 {val["hits@1"]:.4f} mrr {val["mrr"]:.4f}'
                     + (f' | g {val["label_weight"]:g}'
                        if 'label_weight' in val else ''))
            if self.selector.rescore(val, label_round=r):
                self.best_train_pairs = pairs
                self.best_label_weight = self.model.beside_weight
                self.best_score_weights = self.model.score_weights
                self._save_best(val)
        # The weights never changed: only the labels, g and the name weight
        # go back, and the labels only if a later round replaced the
        # selected one's.
        self.model.beside_weight = self.best_label_weight
        self.model.score_weights = self.best_score_weights
        self._refresh_labels(self.best_train_pairs)
        return rounds

    def _line(self, row: Dict) -> str:
        s = (f"epoch {row['epoch']:4d} | stage {row['stage']} | loss "
             f"{row['loss']:.4f} | lr {row['lr']:.2e} | {row['time_s']:.2f}s")
        if 'val_mrr' in row:
            s += (f" | val hits@1 {row['val_hits@1']:.4f} mrr "
                  f"{row['val_mrr']:.4f}")
        if 'val_label_weight' in row:
            s += f" | g {row['val_label_weight']:g}"
        if 'val_name_weight' in row:
            s += f" | names x{row['val_name_weight']:g}"
        return s

    def _finish(self, fit_time: float) -> Dict:
        c = self.config
        rounds = []
        if self.selector.best_state is not None:
            self._load_best()
            if c.label_rounds and LABELS in self.inputs.modalities:
                rounds = self._label_rounds()
        emb = self.embeddings()  # once, for both scorings
        test = self.evaluate('test', embeddings=emb, one_to_one=True)
        # Large graphs: the configured score only (each costs index builds).
        test_cos = (None if c.eval_queries else
                    self.evaluate('test', csls_k=0, embeddings=emb))
        times = [r['time_s'] for r in self.history]
        metrics = {
            'val': self.best['val'], 'test': test, 'test_cosine': test_cos,
            'best_epoch': self.best['epoch'], 'epochs_run': len(times),
            'label_weight': (self.model.beside_weight if self.model.beside
                             else None),
            # the selected model's weight of the name modalities in the score
            'name_weight': next(iter(self.model.score_weights.values()),
                                1.0),
            # training-free rounds: the one selected (0: none) and each one
            'label_round': self.best.get('label_round', 0),
            'label_rounds': rounds,
            'epoch_time_s': float(np.median(times)) if times else None,
            'train_pairs': self.train_pairs.size(1),
            'fit_time_s': fit_time, 'config': c.to_dict(),
        }
        one = test.get('one_to_one_hits@1')
        how = (f"approximate search on {test['approx_queries']} sampled "
               'pairs, ' if 'approx_queries' in test else '')
        self.log(f"best epoch {self.best['epoch']}: val hits@1 "
                 f"{self.best['val'].get('hits@1', float('nan')):.4f}; test "
                 f"hits@1 {test['hits@1']:.4f} hits@10 {test['hits@10']:.4f} "
                 f"mrr {test['mrr']:.4f}"
                 + ('' if one is None else f', one-to-one hits@1 {one:.4f}')
                 + f" ({how}csls_k={c.csls_k}, candidates={c.candidates})")
        self.run_log.close()
        return metrics

    def write_metrics(self, metrics: Dict, wall_time_s: float) -> None:
        """``out_dir/metrics.json`` with the total wall time added."""
        metrics['wall_time_s'] = wall_time_s
        if self.out_dir and self.rank == 0:
            atomic_write(self._path('metrics.json'),
                         lambda f: json.dump(metrics, f, indent=2),
                         binary=False)
