"""Training configuration: one dataclass, loadable from JSON/TOML files."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

__all__ = ['TrainConfig', 'ConfigError', 'SAMPLED_FROM', 'NARROW_FROM',
           'PROPAGATED_BY_DEFAULT', 'LABELS', 'LABEL_CHANNELS',
           'FUSED_WIDTH_CAP', 'RECIPES', 'NAME_MODALITIES', 'NAME_WEIGHTS']

#: Entities per KG from which training samples neighbourhoods by default.
SAMPLED_FROM = 100_000
#: Entities per KG from which the default width narrows.
NARROW_FROM = 300_000
#: Modalities whose features are propagated over the graph by default.
PROPAGATED_BY_DEFAULT = ('name', 'char')
#: The modality that seed-label propagation adds (not a data modality).
LABELS = 'labels'
#: Width of the random seed labels (LightEA's ``ent_dim``) when
#: ``label_channels`` is None.
LABEL_CHANNELS = 1024
#: The modalities built from entity names, whose weight in the score
#: ``TrainConfig.name_weight`` sets.
NAME_MODALITIES = ('name', 'char')
#: ``TrainConfig.name_weight``'s default choices.
NAME_WEIGHTS = (1.0, 0.5, 0.25, 0.1)
#: Widest fused embedding (modalities x channels) from NARROW_FROM on.
FUSED_WIDTH_CAP = 384

#: Named configurations (:meth:`TrainConfig.recipe`, ``ricea train --recipe``):
#: fields that replace the defaults, each the best measured for its inputs in
#: ``docs/results.md``.
RECIPES: Dict[str, Dict[str, Any]] = {
    # Without names: Dual-AMN's encoder, loss and optimiser settings inside
    # the model; LightEA's seed labels beside the fusion, their weight
    # chosen on validation; then label rounds. About 15 minutes on DBP15K
    # on 2 cores.
    'structure-only': dict(
        modalities=['graph', 'rel'], structure_encoder='relational',
        joint_loss='dual_amn', lr=0.005, batch_size=1024, dropout=0.3,
        label_mode='beside', label_weight=[0.25, 0.4, 0.5, 0.6, 0.75],
        label_rounds=2, epochs=10, eval_every=1),
}


def _choices(value) -> list:
    """A setting that is one value or a list to choose from, as a list."""
    return list(value) if isinstance(value, list) else [value]


def resume_conflicts(saved: Dict[str, Any], now: Dict[str, Any]) -> str:
    """The settings of :obj:`now` that a checkpoint's :obj:`saved` config
    does not share, as ``key: checkpoint X, now Y``, for a refusal to
    resume."""
    return '; '.join(f'{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}'
                     for k in sorted(now) if saved.get(k) != now[k])


class ConfigError(ValueError):
    """A bad configuration file or value (the CLI exits with code 2)."""


@dataclass
class TrainConfig:
    r"""Everything a training run depends on (saved with each checkpoint).

    Defaults follow MEAformer's training protocol except the length,
    which is sized for a CPU run (``docs/pipeline.md``), and the settings
    left at None, which :meth:`resolve` chooses from the graph's size
    (``docs/scale.md``).
    """
    # model
    modalities: Optional[List[str]] = None  # None = all in the data
    channels: Optional[int] = None  # None: 300, narrower on large graphs
    # The best measured on DBP15K: never behind 'adc', 'meaformer' or
    # 'global' at their defaults in docs/results.md and
    # docs/robustness.md. 'adc' is RICEA's.
    fusion: str = 'concat'
    fusion_kwargs: Dict[str, Any] = field(default_factory=dict)
    gat_layers: int = 2
    gat_heads: int = 2
    gat_diag: bool = True
    dropout: float = 0.0
    structure_encoder: str = 'gat'  # or 'relational' (Dual-AMN)
    # Recompute the fusion's activations in backward (RICEA's
    # checkpoint_fusion): about 0.4 GiB less at B = 3500, ~10 % more time.
    checkpoint_fusion: bool = True
    # SEU's propagation of these modalities' features over the triples
    # before training (nn.FeaturePropagation); None: the text modalities
    # present ('name', 'char') below SAMPLED_FROM entities per KG, none
    # from there on.
    propagate: Optional[List[str]] = None
    propagation_hops: int = 2
    # A propagated modality's missing rows take their neighbours' features
    # (hops >= 1) and count as present: Feature Propagation's imputation
    # (Rossi et al., 2022). False keeps them masked.
    impute_missing: bool = True
    # LightEA's seed-label propagation (nn.SeedLabelPropagation) as one more
    # modality, 'labels' (8192 wide), from random labels of this width;
    # 0 = off. None: on (1024)
    # for a structure-only model ('graph' and no 'name') below SAMPLED_FROM
    # entities per KG, else off. With names they are an opt-in that pays
    # where names are scarce or wrong, for about 1 GiB more peak memory
    # and 1.5 times the time on DBP15K (docs/benchmarks.md).
    label_channels: Optional[int] = None
    # 'fused': the labels are one more fused modality (a learnt map to d);
    # 'beside': scored beside the fusion, [sqrt(1 - g) h ; sqrt(g) l]
    # (RICEA's beside), with g = label_weight. A list of values: g is
    # chosen on validation at every evaluation (the fused part alone is
    # trained, so g changes the score, not the model), kept with the
    # selected model.
    label_mode: str = 'fused'
    label_weight: Union[float, List[float]] = 0.5
    # LightEA's iteration, without training: after training, each round
    # puts the selected model's mutual nearest neighbours among the
    # entities that no training pair covers into the seed labels (never into
    # the training pairs), in place of the previous round's; validation
    # selects the round (the trained labels, round 0, included). Needs the
    # seed labels (label_channels > 0).
    label_rounds: int = 0
    # The weight of the name modalities' cosines (NAME_MODALITIES) in the
    # score, RICEA.score_weights; the model is trained without it. A list:
    # chosen on validation at every evaluation (with label_weight) and kept
    # with the selected model, so that the score leans away from names
    # that are scarce, noisy or wrong (docs/robustness.md). Needs a fusion
    # whose output is the modality blocks side by side (not mode='sum').
    # The default list becomes 1 from SAMPLED_FROM entities per KG on
    # (each choice costs a validation search) and where nothing can be
    # weighed.
    name_weight: Union[float, List[float]] = field(
        default_factory=lambda: list(NAME_WEIGHTS))
    # loss
    tau: float = 0.1
    alpha: float = 0.5
    lambda_tcp: float = 1.0
    uncertainty_weighting: bool = True
    # Teaches ADC's attention-read uncertainty to predict a modality's
    # failure (loss.uncertainty_loss); not in the method.
    lambda_uncertainty: float = 0.0
    # The alignment loss on the fused embedding: 'icl' (in-batch negatives,
    # the method's) or 'dual_amn' (loss.dual_amn_loss, every entity of
    # both KGs a negative; full-graph training only).
    joint_loss: str = 'icl'
    # Dual-AMN's loss on the graph embedding, every entity of both KGs a
    # negative.
    hard_negative_weight: float = 0.0
    # Sampled training: negatives per query from an exact index over the
    # graph embeddings cached each epoch.
    hard_negative_k: int = 16
    # optimisation
    epochs: int = 100
    batch_size: Optional[int] = None  # None: 3500 (MEAformer), sampled 1024
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: float = 0.15
    clip: float = 1.0
    seed: int = 0
    # selection and evaluation
    eval_every: int = 5
    patience: int = 0  # evaluations without improvement; 0 = never stop
    select_metric: str = 'mrr'
    csls_k: int = 3
    candidates: str = 'test'  # 'test' (standard protocol) or 'all'
    # iterative mode (MEAformer's protocol)
    iterative: bool = False
    # MEAformer: MNN every 5 epochs, add every 50, over hundreds of epochs;
    # scaled here to the short CPU schedule.
    iter_epochs: int = 10  # second stage length
    iter_every: int = 2
    iter_add_every: int = 4  # a multiple of iter_every
    iter_persist: int = 2  # consecutive rounds a pair must be found in
    iter_min_margin: float = 0.0  # least best-minus-second-best score
    iter_lr_factor: float = 0.2
    iter_threshold: Optional[float] = None
    # scale (docs/scale.md); None = chosen from the graph's size by
    # resolve(), which the trainer applies
    sampled: Optional[bool] = None  # mini-batches over sampled neighbourhoods
    fanouts: List[int] = field(default_factory=lambda: [10, 5])  # per layer
    eval_queries: Optional[int] = None  # 0 = every pair, exact
    # output
    checkpoint_every: int = 10
    progress: bool = True

    def resolve(self, num_source: int, num_target: int,
                num_modalities: int) -> TrainConfig:
        """A copy with the size-dependent settings left at None made
        concrete for a pair of :obj:`num_source` and :obj:`num_target`
        entities and :obj:`num_modalities` modalities:

        * ``sampled``: mini-batch training over sampled neighbourhoods from
          :data:`SAMPLED_FROM` entities per KG (the larger KG); below it a
          full-graph step is faster.
        * ``channels``: 300; from :data:`NARROW_FROM` entities per KG, the
          width that keeps the fused embedding at most
          :data:`FUSED_WIDTH_CAP` (64 for 6 modalities). With the
          relational encoder, Dual-AMN's 128 channels per block (768 with
          two layers; every modality is then projected to 768) or, from
          :data:`NARROW_FROM`, that width rounded down to a multiple of
          its blocks.
        * ``batch_size``: MEAformer's 3,500 pairs; 1,024 when ``sampled``.
          The in-batch loss costs :math:`O(B)` per pair, most of a sampled
          step, while the sampled neighbourhoods cost little per step.
        * ``eval_queries``: 10,000 sampled queries with approximate search
          from :data:`SAMPLED_FROM` entities per KG, else 0 (every pair,
          exact ranks).
        * ``propagate``: :data:`PROPAGATED_BY_DEFAULT` below
          :data:`SAMPLED_FROM` entities per KG (those the data has; the
          trainer skips the others), else none: propagation multiplies
          the features' memory by ``propagation_hops + 1``.
        """
        n = max(num_source, num_target)
        values = self.to_dict()
        if values['sampled'] is None:
            values['sampled'] = n >= SAMPLED_FROM
        if values['channels'] is None:
            values['channels'] = (300 if n < NARROW_FROM else max(
                16, FUSED_WIDTH_CAP // max(num_modalities, 1)))
            if values['structure_encoder'] == 'relational':
                # Dual-AMN's 128 per block below NARROW_FROM; a multiple of
                # the blocks above it.
                from ricea_pyg.models.ricea import relational_blocks
                blocks = relational_blocks(values['gat_layers'])
                values['channels'] = blocks * (
                    128 if n < NARROW_FROM else
                    max(1, values['channels'] // blocks))
        if values['batch_size'] is None:
            values['batch_size'] = 1024 if values['sampled'] else 3500
        if values['eval_queries'] is None:
            values['eval_queries'] = 10_000 if n >= SAMPLED_FROM else 0
        if values['propagate'] is None:
            values['propagate'] = [] if n >= SAMPLED_FROM else list(
                PROPAGATED_BY_DEFAULT)
        return TrainConfig.from_dict(values)

    def __post_init__(self):
        if isinstance(self.fanouts, tuple):  # compares equal to a list
            self.fanouts = list(self.fanouts)
        if isinstance(self.propagate, tuple):
            self.propagate = list(self.propagate)
        if isinstance(self.label_weight, tuple):
            self.label_weight = list(self.label_weight)
        if isinstance(self.name_weight, tuple):
            self.name_weight = list(self.name_weight)
        self.validate()

    @property
    def label_weights(self) -> List[float]:
        """The values of g that :attr:`label_weight` names (the first
        until validation has chosen one)."""
        return _choices(self.label_weight)

    @property
    def name_weights(self) -> List[float]:
        """The values that :attr:`name_weight` names (the first until
        validation has chosen one)."""
        return _choices(self.name_weight)

    def validate(self) -> None:
        positive = ['epochs', 'eval_every',
                    'iter_every', 'iter_add_every', 'iter_persist',
                    'checkpoint_every', 'hard_negative_k',
                    'gat_layers', 'gat_heads']
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f'{name} must be at least 1 (got '
                                  f'{getattr(self, name)!r})')
        for name in ('channels', 'batch_size', 'eval_queries'):
            value = getattr(self, name)
            low = 0 if name == 'eval_queries' else 1
            if value is not None and (isinstance(value, bool) or not
                                      isinstance(value, int) or value < low):
                raise ConfigError(f'{name} must be an integer at least '
                                  f'{low} (got {value!r}), or unset for the '
                                  'size-based default')
        if self.sampled not in (None, True, False):
            raise ConfigError(f'sampled must be true, false or unset (got '
                              f'{self.sampled!r})')
        fanouts = self.fanouts
        if (not isinstance(fanouts, (list, tuple)) or not fanouts or any(
                isinstance(f, bool) or not isinstance(f, int) or f < 1
                for f in fanouts)):
            raise ConfigError(f'fanouts must be a non-empty list of positive '
                              f'integers, one per GAT layer (got '
                              f'{fanouts!r}), e.g. [10, 5]')
        self._check_ranges()
        self._check_modalities()
        self._check_fusion_kwargs()
        if not 0 <= self.warmup < 1:
            raise ConfigError(f'warmup is a fraction in [0, 1) (got '
                              f'{self.warmup!r})')
        if self.candidates not in ('test', 'all'):
            raise ConfigError(f"candidates must be 'test' or 'all' (got "
                              f'{self.candidates!r})')
        if self.select_metric not in ('mrr', 'hits@1', 'hits@10'):
            raise ConfigError(f"select_metric must be 'mrr', 'hits@1' or "
                              f"'hits@10' (got {self.select_metric!r})")
        if self.structure_encoder not in ('gat', 'relational'):
            raise ConfigError(f"structure_encoder must be 'gat' or "
                              f"'relational' (got {self.structure_encoder!r})")
        if self.joint_loss not in ('icl', 'dual_amn'):
            raise ConfigError(f"joint_loss must be 'icl' or 'dual_amn' (got "
                              f'{self.joint_loss!r})')
        if self.structure_encoder == 'relational' and \
                self.channels is not None and (
                    self.modalities is None or 'graph' in self.modalities):
            from ricea_pyg.models.ricea import relational_blocks
            blocks = relational_blocks(self.gat_layers)
            if self.channels % blocks:
                raise ConfigError(
                    f"structure_encoder='relational' splits channels into "
                    f'{blocks} blocks (2 views x gat_layers + 1 layers): '
                    f'channels={self.channels} is not a multiple of '
                    f'{blocks}; set it to e.g. {128 * blocks}, or unset')
        if self.hard_negative_weight < 0:
            raise ConfigError(f'hard_negative_weight must be >= 0 (got '
                              f'{self.hard_negative_weight!r})')
        if (self.hard_negative_weight > 0 and self.modalities is not None
                and 'graph' not in self.modalities):
            raise ConfigError('hard_negative_weight acts on the graph '
                              "embedding: add 'graph' to modalities or set "
                              'it to 0')
        if self.iter_add_every % self.iter_every:
            raise ConfigError(
                f'iter_add_every ({self.iter_add_every}) must be a multiple '
                f'of iter_every ({self.iter_every}): pairs are added only '
                'on a self-training round')
        if self.propagate is not None and (
                not isinstance(self.propagate, (list, tuple))
                or not all(isinstance(m, str) for m in self.propagate)):
            raise ConfigError(f"propagate must be a list of modality names "
                              f"(got {self.propagate!r}), e.g. ['name', "
                              f"'char'], or [] for none")
        if isinstance(self.propagation_hops, bool) or not isinstance(
                self.propagation_hops, int) or self.propagation_hops < 1:
            raise ConfigError(f'propagation_hops must be an int >= 1 (got '
                              f'{self.propagation_hops!r}); set propagate '
                              'to [] to switch propagation off')
        if self.label_mode not in ('fused', 'beside'):
            raise ConfigError(f"label_mode must be 'fused' or 'beside' (got "
                              f'{self.label_mode!r})')
        weights = self.label_weights
        if not weights or any(isinstance(g, bool) or not isinstance(
                g, (int, float)) or not 0 < g < 1 for g in weights):
            raise ConfigError(f'label_weight must be a number in (0, 1) or a '
                              f'non-empty list of them to choose from on '
                              f'validation (got {self.label_weight!r}): the '
                              f'share of the score that the seed labels carry')
        weights = self.name_weights
        if not weights or any(isinstance(s, bool) or not isinstance(
                s, (int, float)) or not math.isfinite(s) or s <= 0
                for s in weights):
            raise ConfigError(f'name_weight must be a number > 0 or a '
                              f'non-empty list of them to choose from on '
                              f'validation (got {self.name_weight!r}): how '
                              f'much the name modalities count in the score; '
                              f'1 leaves the score as trained')
        if self.label_channels is not None and (
                isinstance(self.label_channels, bool)
                or not isinstance(self.label_channels, int)
                or self.label_channels < 0):
            raise ConfigError(f'label_channels must be an int >= 0 (got '
                              f'{self.label_channels!r}); 0 switches seed-'
                              'label propagation off')
        if isinstance(self.label_rounds, bool) or not isinstance(
                self.label_rounds, int) or self.label_rounds < 0:
            raise ConfigError(f'label_rounds must be an int >= 0 (got '
                              f'{self.label_rounds!r}); 0 keeps the trained '
                              'seed labels')
        if self.patience < 0 or self.csls_k < 0:
            raise ConfigError('patience and csls_k must be >= 0')

    def _check_ranges(self) -> None:
        # (name, lowest, lowest allowed, highest, highest allowed, fix)
        ranges = [('tau', 0, False, None, False, 'a positive temperature'),
                  ('lr', 0, False, None, False, 'a positive learning rate'),
                  ('alpha', 0, True, 1, True, 'a weight in [0, 1]'),
                  ('clip', 0, True, None, False, '>= 0 (0 = no clipping)'),
                  ('weight_decay', 0, True, None, False, '>= 0'),
                  ('dropout', 0, True, 1, False, 'a probability in [0, 1)'),
                  ('lambda_tcp', 0, True, None, False, '>= 0'),
                  ('lambda_uncertainty', 0, True, None, False, '>= 0')]
        for name, low, low_ok, high, high_ok, fix in ranges:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f'{name} must be a number (got {value!r});'
                                  f' set it to {fix}')
            bad = (value < low if low_ok else value <= low) or (
                high is not None and (value > high if high_ok
                                      else value >= high))
            if bad or value != value:  # NaN too
                raise ConfigError(f'{name}={value!r} is out of range; set it '
                                  f'to {fix}')

    def _check_modalities(self) -> None:
        if self.modalities is None:
            return
        from ricea_pyg.data.schema import MODALITIES
        mods = self.modalities
        if isinstance(mods, str) or not isinstance(mods, (list, tuple)):
            raise ConfigError(f'modalities must be a list of names (got '
                              f'{mods!r}); choose from {list(MODALITIES)}')
        if not mods:
            raise ConfigError(f'modalities is empty (got {mods!r}); name at '
                              f'least one of {list(MODALITIES)}, or leave it '
                              'unset for all in the data')
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown:
            raise ConfigError(f'modalities has unknown name(s) {unknown} (got'
                              f' {list(mods)}); choose from '
                              f'{list(MODALITIES)}')
        repeated = sorted({m for m in mods if list(mods).count(m) > 1})
        if repeated:
            raise ConfigError(f'modalities repeats {repeated} (got '
                              f'{list(mods)}); name each modality once')

    def _check_fusion_kwargs(self) -> None:
        kwargs = self.fusion_kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(f'fusion_kwargs must be an object of keyword '
                              f'arguments (got {kwargs!r}), e.g. '
                              '{"mode": "sum"}')
        if not isinstance(self.fusion, str):
            return
        from ricea_pyg.nn.fusion import (
            fusion_classes,
            fusion_classes_named,
            fusion_name,
        )
        found = fusion_classes_named(self.fusion)
        if not found:
            choices = sorted({fusion_name(c) for c in fusion_classes()})
            raise ConfigError(f'fusion={self.fusion!r} is not a known '
                              f'fusion; choose one of {choices}')
        if len(found) > 1 or not kwargs:
            return  # ambiguity is reported when the model is built
        params = inspect.signature(found[0].__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        # num_modalities and channels are set by the model.
        valid = [k for k, p in params.items()
                 if k not in ('self', 'num_modalities', 'channels')
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in kwargs:
            if key not in valid:
                raise ConfigError(
                    f'fusion_kwargs key {key!r} (value {kwargs[key]!r}) is '
                    f'not an argument of fusion {self.fusion!r} '
                    f'({found[0].__name__}); valid keys: {valid}')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = 'config'
                  ) -> TrainConfig:
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            hints = [f'{k!r} (did you mean {close[0]!r}?)' if close else
                     repr(k) for k in unknown
                     for close in [difflib.get_close_matches(k, cls.keys(),
                                                             n=1)]]
            raise ConfigError(f'{source}: unknown key(s) {", ".join(hints)};'
                              f' valid keys: {cls.keys()}')
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f'{source}: {e}') from None

    @classmethod
    def recipe(cls, name: str, **overrides) -> TrainConfig:
        """The named configuration of :data:`RECIPES`;
        :obj:`overrides` win."""
        if name not in RECIPES:
            raise ConfigError(f'unknown recipe {name!r}; known: '
                              f'{sorted(RECIPES)}')
        return cls.from_dict({**copy.deepcopy(RECIPES[name]), **overrides},
                             source=f'recipe {name!r}')

    @classmethod
    def from_checkpoint(cls, values: Dict[str, Any], source: str = 'checkpoint'
                        ) -> TrainConfig:
        """A checkpoint's saved config; one saved before input
        propagation existed trained without it, one saved before
        imputation existed kept missing rows masked, and one saved before
        the name weight existed scored names at 1."""
        values = {'propagate': [], 'label_channels': 0,
                  'impute_missing': False, 'name_weight': 1.0, **values}
        return cls.from_dict(values, source=source)

    @classmethod
    def from_file(cls, path: str, **overrides) -> TrainConfig:
        """JSON (``.json``) or TOML (``.toml``); :obj:`overrides` win."""
        if not os.path.isfile(path):
            raise ConfigError(f'{path}: config file not found')
        try:
            if path.endswith('.toml'):
                import tomllib
                with open(path, 'rb') as f:
                    values = tomllib.load(f)
            else:
                with open(path, encoding='utf-8') as f:
                    values = json.load(f)
        except (ValueError, OSError) as e:
            line = getattr(e, 'lineno', None)
            where = f'{path}:{line}' if line else path
            raise ConfigError(f'{where}: cannot parse config ({e}); fix the '
                              'syntax (JSON object or TOML table)') from None
        if not isinstance(values, dict):
            raise ConfigError(f'{path}: the config must be an object of '
                              'key/value pairs')
        values.update(overrides)
        return cls.from_dict(values, source=path)
