"""Line-oriented readers for the MMEA benchmark formats.

Every reader validates each record and raises :class:`DataFormatError` with
the file, the 1-based line number and a fix. Nothing is silently skipped.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ricea_pyg.data.errors import DataFormatError, PathLike
from ricea_pyg.io import atomic_write

__all__ = [
    'iter_records', 'read_id_uri', 'read_id_triples', 'read_id_links',
    'read_openke_entities', 'read_openke_triples', 'read_sameas_links',
    'read_string_triples', 'read_string_links', 'read_attribute_triples',
    'read_translated_names', 'read_names_tsv', 'read_feature_file',
    'convert_pickle_features', 'local_name',
]


def _open_lines(path: PathLike) -> List[str]:
    if not os.path.isfile(path):
        raise DataFormatError(path, 'file not found',
                              'check the path (or the dataset root)')
    with open(path, encoding='utf-8', newline='') as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise DataFormatError(path, f'not valid UTF-8 ({e.reason} at byte '
                                  f'{e.start})', 're-encode the file as UTF-8'
                                  ) from None
    text = _strip_bom(text)
    if not text.strip():
        raise DataFormatError(path, 'file is empty',
                              'point to a non-empty file, or leave this '
                              'input out')
    return text.splitlines()


_BOM = '\ufeff'


def _strip_bom(text: str) -> str:
    """Drops every UTF-8 byte-order mark (U+FEFF): at the start of a file
    (an editor's BOM) or pasted into a field, it is never data."""
    return text.replace(_BOM, '')


def _clean(field: str) -> str:
    """A field without BOMs and surrounding whitespace."""
    return _strip_bom(field).strip()


def iter_records(path: PathLike, num_fields: int, sep: Optional[str] = '\t',
                 skip_first: bool = False, at_least: bool = False,
                 hint: str = '') -> Iterator[Tuple[int, List[str]]]:
    r"""Yields :obj:`(line_number, fields)` for each non-blank line.

    Args:
        path: The file to read (UTF-8; ``\r\n`` endings are accepted).
        num_fields: The number of fields each line must have.
        sep: The field separator; :obj:`None` splits on any whitespace.
        skip_first: Skip the first line (an OpenKE record count).
        at_least: Accept lines with more fields than :obj:`num_fields`.
        hint: Describes the expected format in error messages.
    """
    lines = _open_lines(path)
    start = 1 if skip_first else 0
    name = 'tab' if sep == '\t' else ('whitespace' if sep is None else
                                      repr(sep))
    for i in range(start, len(lines)):
        # Surrounding whitespace (a trailing tab, a '\r') is not a field.
        line = _clean(lines[i])
        if not line:
            continue
        fields = line.split(sep) if sep is not None else line.split()
        if sep is not None:
            fields = [_clean(f) for f in fields]
        n = len(fields)
        if n < num_fields or (n > num_fields and not at_least):
            raise DataFormatError(
                path, f'expected {num_fields} {name}-separated fields, got '
                f'{n}', f'each line must be {hint or f"{num_fields} fields"}',
                line=i + 1)
        empty = [k + 1 for k in range(num_fields) if not fields[k]]
        if empty:
            raise DataFormatError(
                path, f'field {empty[0]} is empty', 'remove the stray '
                f'separator; each line must be '
                f'{hint or f"{num_fields} fields"}', line=i + 1)
        yield i + 1, fields


def _int(path: PathLike, line: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, f'{what} {value!r} is not an integer',
                              f'write {what} as a non-negative integer',
                              line=line) from None


def _float(path: PathLike, line: int, value: str, what: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise DataFormatError(path, f'{what} {value!r} is not a number',
                              'write a decimal number', line=line) from None
    if not math.isfinite(out):
        raise DataFormatError(path, f'{what} is {value!r} (not finite)',
                              'replace NaN/inf by a real value, or leave the '
                              'record out so the modality is masked',
                              line=line)
    return out


def local_name(uri: str) -> str:
    r"""The readable local name of a URI: ``<http://x/resource/A_B>`` → ``A B``."""
    uri = uri.strip().strip('<>')
    tail = re.split(r'[/#]', uri.rstrip('/'))[-1]
    return tail.replace('_', ' ')


def read_id_uri(path: PathLike) -> Tuple[List[int], List[str]]:
    """Reads ``id \\t uri`` lines (``ent_ids_*``, ``rel_ids_*``)."""
    ids, uris, seen = [], [], {}
    for line, (i, uri) in iter_records(path, 2, hint='"id<TAB>URI"'):
        idx = _int(path, line, i, 'id')
        if idx in seen:
            raise DataFormatError(path, f'id {idx} already defined on line '
                                  f'{seen[idx]}', 'give every entry a unique '
                                  'id', line=line)
        seen[idx] = line
        ids.append(idx)
        uris.append(uri)
    return ids, uris


def _check_known(path, line, value, known, what):
    if value not in known:
        raise DataFormatError(path, f'{what} {value!r} is not a known entity',
                              'every entity in this file must be listed in '
                              'the entity file of its KG', line=line)


def read_id_triples(path: PathLike, entity_ids: Dict[int, int],
                    order: str = 'hrt', sep: Optional[str] = '\t',
                    skip_first: bool = False) -> Tuple[torch.Tensor,
                                                       torch.Tensor]:
    r"""Reads integer triples and maps entity ids to local indices.

    Args:
        path: The triple file.
        entity_ids: Maps a file entity id to its local index ``0..N-1``.
        order: Field order, ``'hrt'`` (JAPE) or ``'htr'`` (OpenKE).
        sep: Field separator.
        skip_first: Skip a record-count first line (OpenKE).

    Returns:
        :obj:`(edge_index [2, E], edge_type [E])`; relation ids as in the file.
    """
    hi, ri, ti = order.index('h'), order.index('r'), order.index('t')
    heads, rels, tails = [], [], []
    hint = ' '.join(order) + ' (integer ids)'
    for line, f in iter_records(path, 3, sep=sep, skip_first=skip_first,
                                hint=hint):
        h = _int(path, line, f[hi], 'head id')
        r = _int(path, line, f[ri], 'relation id')
        t = _int(path, line, f[ti], 'tail id')
        _check_known(path, line, h, entity_ids, 'head id')
        _check_known(path, line, t, entity_ids, 'tail id')
        heads.append(entity_ids[h])
        rels.append(r)
        tails.append(entity_ids[t])
    return (torch.tensor([heads, tails], dtype=torch.long),
            torch.tensor(rels, dtype=torch.long))


def _check_links(path, links: List[Tuple[int, int, int]],
                 allow_shared_target: bool) -> None:
    by_src: Dict[object, Tuple[object, int]] = {}
    by_tgt: Dict[object, Tuple[object, int]] = {}
    for line, s, t in links:
        if s in by_src:
            prev_t, prev_line = by_src[s]
            kind = 'duplicate' if prev_t == t else 'conflicting'
            raise DataFormatError(
                path, f'{kind} link: source {s!r} is already linked to '
                f'{prev_t!r} on line {prev_line}', 'keep one link per source '
                'entity', line=line)
        if t in by_tgt and not allow_shared_target:
            prev_s, prev_line = by_tgt[t]
            raise DataFormatError(
                path, f'conflicting link: target {t!r} is already linked to '
                f'{prev_s!r} on line {prev_line}', 'keep one link per target '
                'entity (alignment is one-to-one)', line=line)
        by_src[s] = (t, line)
        by_tgt.setdefault(t, (s, line))


def read_id_links(path: PathLike, source_ids: Dict[int, int],
                  target_ids: Dict[int, int],
                  allow_shared_target: bool = False) -> torch.Tensor:
    """Reads ``source_id \\t target_id`` links as local ``[2, P]`` indices.

    Duplicate and conflicting (one-to-many) links raise an error.
    """
    raw = []
    for line, (s, t) in iter_records(path, 2, hint='"source_id<TAB>'
                                     'target_id"'):
        s, t = _int(path, line, s, 'source id'), _int(path, line, t,
                                                        'target id')
        _check_known(path, line, s, source_ids, 'source id')
        _check_known(path, line, t, target_ids, 'target id')
        raw.append((line, s, t))
    _check_links(path, raw, allow_shared_target)
    return torch.tensor([[source_ids[s] for _, s, _ in raw],
                         [target_ids[t] for _, _, t in raw]],
                        dtype=torch.long).view(2, -1)


def read_openke_entities(path: PathLike) -> List[str]:
    """Reads an OpenKE ``entity2id.txt``; returns names ordered by id.

    The first line is the record count; each line is ``name id`` with the id
    as the last whitespace-separated field (names may hold tabs or spaces).
    """
    lines = _open_lines(path)
    count = _int(path, 1, _clean(lines[0]), 'record count')
    names: Dict[int, str] = {}
    for i, raw in enumerate(lines[1:], start=2):
        raw = _clean(raw)
        if not raw:
            continue
        parts = raw.rsplit(None, 1)
        if len(parts) != 2:
            raise DataFormatError(path, 'expected "name id"', 'each line must '
                                  'be an entity name and its integer id',
                                  line=i)
        idx = _int(path, i, parts[1], 'id')
        if idx in names:
            raise DataFormatError(path, f'id {idx} is used twice', 'give '
                                  'every entity a unique id', line=i)
        names[idx] = _clean(parts[0])
    if len(names) != count or sorted(names) != list(range(count)):
        raise DataFormatError(path, f'header says {count} entities with ids '
                              f'0..{count - 1}, found {len(names)}',
                              'make the first line the entity count and use '
                              'ids 0..count-1', line=1)
    return [names[i] for i in range(count)]


def read_openke_triples(path: PathLike, num_entities: int
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reads an OpenKE ``*2id.txt`` (count line, then ``h t r``)."""
    ids = {i: i for i in range(num_entities)}
    return read_id_triples(path, ids, order='htr', sep=None, skip_first=True)


def read_sameas_links(path: PathLike, source_index: Dict[str, int],
                      target_index: Dict[str, int],
                      allow_shared_target: bool = False) -> torch.Tensor:
    """Reads MMKG ``*_SameAsLink.txt``: ``source <SameAs> target .``."""
    raw = []
    for line, f in iter_records(path, 3, sep=None, at_least=True,
                                hint='"source <SameAs> target ."'):
        s, t = f[0], f[2]
        _check_known(path, line, s, source_index, 'source')
        _check_known(path, line, t, target_index, 'target')
        raw.append((line, s, t))
    _check_links(path, raw, allow_shared_target)
    return torch.tensor([[source_index[s] for _, s, _ in raw],
                         [target_index[t] for _, _, t in raw]],
                        dtype=torch.long).view(2, -1)


def read_string_triples(path: PathLike, index: Dict[str, int],
                        relations: Dict[str, int]
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reads ``head \\t relation \\t tail`` strings.

    New entities and relations are appended to :obj:`index` / :obj:`relations`.
    """
    heads, rels, tails = [], [], []
    for _, (h, r, t) in iter_records(path, 3, hint='"head<TAB>relation<TAB>'
                                     'tail"'):
        heads.append(index.setdefault(h, len(index)))
        rels.append(relations.setdefault(r, len(relations)))
        tails.append(index.setdefault(t, len(index)))
    return (torch.tensor([heads, tails], dtype=torch.long).view(2, -1),
            torch.tensor(rels, dtype=torch.long))


def read_string_links(path: PathLike, source_index: Dict[str, int],
                      target_index: Dict[str, int],
                      allow_shared_target: bool = False) -> torch.Tensor:
    """Reads ``source \\t target`` string links into local ``[2, P]``."""
    raw = []
    for line, (s, t) in iter_records(path, 2, hint='"source<TAB>target"'):
        _check_known(path, line, s, source_index, 'source')
        _check_known(path, line, t, target_index, 'target')
        raw.append((line, s, t))
    _check_links(path, raw, allow_shared_target)
    return torch.tensor([[source_index[s] for _, s, _ in raw],
                         [target_index[t] for _, _, t in raw]],
                        dtype=torch.long).view(2, -1)


def read_attribute_triples(path: PathLike, index: Dict[str, int],
                           sep: Optional[str] = '\t',
                           strict: bool = True, at_least: bool = False,
                           parse_value: bool = False,
                           ) -> List[Tuple[int, str]]:
    r"""Reads ``entity \t attribute \t value`` lines.

    Returns ``(local entity, attribute)`` pairs. Only attribute *types* are
    used downstream (as in MEAformer); values may be any literal (DB15K has
    dates), and are checked to be finite numbers when :obj:`parse_value`.
    With :obj:`strict`, an entity missing from :obj:`index` is an error.
    """
    out = []
    for line, f in iter_records(path, 3, sep=sep, at_least=at_least,
                                hint='"entity<TAB>attribute<TAB>value"'):
        ent, attr = f[0], f[1]
        if parse_value:
            _float(path, line, f[2], 'value')
        if ent not in index:
            if strict:
                _check_known(path, line, ent, index, 'entity')
            continue
        out.append((index[ent], attr))
    return out


def read_translated_names(path: PathLike, entity_ids: Dict[int, int],
                          ) -> List[Optional[str]]:
    """Reads ``[[id, [tok, ...]], ...]`` JSON (``translated_ent_name``).

    Returns one name per local index; entities absent from the file get
    :obj:`None` (their name modality is then masked).
    """
    if not os.path.isfile(path):
        raise DataFormatError(path, 'file not found', 'check the path')
    with open(path, encoding='utf-8') as f:
        text = _strip_bom(f.read())
    if not text.strip():
        raise DataFormatError(path, 'file is empty', 'point to the JSON list '
                              'of [id, [tokens]] records')
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f'invalid JSON ({e.msg})', 'the file must '
                              'be a JSON list of [id, [tokens]]',
                              line=e.lineno) from None
    if not isinstance(records, list):
        raise DataFormatError(path, f'the JSON holds {str(records)[:40]!r}, '
                              'not a list', 'the file must be a JSON list of '
                              '[id, [tokens]] records')
    names: List[Optional[str]] = [None] * len(entity_ids)
    for k, rec in enumerate(records):
        ok = (isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], int)
              and isinstance(rec[1], list))
        if not ok:
            raise DataFormatError(path, f'record {k} is {str(rec)[:60]!r}',
                                  'each record must be [id, [tokens]]',
                                  record=f'record {k}')
        if rec[0] in entity_ids:
            tokens = (_clean(str(t)) for t in rec[1])
            names[entity_ids[rec[0]]] = ' '.join(t for t in tokens if t)
    return names


