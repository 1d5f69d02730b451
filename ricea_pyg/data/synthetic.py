"""Synthetic KG pairs with a planted alignment, for tests and scale runs."""
from __future__ import annotations

import numbers
from typing import Dict, Optional, Tuple

import torch
from torch_geometric.data import HeteroData

from ricea_pyg.data.features import bag_of_relations, row_mask
from ricea_pyg.data.pair import build_hetero_data
from ricea_pyg.data.split import split_alignment

__all__ = ['synthetic_pair', 'planted_embeddings']

_DEFAULT_DIMS = {'attr': 32, 'img': 64, 'name': 48, 'char': 24}
_DEFAULT_NOISE = {'rel': 0.0, 'attr': 0.5, 'img': 1.0, 'name': 0.3,
                  'char': 0.6}


def _view(num_entities, edge_index, edge_type, num_relations, keep_edge,
          keep_entity, latent, proj, noise, missing, gen):
    """One noisy, re-numbered view of the latent KG."""
    present = torch.nonzero(keep_entity).view(-1)
    n = present.numel()
    # Random local numbering: ids never leak the alignment.
    local = torch.full((num_entities,), -1, dtype=torch.long)
    local[present[torch.randperm(n, generator=gen)]] = torch.arange(n)
    e_keep = keep_edge & keep_entity[edge_index[0]] & keep_entity[
        edge_index[1]]
    ei = local[edge_index[:, e_keep]]
    et = edge_type[e_keep]
    order = torch.argsort(local[present])
    z = latent[present[order]]  # latent row of each local id
    feats = {}
    for m, miss in missing.items():
        if m == 'rel':
            x = bag_of_relations(ei, et, n, {r: r for r in range(
                num_relations)})
        else:
            x = z @ proj[m]
            x = x + noise[m] * torch.randn(x.shape, generator=gen)
        mask = torch.rand(n, generator=gen) >= miss
        if m == 'rel':
            mask &= row_mask(x)
        x = x * mask.unsqueeze(-1)
        feats[m] = (x, mask)
    return dict(num_nodes=n, edge_index=ei, edge_type=et,
                orig_id=present[order]), feats, local


