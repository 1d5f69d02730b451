r"""Datasets by name, for the command line and configuration files.

A loader takes a *data spec*, the plain dict a run records in ``run.json``
(``dataset`` plus the fields that dataset reads, :func:`dataset_fields`:
e.g. ``root``, ``pair``, ``no_names``, ``split_seed``, ``entities``,
``download``, ``fold``, ``image_features``, ``image_ids``; fields a run
recorded before some of these existed read as unset, and keys a dataset
does not read are ignored), and returns the pair in the library's
:class:`~torch_geometric.data.HeteroData` schema.

:func:`open_dataset` also returns the SHA-256 of every file the dataset
read (``{name relative to root, or 'option:<key>': digest}``), so that a
run can identify its data by content rather than by path.
"""
from __future__ import annotations

import os
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from torch_geometric.data import HeteroData

__all__ = ['register_dataset', 'dataset_names', 'dataset_fields',
           'load_dataset', 'open_dataset', 'unread_field_error',
           'SPEC_FIELDS']

#: Every data-spec field a built-in dataset may read (besides ``dataset``).
SPEC_FIELDS = ('root', 'pair', 'no_names', 'split_seed', 'entities',
               'download', 'fold', 'image_features', 'image_ids')

#: Fields that a spec may hold set only for a dataset that reads them
#: (others, e.g. ``pair`` in an old ``run.json`` of any dataset, are
#: ignored when the dataset does not read them).
_EXCLUSIVE = ('fold', 'image_features', 'image_ids')

# A loader returns the data, or a PairDataset (whose ``[0]`` is the data and
# whose ``input_digests()`` name the files it read).
Loader = Callable[[Dict[str, Any]], Any]
_REGISTRY: Dict[str, Loader] = {}
_FIELDS: Dict[str, Tuple[str, ...]] = {}


def register_dataset(name: str, fields: Optional[Sequence[str]] = None
                     ) -> Callable[[Loader], Loader]:
    """Registers a loader under :obj:`name` (a decorator).

    Args:
        name (str): The ``--dataset`` name.
        fields (sequence of str, optional): The data-spec keys the loader
            reads (besides ``dataset``); a command-line data flag outside
            them is refused, and a run records only these. (default: all of
            :data:`SPEC_FIELDS`)
    """
    fields = tuple(SPEC_FIELDS if fields is None else fields)
    if 'dataset' in fields:
        raise ValueError("'dataset' is implied; do not list it in fields")

    def wrap(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f'a dataset named {name!r} is registered '
                             'already')
        _REGISTRY[name] = loader
        _FIELDS[name] = fields
        return loader
    return wrap


def dataset_names() -> List[str]:
    return sorted(_REGISTRY)


def _known(name: Any) -> str:
    if name not in _REGISTRY:
        raise ValueError(f'unknown dataset {name!r}; choose from '
                         f'{dataset_names()}')
    return name


def dataset_fields(name: str) -> Tuple[str, ...]:
    """The data-spec keys (besides ``dataset``) that dataset :obj:`name`
    reads, in a fixed order."""
    return _FIELDS[_known(name)]


def _flag(key: str) -> str:
    return '--' + key.replace('_', '-')


def unread_field_error(name: str, key: str) -> str:
    """The one-line message refusing spec field :obj:`key` (a command-line
    flag) for dataset :obj:`name`, which does not read it."""
    flag = _flag(key)
    users = [n for n in dataset_names() if key in _FIELDS[n]]
    if key in ('image_features', 'image_ids') and users:
        use = ', '.join(users[:-1]) + ' or ' + users[-1] if \
            len(users) > 1 else users[0]
        return (f'{flag} is not supported for --dataset {name}; use {use}, '
                'or drop it')
    if not users:
        return f'{flag} is read by no dataset (not {name}); drop it'
    return (f'{flag} applies to --dataset {", ".join(users)} only (not '
            f'{name}); drop it')


def open_dataset(spec: Dict[str, Any]
                 ) -> Tuple[HeteroData, Dict[str, str]]:
    """The :class:`HeteroData` that a data spec names and the SHA-256 of
    every file it was built from, ``{name: digest}`` (names relative to the
    dataset's root, or ``'option:<key>'`` for a file named by an option such
    as ``image_features``; empty for generated data). Each file is hashed
    once (the processed cache is keyed on the same digests)."""
    name = _known(spec.get('dataset'))
    fields = _FIELDS[name]
    for key in _EXCLUSIVE:
        if key not in fields and spec.get(key) is not None:
            raise ValueError(unread_field_error(name, key))
    out = _REGISTRY[name](spec)
    from ricea_pyg.datasets.base import PairDataset
    if isinstance(out, PairDataset):
        return out[0], out.input_digests()
    return out, {}


