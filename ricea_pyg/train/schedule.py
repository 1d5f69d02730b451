"""Training stages and the learning-rate schedule."""
from __future__ import annotations

import math

__all__ = ['StagedSchedule']


class StagedSchedule:
    r"""One or two training stages, each with a cosine learning rate after a
    linear warm-up.

    Stage 1 runs :obj:`epochs` epochs at :obj:`lr`; in iterative mode,
    stage 2 runs :obj:`iter_epochs` more at :obj:`lr` times
    :obj:`iter_lr_factor` and warms up again.

    Args:
        epochs (int): Length of stage 1.
        lr (float): Peak learning rate of stage 1.
        warmup (float): Fraction of each stage spent warming up.
            (default: :obj:`0.15`)
        iter_epochs (int): Length of stage 2; 0 = no stage 2.
            (default: :obj:`0`)
        iter_lr_factor (float): Stage 2's peak learning rate relative to
            :obj:`lr`. (default: :obj:`0.2`)
    """

    def __init__(self, epochs: int, lr: float, warmup: float = 0.15,
                 iter_epochs: int = 0, iter_lr_factor: float = 0.2):
        self.epochs, self.lr, self.warmup = epochs, lr, warmup
        self.iter_epochs, self.iter_lr_factor = iter_epochs, iter_lr_factor

    @classmethod
    def from_config(cls, config) -> StagedSchedule:
        return cls(config.epochs, config.lr, config.warmup,
                   config.iter_epochs if config.iterative else 0,
                   config.iter_lr_factor)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.iter_epochs

    def stage(self, epoch: int) -> int:
        """1 or 2, for a 0-based epoch."""
        return 1 if epoch < self.epochs else 2

    def stage_epoch(self, epoch: int) -> int:
        """The 0-based epoch within its stage."""
        return epoch if epoch < self.epochs else epoch - self.epochs

    def stage_end(self, stage: int) -> int:
        """The epoch count at which :obj:`stage` is over."""
        return self.epochs if stage == 1 else self.total_epochs

    def is_last_of_stage(self, epoch: int) -> bool:
        return epoch + 1 == self.stage_end(self.stage(epoch))

    def lr_at(self, epoch: int, fraction: float = 0.0) -> float:
        """The learning rate at :obj:`fraction` of the way through
        :obj:`epoch`."""
        if self.stage(epoch) == 1:
            length, base = self.epochs, self.lr
        else:
            length, base = self.iter_epochs, self.lr * self.iter_lr_factor
        t = (self.stage_epoch(epoch) + fraction) / length
        if self.warmup > 0 and t < self.warmup:
            return base * t / self.warmup
        progress = (t - self.warmup) / max(1e-12, 1 - self.warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(epochs={self.epochs}, '
                f'iter_epochs={self.iter_epochs}, lr={self.lr})')