def read_names_tsv(path: PathLike, index: Dict[str, int]
                   ) -> List[Optional[str]]:
    """Reads ``entity \\t name`` lines; unnamed entities get :obj:`None`."""
    names: List[Optional[str]] = [None] * len(index)
    for line, (ent, name) in iter_records(path, 2, hint='"entity<TAB>name"'):
        _check_known(path, line, ent, index, 'entity')
        names[index[ent]] = name
    return names


def _check_vectors(path, rows: Sequence[Tuple[object, np.ndarray]],
                   where: str) -> int:
    dim = None
    for key, vec in rows:
        loc = {'line': key} if where == 'line' else {'record': f'entity {key}'}
        if vec.ndim != 1:
            raise DataFormatError(path, f'feature has shape {vec.shape}',
                                  'store one flat vector per entity', **loc)
        if dim is None:
            dim = vec.shape[0]
        elif vec.shape[0] != dim:
            raise DataFormatError(path, f'feature has dimension '
                                  f'{vec.shape[0]}, earlier ones have {dim}',
                                  'give every entity a vector of the same '
                                  'dimension', **loc)
        if not np.isfinite(vec).all():
            raise DataFormatError(path, 'feature contains NaN or inf',
                                  'fix the vector, or drop the entity so its '
                                  'modality is masked', **loc)
    if dim is None:
        raise DataFormatError(path, 'no feature vectors', 'point to a file '
                              'with at least one vector')
    return dim


