from ricea_pyg.train.checkpoint import atomic_save, load_checkpoint
from ricea_pyg.train.config import ConfigError, TrainConfig
from ricea_pyg.train.trainer import Trainer, build_model, evaluate_embeddings

__all__ = ['TrainConfig', 'ConfigError', 'Trainer', 'build_model',
           'evaluate_embeddings', 'atomic_save', 'load_checkpoint']
