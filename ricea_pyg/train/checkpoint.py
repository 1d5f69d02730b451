"""Atomic checkpoint files: a killed run never leaves a torn checkpoint."""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

__all__ = ['atomic_save', 'load_checkpoint']


def atomic_save(obj: Any, path: str) -> None:
    """:func:`torch.save` to a temporary file in the same folder, then
    rename over :obj:`path` (atomic on POSIX)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-',
                               suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint not found; train first '
                                '(ricea train ... --out DIR) and pass '
                                'DIR/best.pt or DIR/last.pt')
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # pickle/zip errors have many types
        raise ValueError(f'{path}: not a readable ricea checkpoint ({e}); '
                         'pass a file written by ricea train') from None
