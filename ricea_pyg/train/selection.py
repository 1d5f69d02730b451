"""Model selection on validation, with early stopping per stage."""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, Optional

import torch

__all__ = ['ModelSelector']


class ModelSelector:
    r"""Keeps the model state with the best validation score, and says when
    a stage should stop early.

    Args:
        metric (str): The validation metric to maximise, e.g. ``'mrr'``.
            (default: ``'mrr'``)
        patience (int): Evaluations without improvement after which the
            current stage stops; 0 = never. (default: :obj:`0`)
    """

    def __init__(self, metric: str = 'mrr', patience: int = 0):
        self.metric, self.patience = metric, patience
        self.best: Dict[str, Any] = {'score': -math.inf, 'epoch': -1,
                                     'val': {}}
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.evals_since_best = 0
        self.stage = 1
        self.stopped: Dict[int, bool] = {1: False, 2: False}

    def update(self, epoch: int, stage: int, val: Dict[str, float],
               model: torch.nn.Module) -> bool:
        """Records the validation metrics :obj:`val` of :obj:`model` after
        the 1-based :obj:`epoch`; returns whether it is the new best (then
        its state is kept). Marks :obj:`stage` stopped once patience runs
        out."""
        if stage != self.stage:  # patience counts within a stage
            self.stage, self.evals_since_best = stage, 0
        score = val[self.metric]
        if score > self.best['score']:
            self.best = {'score': score, 'epoch': epoch, 'val': dict(val)}
            self.best_state = copy.deepcopy(model.state_dict())
            self.evals_since_best = 0
            return True
        self.evals_since_best += 1
        if self.patience and self.evals_since_best >= self.patience:
            self.stopped[stage] = True
        return False

    def rescore(self, val: Dict[str, float], **extra: Any) -> bool:
        """Validation metrics :obj:`val` of the kept state under other
        inputs (the weights are the same: e.g. new seed labels); they become
        the best, with :obj:`extra` recorded beside them, if they beat it.
        Returns whether they did."""
        if val[self.metric] <= self.best['score']:
            return False
        self.best = {**self.best, 'score': val[self.metric],
                     'val': dict(val), **extra}
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {'best': self.best, 'best_state': self.best_state,
                'evals_since_best': self.evals_since_best,
                'stage': self.stage,
                'stopped': {str(k): v for k, v in self.stopped.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.best_state = state['best'], state['best_state']
        self.evals_since_best = state['evals_since_best']
        self.stage = state['stage']
        self.stopped = {int(k): v for k, v in state['stopped'].items()}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(metric={self.metric!r}, '
                f'patience={self.patience})')
