"""Shared machinery of the on-disk datasets: cache location, keys and the
safe processed-file format."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import pickletools
import re
import time
import warnings
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch_geometric.data import Data, HeteroData, InMemoryDataset

from ricea_pyg.datasets.download import sha256_file
from ricea_pyg.io import atomic_save

__all__ = ['PairDataset', 'default_cache_root', 'check_pair_name',
           'UnsafeCacheError', 'PROCESSED_FORMAT', 'digest_memo',
           'file_digest']

#: Tag and version of the processed-file layout; a file without them is
#: stale and rebuilt.
PROCESSED_FORMAT = ('ricea-processed', 1)

#: The data classes a processed file may name (by string, never pickled).
_DATA_CLASSES = {'HeteroData': HeteroData, 'Data': Data}

#: A ``.tmp-*`` file in a processed folder is a write that was killed (a
#: finished write renames it) once it is older than this process and than
#: this many seconds; it is then removed.
STALE_TEMP_S = 3600.0
_PROCESS_START = time.time()

_PAIR_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*\Z')


class UnsafeCacheError(RuntimeError):
    """A cache file holds something other than tensors and plain data (it
    would run code if unpickled): refused, never loaded."""


def default_cache_root() -> str:
    return os.environ.get('RICEA_CACHE', os.path.join(
        os.path.expanduser('~'), '.cache', 'ricea_pyg'))


def check_pair_name(pair: str) -> str:
    """Returns :obj:`pair` if it is a plain name (letters, digits, ``_``,
    ``-``, ``.``, starting with a letter or digit), so that no path built
    from it leaves its folder; raises :class:`ValueError` otherwise."""
    if not isinstance(pair, str) or not _PAIR_NAME.match(pair) or \
            '..' in pair:
        raise ValueError(f'invalid pair name {pair!r}: use letters, digits, '
                         "'_', '-' and '.' only (e.g. 'zh_en'); a pair name "
                         'must not hold a path')
    return pair


_DIGEST_MEMO: Optional[Dict[tuple, str]] = None


@contextlib.contextmanager
def digest_memo() -> Iterator[None]:
    """Within this context each file is hashed once (:func:`file_digest`),
    however many datasets and checks ask for it: a command that checks a
    checkpoint's files and then loads them reads each file once. A file is
    known by its real path, size, mtime, inode and ctime, so one that
    changes is hashed again."""
    global _DIGEST_MEMO
    outer = _DIGEST_MEMO
    if outer is None:
        _DIGEST_MEMO = {}
    try:
        yield
    finally:
        if outer is None:
            _DIGEST_MEMO = None


def file_digest(path: str, st: Optional[os.stat_result] = None
                ) -> Optional[str]:
    """SHA-256 of :obj:`path`, or None if it is not a file (memoised inside
    :func:`digest_memo`)."""
    try:
        st = os.stat(path) if st is None else st
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino,
           st.st_ctime_ns)
    memo = _DIGEST_MEMO
    if memo is not None and key in memo:
        return memo[key]
    digest = sha256_file(path)
    if memo is not None:
        memo[key] = digest
    return digest


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _strip_address(text: str) -> str:
    return re.sub(r' at 0x[0-9a-fA-F]+', '', text)


_CODE_OPS = {'GLOBAL', 'STACK_GLOBAL', 'INST', 'OBJ'}


def _imports_code(path: str, error: str) -> bool:
    """Whether a file that ``weights_only`` refused names a callable (as a
    crafted pickle does) rather than being merely corrupt. Nothing in it is
    executed: torch's message is read for a zip file (whose tensors
    legitimately import torch's own rebuild functions), the opcodes are
    listed for a bare pickle."""
    if zipfile.is_zipfile(path):
        return 'global' in error.lower()
    try:
        with open(path, 'rb') as f:
            for op, _, _ in pickletools.genops(f):
                if op.name in _CODE_OPS:
                    return True
    except Exception:  # not a pickle past this point: corrupt
        pass
    return False


class PairDataset(InMemoryDataset):
    r"""An :class:`InMemoryDataset` over a read-only raw folder.

    Raw files are read where they lie (:obj:`root`, which may be read-only
    and is never written to except by a download); processed tensors go to
    :obj:`processed_dir`, by default a folder per root under ``$RICEA_CACHE``
    (or ``~/.cache/ricea_pyg``). The processed file name hashes every
    option and every input file (:meth:`input_files`: size, mtime and
    SHA-256 of the bytes), so changing an option or editing an input
    re-processes, while name embeddings stay cached separately (the encoder
    never runs twice on the same names).

    Processed files hold tensors and plain data only and are loaded with
    ``torch.load(..., weights_only=True)``: a file holding anything else is
    refused (:class:`UnsafeCacheError`) and never unpickled; a corrupt or
    partial one is reported with a warning and rebuilt. They are written to
    a ``.tmp-*`` name and renamed: a killed write leaves the previous file
    or none, and its temporary file is removed by a later load once stale.

    :meth:`input_digests` gives the SHA-256 of each input file (a run
    records them, so that moved data is recognised by content).

    Subclasses list the files they always read in :attr:`raw_file_names`
    and those they read when present in :attr:`extra_raw_file_names`
    (both relative to :obj:`root`); option values that name existing files
    (e.g. ``image_features``) are hashed too. An option ``pair`` must be a
    plain name (:func:`check_pair_name`).
    """

    def __init__(self, root: str, options: Dict[str, Any],
                 processed_dir: Optional[str] = None, transform=None,
                 pre_transform=None, force_reload: bool = False,
                 log: bool = True):
        if 'pair' in options:
            check_pair_name(options['pair'])
        self.options = options
        self._inputs_memo: Optional[Tuple[tuple, Dict[str, Any]]] = None
        root = os.path.abspath(os.path.expanduser(root))
        if processed_dir is None:
            tag = hashlib.sha256(root.encode()).hexdigest()[:12]
            processed_dir = os.path.join(default_cache_root(), 'processed',
                                         f'{os.path.basename(root)}-{tag}')
        self._processed_dir = processed_dir
        super().__init__(root, transform, pre_transform,
                         force_reload=force_reload, log=log)
        self._load_or_rebuild()

    @property
    def raw_dir(self) -> str:
        return self.root

    @property
    def processed_dir(self) -> str:
        return self._processed_dir

    @property
    def text_cache_dir(self) -> str:
        return os.path.join(self._processed_dir, 'text')

    #: Options whose value names an input file (hashed like a raw file).
    #: Only these: a plain option such as ``names='translated'`` must not be
    #: hashed because a file of that name lies in the working directory.
    file_options: Tuple[str, ...] = ('image_features', 'image_ids')

    @property
    def extra_raw_file_names(self) -> List[str]:
        """Files (relative to :obj:`root`) read when they exist; they key the
        cache like :attr:`raw_file_names`. (default: none)"""
        return []

    # -- cache key -------------------------------------------------------
    def input_files(self) -> List[Tuple[str, str]]:
        """``(name, path)`` of every file the dataset reads: its raw files,
        its extra raw files, and the :attr:`file_options` naming files."""
        out = []
        for rel in list(self.raw_file_names) + list(
                self.extra_raw_file_names):
            path = os.path.join(self.root, rel)
            if not _inside(path, self.root):
                raise ValueError(f'{rel!r} lies outside the dataset root '
                                 f'{self.root}')
            out.append((rel, path))
        for key in self.file_options:
            value = self.options.get(key)
            if isinstance(value, (str, os.PathLike)) and os.path.isfile(
                    value):
                out.append((f'option:{key}', os.path.abspath(value)))
        return out

    def _digests(self) -> Tuple[List[tuple], Dict[str, Optional[str]]]:
        """``(stats, {name: sha256 or None if absent})`` of every
        :meth:`input_files` entry. Contents are re-hashed only when a file's
        size or mtime changes within this object's life, so each file is
        read once however often the key is asked for."""
        stats, sts = [], []
        for name, path in self.input_files():
            try:
                st = os.stat(path)
                stats.append((name, path, st.st_size, st.st_mtime_ns))
                sts.append(st)
            except OSError:
                stats.append((name, path, None, None))
                sts.append(None)
        stats_key = tuple(stats)
        if self._inputs_memo is not None and self._inputs_memo[0] == \
                stats_key:
            return stats, self._inputs_memo[1]
        digests = {name: None if st is None else file_digest(path, st)
                   for (name, path, _, _), st in zip(stats, sts)}
        self._inputs_memo = (stats_key, digests)
        return stats, digests

    def input_digests(self) -> Dict[str, str]:
        """``{name: SHA-256}`` of every input file that exists (names as in
        :meth:`input_files`: relative to :obj:`root`, or ``'option:<key>'``
        for a file an option names). They identify the data by content, so
        a moved or copied folder has the same digests."""
        return {name: d for name, d in self._digests()[1].items()
                if d is not None}

    def inputs_fingerprint(self) -> str:
        """SHA-256 over the name, size, mtime and content hash of every
        :meth:`input_files` entry (absent ones count as absent)."""
        stats, digests = self._digests()
        h = hashlib.sha256()
        for name, _, size, mtime in stats:
            digest = 'absent' if size is None else digests[name]
            h.update(f'{name}\0{size}\0{mtime}\0{digest}\0'.encode())
        return h.hexdigest()

    def options_key(self) -> str:
        """The processed-file key: options, input files and pre-transform."""
        key: Dict[str, Any] = dict(options=self.options,
                                   inputs=self.inputs_fingerprint())
        pre = getattr(self, 'pre_transform', None)
        if pre is not None:
            key['pre_transform'] = _strip_address(repr(pre))
        blob = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- processing, saving, loading ------------------------------------
    def _checked_processed_path(self) -> str:
        path = self.processed_paths[0]
        if not _inside(path, self.processed_dir):
            raise ValueError(f'processed file {path} lies outside '
                             f'{self.processed_dir}')
        return path

    def _process(self) -> None:
        # PyG's version unpickles pre_transform.pt / pre_filter.pt with
        # the full unpickler; the pre-transform is part of the key instead.
        path = self._checked_processed_path()
        if not self.force_reload and os.path.isfile(path):
            return
        os.makedirs(self.processed_dir, exist_ok=True)
        self.process()

    def _save(self, data) -> None:
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        collated, slices = self.collate([data])
        name = type(collated).__name__
        if _DATA_CLASSES.get(name) is not type(collated):
            raise TypeError(f'cannot cache a {type(collated).__name__}; '
                            f'expected one of {sorted(_DATA_CLASSES)}')
        # Plain data only (no pickled class), written atomically: a crash or
        # a second process never leaves a torn cache file.
        atomic_save(dict(format=PROCESSED_FORMAT[0],
                         version=PROCESSED_FORMAT[1], data_cls=name,
                         data=collated.to_dict(), slices=slices),
                    self._checked_processed_path())

    def _read_processed(self, path: str) -> None:
        """Loads :obj:`path`; :class:`UnsafeCacheError` if it holds code,
        another exception if it is corrupt or stale."""
        try:
            out = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as e:
            if _imports_code(path, str(e)):
                raise UnsafeCacheError(
                    f'{path}: refused to load, it holds objects other than '
                    'tensors and plain data (a processed cache never does; '
                    'it may have been tampered with); delete it to rebuild'
                ) from None
            raise
        ok = (isinstance(out, dict) and out.get('format') ==
              PROCESSED_FORMAT[0] and out.get('version') ==
              PROCESSED_FORMAT[1] and out.get('data_cls') in _DATA_CLASSES)
        if not ok:
            raise ValueError('not a processed file of this version')
        self.data = _DATA_CLASSES[out['data_cls']].from_dict(out['data'])
        self.slices = out['slices']

    def _remove_stale_temps(self) -> None:
        """Removes temporary files that a killed write left in
        :attr:`processed_dir` (never read: the cache reads only its own
        file name), once older than this process and :data:`STALE_TEMP_S`
        seconds, so a live writer's file is never touched."""
        try:
            names = os.listdir(self.processed_dir)
        except OSError:
            return
        cutoff = min(_PROCESS_START, time.time() - STALE_TEMP_S)
        for name in names:
            if not name.startswith('.tmp-'):
                continue
            path = os.path.join(self.processed_dir, name)
            try:
                if os.path.isfile(path) and os.stat(path).st_mtime < cutoff:
                    os.remove(path)
            except OSError:  # gone already, or not ours to remove
                pass

    def _load_or_rebuild(self) -> None:
        path = self._checked_processed_path()
        self._remove_stale_temps()
        try:
            self._read_processed(path)
            return
        except UnsafeCacheError:
            raise
        except Exception as e:  # corrupt, partial or stale: rebuild
            reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
            warnings.warn(f'{path}: unreadable processed file ({reason}); '
                          'rebuilding it', stacklevel=3)
        os.makedirs(self.processed_dir, exist_ok=True)
        self.process()
        self._read_processed(path)
