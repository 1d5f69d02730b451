from ricea_pyg.io import atomic_save
from ricea_pyg.train.checkpoint import load_checkpoint
from ricea_pyg.train.config import RECIPES, ConfigError, TrainConfig
from ricea_pyg.train.iterative import (
    SelfTraining,
    persisting_pairs,
    unaligned_mutual_pairs,
)
from ricea_pyg.train.log import RunLog
from ricea_pyg.train.schedule import StagedSchedule
from ricea_pyg.train.selection import ModelSelector
from ricea_pyg.train.trainer import (
    PROPAGATED_DTYPE,
    Trainer,
    build_model,
    evaluate_embeddings,
    model_inputs,
    resolve_config,
    seed_labels,
)

__all__ = ['TrainConfig', 'ConfigError', 'RECIPES', 'Trainer', 'build_model',
           'model_inputs', 'seed_labels', 'PROPAGATED_DTYPE',
           'resolve_config',
           'StagedSchedule', 'ModelSelector', 'SelfTraining',
           'persisting_pairs', 'unaligned_mutual_pairs', 'RunLog',
           'evaluate_embeddings', 'atomic_save', 'load_checkpoint']
