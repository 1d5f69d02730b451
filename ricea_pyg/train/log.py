"""The per-epoch log of a run: ``log.csv`` and TensorBoard events."""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Optional

from ricea_pyg.io import atomic_write

__all__ = ['RunLog']


class RunLog:
    r"""Rows of per-epoch values, rewritten atomically to
    ``out_dir/log.csv`` after each row, and sent to TensorBoard when it is
    installed.

    Args:
        out_dir (str, optional): Output folder; None keeps rows in memory
            only.
    """

    def __init__(self, out_dir: Optional[str] = None):
        self.out_dir = out_dir
        self.rows: List[Dict[str, Any]] = []
        self._tb: Any = None

    def append(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        if not self.out_dir:
            return
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]

        def write(f):
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        atomic_write(os.path.join(self.out_dir, 'log.csv'), write,
                     binary=False)
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(os.path.join(self.out_dir,
                                                      'tensorboard'))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != 'epoch':
                    self._tb.add_scalar(k, v, row['epoch'])

    def close(self) -> None:
        if self._tb:
            self._tb.close()

    def state_dict(self) -> Dict[str, Any]:
        return {'rows': self.rows}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rows = list(state['rows'])

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self.rows)} rows)'
