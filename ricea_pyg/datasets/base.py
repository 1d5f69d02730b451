"""Shared machinery of the on-disk datasets: cache location and keys."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

from torch_geometric.data import InMemoryDataset

from ricea_pyg.io import atomic_save

__all__ = ['PairDataset', 'default_cache_root']


def default_cache_root() -> str:
    return os.environ.get('RICEA_CACHE', os.path.join(
        os.path.expanduser('~'), '.cache', 'ricea_pyg'))


class PairDataset(InMemoryDataset):
    r"""An :class:`InMemoryDataset` over a read-only raw folder.

    Raw files are read where they lie (:obj:`root`, which may be read-only
    and is never written to except by a download); processed tensors go to
    :obj:`processed_dir`, by default a folder per root under ``$RICEA_CACHE``
    (or ``~/.cache/ricea_pyg``). The processed file name hashes every
    option, so changing one re-processes while name embeddings stay cached
    separately (the encoder never runs twice on the same names).
    """

    def __init__(self, root: str, options: Dict[str, Any],
                 processed_dir: Optional[str] = None, transform=None,
                 pre_transform=None, force_reload: bool = False,
                 log: bool = True):
        self.options = options
        root = os.path.abspath(os.path.expanduser(root))
        if processed_dir is None:
            tag = hashlib.sha256(root.encode()).hexdigest()[:12]
            processed_dir = os.path.join(default_cache_root(), 'processed',
                                         f'{os.path.basename(root)}-{tag}')
        self._processed_dir = processed_dir
        super().__init__(root, transform, pre_transform,
                         force_reload=force_reload, log=log)
        self.load(self.processed_paths[0])

    @property
    def raw_dir(self) -> str:
        return self.root

    @property
    def processed_dir(self) -> str:
        return self._processed_dir

    @property
    def text_cache_dir(self) -> str:
        return os.path.join(self._processed_dir, 'text')

    def options_key(self) -> str:
        blob = json.dumps(self.options, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _save(self, data) -> None:
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        # InMemoryDataset.save's layout, written atomically: a crash or a
        # second process never leaves a torn cache file.
        collated, slices = self.collate([data])
        atomic_save((collated.to_dict(), slices, collated.__class__),
                    self.processed_paths[0])
