"""FB15K-DB15K (MMKG) in the library's HeteroData schema."""
from __future__ import annotations

import os
import urllib.parse
import warnings
from typing import List, Optional, Sequence, Union

import torch

from ricea_pyg.data import readers
from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.data.pair import KGSide, MultiModalKGPair
from ricea_pyg.data.text import TextEncoder
from ricea_pyg.datasets.base import PairDataset

__all__ = ['FBDB15K', 'read_openke_kg', 'read_fbdb15k_pair']


def read_openke_kg(folder: str) -> KGSide:
    """An OpenKE folder: ``entity2id``, ``relation2id``, ``*2id`` triples.

    Every triple file present among train/valid/test is concatenated (for EA
    the link-prediction split does not matter).
    """
    uris = readers.read_openke_entities(os.path.join(folder, 'entity2id.txt'))
    edges, types = [], []
    for split in ('train2id.txt', 'valid2id.txt', 'test2id.txt'):
        path = os.path.join(folder, split)
        if os.path.exists(path):
            e, t = readers.read_openke_triples(path, len(uris))
            edges.append(e)
            types.append(t)
    if not edges:
        raise DataFormatError(folder, 'no train2id/valid2id/test2id.txt',
                              'put the OpenKE triple files in this folder')
    rel_path = os.path.join(folder, 'relation2id.txt')
    rel_names = None
    if os.path.exists(rel_path):
        rel_names = dict(enumerate(readers.read_openke_entities(rel_path)))
    return KGSide(uris=uris, edge_index=torch.cat(edges, 1),
                  edge_type=torch.cat(types), relation_names=rel_names)


def _wikipedia_titles(path: str, index: dict) -> List[Optional[str]]:
    names: List[Optional[str]] = [None] * len(index)
    for _, f in readers.iter_records(path, 3, hint='"mid<TAB>wikidata_url'
                                        '<TAB>wikipedia_url"'):
        if f[0] in index:
            title = urllib.parse.unquote(f[2].rsplit('/', 1)[-1])
            names[index[f[0]]] = title.replace('_', ' ')
    return names


def read_fbdb15k_pair(root: str, names: bool = True,
                      attributes: bool = True) -> MultiModalKGPair:
    r"""Reads ``root`` laid out as ``../shared/data/fbdb15k`` (see
    ``docs/data.md``). The FB15K side is whatever OpenKE triple files lie in
    ``FB15K_PARTIAL_openke/``; with no ``train2id.txt`` that is 18% of FB15K
    and a warning says so."""
    fb_dir = os.path.join(root, 'FB15K_PARTIAL_openke')
    if not os.path.exists(fb_dir):
        fb_dir = os.path.join(root, 'FB15K')
    if not os.path.exists(os.path.join(fb_dir, 'train2id.txt')):
        warnings.warn(f'{fb_dir} has no train2id.txt: the FB15K relation '
                      'graph is partial (loader and pipeline tests only, not '
                      'a benchmark)', stacklevel=2)
    src = read_openke_kg(fb_dir)
    tgt = read_openke_kg(os.path.join(root, 'DB15K'))
    s_index = {u: i for i, u in enumerate(src.uris)}
    t_index = {u: i for i, u in enumerate(tgt.uris)}
    links = readers.read_sameas_links(
        os.path.join(root, 'mmkb', 'DB15K_SameAsLink.txt'), s_index, t_index,
        allow_shared_target=True)  # 4 DB15K entities carry two FB15K mids
    if names:
        src.names = _wikipedia_titles(os.path.join(
            root, 'FB15K_names', 'fb15k_mid-wdurl-wpurl_14951.txt'), s_index)
        tgt.names = [readers.local_name(u) for u in tgt.uris]
    if attributes:
        src.attributes = readers.read_attribute_triples(
            os.path.join(root, 'mmkb', 'FB15K_NumericalTriples.txt'), s_index,
            parse_value=True)
        tgt.attributes = readers.read_attribute_triples(
            os.path.join(root, 'DB15K_literals',
                         'DB15K_NumericalTriples_filtered.txt'), t_index)
    return MultiModalKGPair(src, tgt, links)


class FBDB15K(PairDataset):
    r"""FB15K-DB15K from the MMKG benchmark (source FB15K, target DB15K).

    Only the layout of ``../shared/data/fbdb15k`` is read (no download: the
    full FB15K triples are not publicly reachable as small files). Images are
    indexed there but no features exist, so modalities are graph, rel, attr,
    name and char. Same options as :class:`~ricea_pyg.datasets.DBP15K`
    (``split='official'`` is not available).
    """

    def __init__(self, root: str, modalities: Optional[Sequence[str]] = None,
                 names: bool = True,
                 text_encoder: Union[None, str, TextEncoder] = None,
                 train_ratio: float = 0.2, val_ratio: float = 0.1,
                 seed: int = 0, rel_top_k: int = 1000, attr_top_k: int = 1000,
                 char_top_k: int = 1000, relation_key: str = 'id',
                 processed_dir: Optional[str] = None, transform=None,
                 pre_transform=None, force_reload: bool = False,
                 log: bool = True):
        self.text_encoder = text_encoder
        enc_id = getattr(text_encoder, 'identifier', text_encoder)
        options = dict(modalities=modalities, names=names,
                       text_encoder=enc_id, train_ratio=train_ratio,
                       val_ratio=val_ratio, seed=seed, rel_top_k=rel_top_k,
                       attr_top_k=attr_top_k, char_top_k=char_top_k,
                       relation_key=relation_key)
        super().__init__(root, options, processed_dir, transform,
                         pre_transform, force_reload, log)

    @property
    def raw_file_names(self) -> List[str]:
        return ['DB15K/entity2id.txt', 'mmkb/DB15K_SameAsLink.txt']

    @property
    def extra_raw_file_names(self) -> List[str]:
        """Every other file :func:`read_fbdb15k_pair` may read (they key
        the processed cache)."""
        kg = [f'{d}/{f}' for d in ('FB15K_PARTIAL_openke', 'FB15K', 'DB15K')
              for f in ('entity2id.txt', 'relation2id.txt', 'train2id.txt',
                        'valid2id.txt', 'test2id.txt')]
        return kg + ['FB15K_names/fb15k_mid-wdurl-wpurl_14951.txt',
                     'mmkb/FB15K_NumericalTriples.txt',
                     'DB15K_literals/DB15K_NumericalTriples_filtered.txt']

    @property
    def processed_file_names(self) -> List[str]:
        return [f'fbdb15k_{self.options_key()}.pt']

    def download(self) -> None:
        raise FileNotFoundError(
            f'{self.raw_dir} lacks the FB15K-DB15K files; lay them out as in '
            'docs/data.md (FB15K-DB15K is not downloaded automatically)')

    def process(self) -> None:
        o = self.options
        pair = read_fbdb15k_pair(self.raw_dir, names=o['names'])
        data = pair.to_hetero_data(
            modalities=o['modalities'], train_ratio=o['train_ratio'],
            val_ratio=o['val_ratio'], seed=o['seed'],
            cache_dir=self.text_cache_dir, rel_top_k=o['rel_top_k'],
            attr_top_k=o['attr_top_k'], char_top_k=o['char_top_k'],
            relation_key=o['relation_key'], text_encoder=self.text_encoder)
        self._save(data)