def _load_pickle_dict(path: PathLike, trust_pickle: bool) -> dict:
    """The ``{entity: vector}`` dict of an EVA/MCLEA ``.pkl``, only when the
    caller says it trusts the file (unpickling can run any code)."""
    if not trust_pickle:
        raise DataFormatError(
            path, 'pickle files can run code when loaded and are not read '
            'by default', 'pass trust_pickle=True if you trust this file, or '
            'convert it once with ricea_pyg.data.readers.'
            'convert_pickle_features(pkl_path, npz_path, trust_pickle=True) '
            'and read the .npz')
    if not os.path.isfile(path):
        raise DataFormatError(path, 'file not found', 'check the path')
    if os.path.getsize(path) == 0:
        raise DataFormatError(path, 'file is empty', 'point to a pickled '
                              'dict {entity: vector}')
    with open(path, 'rb') as f:
        try:
            obj = pickle.load(f)
        except Exception as e:  # any unpickling failure: a corrupt file
            raise DataFormatError(path, f'cannot unpickle ({e})', 'point '
                                  'to a pickled dict {entity: vector}'
                                  ) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, f'pickle holds {type(obj).__name__}',
                              'pickle a dict {entity: vector}')
    return obj


def _load_numpy(path: PathLike):
    """:func:`numpy.load` that never unpickles, with one-line errors."""
    if not os.path.isfile(path):
        raise DataFormatError(path, 'file not found', 'check the path')
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataFormatError(path, f'cannot read without unpickling ({e})',
                              'store plain numeric arrays (ids as integers '
                              'or strings)') from None
    except (OSError, EOFError) as e:
        raise DataFormatError(path, f'not a readable numpy file ({e})',
                              'rewrite the file with numpy.save / '
                              'numpy.savez') from None


