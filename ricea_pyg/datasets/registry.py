r"""Datasets by name, for the command line and configuration files.

A loader takes a *data spec*, the plain dict a run records in ``run.json``
(``dataset``, ``root``, ``pair``, ``no_names``, ``split_seed``,
``entities``, ``download``, ``fold``, ``image_features``, ``image_ids``;
keys a run recorded before some of these existed read as unset), and
returns the pair in the library's :class:`~torch_geometric.data.HeteroData`
schema.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

from torch_geometric.data import HeteroData

__all__ = ['register_dataset', 'dataset_names', 'load_dataset']

Loader = Callable[[Dict[str, Any]], HeteroData]
_REGISTRY: Dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Registers a loader under :obj:`name` (a decorator)."""
    def wrap(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f'a dataset named {name!r} is registered '
                             'already')
        _REGISTRY[name] = loader
        return loader
    return wrap


def dataset_names() -> List[str]:
    return sorted(_REGISTRY)


def load_dataset(spec: Dict[str, Any]) -> HeteroData:
    """The :class:`HeteroData` that a data spec names."""
    name = spec.get('dataset')
    if name not in _REGISTRY:
        raise ValueError(f'unknown dataset {name!r}; choose from '
                         f'{dataset_names()}')
    return _REGISTRY[name](spec)


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


def _no_extras(spec: Dict[str, Any]) -> None:
    name = spec['dataset']
    if spec.get('image_features') is not None:
        raise ValueError(f'--image-features is not supported for --dataset '
                         f'{name}; use dbp15k, openea or files')
    if spec.get('fold') is not None:
        raise ValueError(f'--fold applies to --dataset openea only (not '
                         f'{name}); drop it')


@register_dataset('synthetic')
def _synthetic(spec: Dict[str, Any]) -> HeteroData:
    _no_extras(spec)
    from ricea_pyg.data.synthetic import synthetic_pair
    mods = (('rel',) if spec['no_names'] else
            ('rel', 'attr', 'img', 'name', 'char'))
    return synthetic_pair(spec['entities'], modalities=mods,
                          seed=spec['split_seed'])


@register_dataset('dbp15k')
def _dbp15k(spec: Dict[str, Any]) -> HeteroData:
    from ricea_pyg.datasets.dbp15k import DBP15K
    pair = spec['pair']
    root = _root(spec, f'for DBP15K the folder holding {pair}/')
    names = None if spec['no_names'] else 'translated'
    missing = [f for f in DBP15K.required_files(pair, names)
               if not os.path.isfile(os.path.join(root, f))]
    if missing and not spec.get('download'):
        fix = ('--no-names to train without names, or ' if any(
            'translated' in f for f in missing) else '')
        raise FileNotFoundError(f'{os.path.join(root, missing[0])}: file '
                                f'not found ({len(missing)} missing); use '
                                f'{fix}--download, or check --root/--pair')
    if spec.get('fold') is not None:
        raise ValueError('--fold applies to --dataset openea only; drop it '
                         '(DBP15K uses a seeded random split)')
    images = _images(spec)
    mods = ['graph', 'rel'] if spec['no_names'] else None
    if mods is not None and images['image_features'] is not None:
        mods.append('img')
    return DBP15K(root, pair, modalities=mods, names=names,
                  seed=spec['split_seed'], log=False, **images)[0]


@register_dataset('fbdb15k')
def _fbdb15k(spec: Dict[str, Any]) -> HeteroData:
    _no_extras(spec)
    from ricea_pyg.datasets.fbdb15k import FBDB15K
    root = _root(spec, 'the FB15K-DB15K folder, see docs/data.md')
    return FBDB15K(root, names=not spec['no_names'],
                   seed=spec['split_seed'], log=False)[0]


@register_dataset('openea')
def _openea(spec: Dict[str, Any]) -> HeteroData:
    from ricea_pyg.datasets.openea import OpenEA
    root = _root(spec, 'the folder holding rel_triples_1 and ent_links')
    return OpenEA(root, fold=spec.get('fold'), seed=spec['split_seed'],
                  log=False, **_images(spec))[0]


@register_dataset('files')
def _files(spec: Dict[str, Any]) -> HeteroData:
    from ricea_pyg.datasets.openea import TSVFolder
    if spec.get('fold') is not None:
        raise ValueError('--fold applies to --dataset openea only; drop it '
                         '(--dataset files uses a seeded random split)')
    root = _root(spec, 'the folder holding triples_1.tsv, triples_2.tsv and '
                 'links.tsv')
    return TSVFolder(root, names=not spec['no_names'],
                     seed=spec['split_seed'], log=False, **_images(spec))[0]