def synthetic_pair(num_entities: int = 1000, num_relations: int = 20,
                   avg_degree: float = 4.0, latent_dim: int = 16,
                   modalities: Tuple[str, ...] = ('rel', 'attr', 'img',
                                                  'name', 'char'),
                   dims: Optional[Dict[str, int]] = None,
                   noise: Optional[Dict[str, float]] = None,
                   missing: Optional[Dict[str, float]] = None,
                   edge_keep: float = 0.85, unmatched: float = 0.0,
                   train_ratio: float = 0.3, val_ratio: float = 0.1,
                   num_classes: int = 0, homophily: float = 0.8,
                   seed: int = 0) -> HeteroData:
    r"""Two noisy views of one latent multi-modal KG, with the alignment.

    A latent graph of :obj:`num_entities` nodes and typed edges is drawn, with
    a latent vector per entity. Each view keeps every edge with probability
    :obj:`edge_keep`, drops a share :obj:`unmatched` of entities (which then
    have no counterpart), renumbers entities at random, and derives modality
    features: ``rel`` as the bag of relations of its own edges, the others as
    a fixed random projection of the latent vector plus Gaussian noise of std
    ``noise[m]``. A share ``missing[m]`` of entities lose modality ``m``
    (masked and zero, never noise).

    With :obj:`num_classes` > 0, every entity also gets a class label
    ``data[side].y``: latent vectors are drawn around class centroids and a
    share :obj:`homophily` of edges join entities of the same class (for
    node-classification demos).

    The result has the same schema as :class:`~ricea_pyg.datasets.DBP15K`;
    ``data[side].orig_id`` is the latent entity id. Deterministic in
    :obj:`seed`; 1M entities take about 10 s on 2 cores.
    """
    if isinstance(num_entities, bool) or not isinstance(
            num_entities, numbers.Integral) or num_entities < 1:
        raise ValueError(f'synthetic_pair needs num_entities >= 1 (got '
                         f'{num_entities!r}); pass a positive entity count')
    if not isinstance(num_relations, numbers.Integral) or num_relations < 1:
        raise ValueError(f'synthetic_pair needs num_relations >= 1 (got '
                         f'{num_relations!r})')
    gen = torch.Generator().manual_seed(seed)
    dims = {**_DEFAULT_DIMS, **(dims or {})}
    noise = {**_DEFAULT_NOISE, **(noise or {})}
    missing = {m: 0.0 for m in modalities} | (missing or {})
    unknown = set(missing) - set(modalities)
    if unknown:
        raise ValueError(f'missing rates given for modalities not generated: '
                         f'{sorted(unknown)}')
    num_edges = int(num_entities * avg_degree / 2)
    # Heavy-tailed tails (a few hubs), as in real KGs.
    head = torch.randint(num_entities, (num_edges,), generator=gen)
    u = torch.rand(num_edges, generator=gen)
    tail = (u.pow(3) * num_entities).long().clamp_(max=num_entities - 1)
    tail = torch.randperm(num_entities, generator=gen)[tail]
    latent = torch.randn(num_entities, latent_dim, generator=gen)
    y = None
    if num_classes > 0:
        y = torch.randint(num_classes, (num_entities,), generator=gen)
        centroids = 1.5 * torch.randn(num_classes, latent_dim, generator=gen)
        latent += centroids[y]
        # Re-draw a share of tails among the head's own class.
        by_class = torch.argsort(y)
        start = torch.searchsorted(y[by_class], torch.arange(num_classes))
        size = torch.bincount(y, minlength=num_classes)
        same = torch.rand(num_edges, generator=gen) < homophily
        cls = y[head[same]]
        pick = (torch.rand(int(same.sum()), generator=gen) *
                size[cls]).long()
        tail[same] = by_class[start[cls] + pick]
    edge_index = torch.stack([head, tail])
    edge_index = edge_index[:, head != tail]
    edge_type = torch.randint(num_relations, (edge_index.size(1),),
                              generator=gen)
    proj = {m: torch.randn(latent_dim, dims[m], generator=gen) /
            latent_dim ** 0.5 for m in modalities if m != 'rel'}
    sides, feats, local = {}, {}, {}
    for side in ('source', 'target'):
        keep_edge = torch.rand(edge_index.size(1), generator=gen) < edge_keep
        keep_ent = torch.rand(num_entities, generator=gen) >= unmatched
        mods = {m: missing[m] for m in modalities}
        sides[side], feats[side], local[side] = _view(
            num_entities, edge_index, edge_type, num_relations, keep_edge,
            keep_ent, latent, proj, noise, mods, gen)
    both = (local['source'] >= 0) & (local['target'] >= 0)
    pairs = torch.stack([local['source'][both], local['target'][both]])
    split = split_alignment(pairs, train_ratio, val_ratio, seed)
    data = build_hetero_data(sides, feats, split)
    if y is not None:
        for side in sides:
            data[side].y = y[data[side].orig_id]
    return data


def planted_embeddings(num: int, dim: int, noise: float = 0.3,
                       seed: int = 0, num_clusters: int = 0,
                       cluster_spread: float = 0.5, chunk: int = 1 << 18
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""ℓ2-normalised source/target embeddings ``[num, dim]`` with a planted
    alignment: target row ``perm[i]`` is a noisy copy of source row ``i``.

    Latent vectors are isotropic Gaussian (``num_clusters=0``, the worst case
    for approximate search: intrinsic dimension = :obj:`dim`), or drawn around
    :obj:`num_clusters` random centroids with std :obj:`cluster_spread`
    (clustered, as trained embeddings are).

    Returns:
        :obj:`(source, target, pairs [2, num])`.
    """
    gen = torch.Generator().manual_seed(seed)
    src = torch.empty(num, dim)
    tgt = torch.empty(num, dim)
    perm = torch.randperm(num, generator=gen)
    centroids = (torch.randn(num_clusters, dim, generator=gen)
                 if num_clusters > 0 else None)
    for s in range(0, num, chunk):
        e = min(s + chunk, num)
        z = torch.randn(e - s, dim, generator=gen)
        if centroids is not None:
            c = torch.randint(num_clusters, (e - s,), generator=gen)
            z = centroids[c] + cluster_spread * z
        src[s:e] = z + noise * torch.randn(e - s, dim, generator=gen)
        tgt[perm[s:e]] = z + noise * torch.randn(e - s, dim, generator=gen)
    src = torch.nn.functional.normalize(src, dim=-1)
    tgt = torch.nn.functional.normalize(tgt, dim=-1)
    return src, tgt, torch.stack([torch.arange(num), perm])