def convert_pickle_features(pkl_path: PathLike, npz_path: PathLike, *,
                            trust_pickle: bool = False) -> None:
    r"""Converts an EVA/MCLEA ``{entity: vector}`` pickle, once, into an
    ``.npz`` that :func:`read_feature_file` reads without unpickling.

    Unpickling runs whatever code the file holds, so the call must say it
    trusts the file: :obj:`trust_pickle` must be :obj:`True`.

    The ``.npz`` holds ``x`` (``[K, F]`` float32) and ``ids`` (``[K]``
    integers or strings), and is written atomically.
    """
    if trust_pickle is not True:
        raise ValueError(f'convert_pickle_features unpickles {pkl_path}, '
                         'which can run code: call it with trust_pickle=True '
                         'only for a file you trust')
    obj = _load_pickle_dict(pkl_path, trust_pickle=True)
    rows = [(k, k, np.asarray(v, dtype=np.float32)) for k, v in obj.items()]
    _check_vectors(pkl_path, [(loc, v) for loc, _, v in rows], 'record')
    keys = list(obj)
    if all(isinstance(k, (int, np.integer)) for k in keys):
        ids = np.asarray(keys, dtype=np.int64)
    elif all(isinstance(k, str) for k in keys):
        ids = np.asarray(keys, dtype=str)
    else:
        raise DataFormatError(pkl_path, 'keys mix types or are neither '
                              'integers nor strings', 'key the dict by '
                              'entity id (int) or URI (str)')
    x = np.stack([v for _, _, v in rows]).astype(np.float32)

    def write(f):
        np.savez(f, x=x, ids=ids)

    atomic_write(os.fspath(npz_path), write)