def load_dataset(spec: Dict[str, Any], return_digests: bool = False
                 ) -> Union[HeteroData, Tuple[HeteroData, Dict[str, str]]]:
    """The :class:`HeteroData` that a data spec names (with
    :obj:`return_digests`, also its files' digests, see
    :func:`open_dataset`)."""
    data, digests = open_dataset(spec)
    return (data, digests) if return_digests else data


def _root(spec: Dict[str, Any], what: str) -> str:
    root = spec.get('root')
    if not root:
        raise ValueError(f'--root is required for --dataset '
                         f'{spec["dataset"]}')
    if not os.path.isdir(root):
        raise FileNotFoundError(f'{root}: dataset folder not found; pass '
                                f'--root DIR ({what})')
    return root


def _images(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``image_features`` / ``image_ids`` of a spec, checked."""
    feats, ids = spec.get('image_features'), spec.get('image_ids')
    if ids is not None and feats is None:
        raise ValueError('--image-ids lists the rows of --image-features; '
                         'pass --image-features too')
    for path in (feats, ids):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f'{path}: file not found; check '
                                    '--image-features / --image-ids')
    return dict(image_features=feats, image_ids=ids)


def _seed(spec: Dict[str, Any]) -> int:
    seed = spec.get('split_seed')
    return 0 if seed is None else seed


@register_dataset('synthetic', fields=('entities', 'no_names',
                                       'split_seed'))
def _synthetic(spec: Dict[str, Any]) -> HeteroData:
    from ricea_pyg.data.synthetic import scale_pair
    mods = (('rel',) if spec.get('no_names') else
            ('rel', 'attr', 'img', 'name', 'char'))
    entities = spec.get('entities')
    return scale_pair(2000 if entities is None else entities,
                      modalities=mods, seed=_seed(spec))


@register_dataset('dbp15k', fields=('root', 'pair', 'no_names', 'split_seed',
                                    'download', 'image_features',
                                    'image_ids'))
def _dbp15k(spec: Dict[str, Any]):
    from ricea_pyg.datasets.dbp15k import DBP15K
    pair = spec.get('pair') or 'zh_en'
    root = _root(spec, f'for DBP15K the folder holding {pair}/')
    no_names = bool(spec.get('no_names'))
    names = None if no_names else 'translated'
    missing = [f for f in DBP15K.required_files(pair, names)
               if not os.path.isfile(os.path.join(root, f))]
    if missing and not spec.get('download'):
        fix = ('--no-names to train without names, or ' if any(
            'translated' in f for f in missing) else '')
        raise FileNotFoundError(f'{os.path.join(root, missing[0])}: file '
                                f'not found ({len(missing)} missing); use '
                                f'{fix}--download, or check --root/--pair')
    images = _images(spec)
    mods = ['graph', 'rel'] if no_names else None
    if mods is not None and images['image_features'] is not None:
        mods.append('img')
    return DBP15K(root, pair, modalities=mods, names=names,
                  seed=_seed(spec), log=False, **images)


@register_dataset('fbdb15k', fields=('root', 'no_names', 'split_seed'))
def _fbdb15k(spec: Dict[str, Any]):
    from ricea_pyg.datasets.fbdb15k import FBDB15K
    root = _root(spec, 'the FB15K-DB15K folder, see docs/data.md')
    return FBDB15K(root, names=not spec.get('no_names'), seed=_seed(spec),
                   log=False)


@register_dataset('openea', fields=('root', 'fold', 'split_seed',
                                    'image_features', 'image_ids'))
def _openea(spec: Dict[str, Any]):
    from ricea_pyg.datasets.openea import OpenEA
    root = _root(spec, 'the folder holding rel_triples_1 and ent_links')
    return OpenEA(root, fold=spec.get('fold'), seed=_seed(spec), log=False,
                  **_images(spec))


@register_dataset('files', fields=('root', 'no_names', 'split_seed',
                                   'image_features', 'image_ids'))
def _files(spec: Dict[str, Any]):
    from ricea_pyg.datasets.openea import TSVFolder
    root = _root(spec, 'the folder holding triples_1.tsv, triples_2.tsv and '
                 'links.tsv')
    return TSVFolder(root, names=not spec.get('no_names'), seed=_seed(spec),
                     log=False, **_images(spec))