def read_feature_file(path: PathLike, index: Dict, ids_path: Optional[
        PathLike] = None, trust_pickle: bool = False
        ) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Reads per-entity feature vectors; returns ``(x [N, F], mask [N])``.

    Formats, by extension:

    * ``.npz``: arrays ``x`` (``[K, F]``) and ``ids`` (``[K]``, integers or
      strings; or pass :obj:`ids_path` instead), as
      :func:`convert_pickle_features` writes;
    * ``.npy``: a ``[K, F]`` array, with :obj:`ids_path` listing the entity of
      each row, one per line;
    * ``.pkl`` / ``.pickle``: a dict ``{entity: vector}`` (EVA/MCLEA style),
      read only with :obj:`trust_pickle` (unpickling can run code);
    * anything else: text lines ``entity \t v1 v2 ...`` (space or tab
      separated values).

    ``.npy`` / ``.npz`` are read with ``allow_pickle=False``. Entities of
    :obj:`index` that have no vector get a zero row and ``mask=False``; keys
    unknown to :obj:`index` raise an error.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    rows: List[Tuple[object, object, np.ndarray]] = []  # (loc, ent, vec)
    where = 'record'
    if ext in ('.pkl', '.pickle'):
        obj = _load_pickle_dict(path, trust_pickle)
        rows = [(k, k, np.asarray(v, dtype=np.float32)) for k, v in
                obj.items()]
    elif ext in ('.npy', '.npz'):
        loaded = _load_numpy(path)
        ids: Optional[list] = None
        if ext == '.npz':
            with loaded:
                names = set(loaded.files)
                if 'x' not in names:
                    raise DataFormatError(path, f'no array "x" (has '
                                          f'{sorted(names)})', 'save the '
                                          'features as x=..., ids=...')
                arr = loaded['x']
                if 'ids' in names and ids_path is None:
                    ids = loaded['ids'].tolist()
        else:
            arr = loaded
        if ids is None:
            if ids_path is None:
                raise DataFormatError(path, f'{ext} features need an id '
                                      'list', 'pass ids_path, a file with '
                                      'one entity per row of the array')
            ids = [f[0] for _, f in iter_records(ids_path, 1,
                                                 hint='one entity')]
        if arr.ndim != 2 or arr.shape[0] != len(ids):
            raise DataFormatError(path, f'array shape {arr.shape} does not '
                                  f'match {len(ids)} ids', 'store a '
                                  '[num_ids, dim] array')
        if not np.issubdtype(arr.dtype, np.number):
            raise DataFormatError(path, f'array has dtype {arr.dtype}',
                                  'store numeric features')
        rows = [(e, e, arr[i].astype(np.float32)) for i, e in enumerate(ids)]
    else:
        where = 'line'
        for line, f in iter_records(path, 2, sep='\t', at_least=True,
                                    hint='"entity<TAB>v1 v2 ..."'):
            vals = ' '.join(f[1:]).split()
            vec = np.array([_float(path, line, v, 'value') for v in vals],
                           dtype=np.float32)
            rows.append((line, f[0], vec))
    dim = _check_vectors(path, [(loc, v) for loc, _, v in rows], where)
    x = torch.zeros(len(index), dim)
    mask = torch.zeros(len(index), dtype=torch.bool)
    for loc, ent, vec in rows:
        key = ent
        if key not in index and isinstance(ent, str) and ent.isdigit():
            key = int(ent)
        if key not in index:
            kw = {'line': loc} if where == 'line' else {'record':
                                                        f'entity {ent}'}
            raise DataFormatError(path, f'entity {ent!r} is not in the KG',
                                  'only list entities of this KG', **kw)
        x[index[key]] = torch.from_numpy(vec)
        mask[index[key]] = True
    return x, mask
