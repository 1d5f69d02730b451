r"""Neighbourhood sampling on a CSR graph, for mini-batch training.

PyG's :class:`~torch_geometric.loader.NeighborLoader` needs pyg-lib or
torch-sparse, neither installable here; :func:`~torch_geometric.utils.
k_hop_subgraph` takes every neighbour, so one hub of a power-law graph pulls
in most of it. This sampler keeps at most a fixed number of neighbours per
node and hop, in plain torch, with a cost linear in the sampled nodes (never
in the graph's size).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ricea_pyg.nn.structure import CSRAdjacency

__all__ = ['SampledSubgraph', 'NeighborSampler']


class SampledSubgraph(NamedTuple):
    """A sampled neighbourhood of a set of seed nodes."""
    nodes: Tensor        # [n] global ids; the distinct seeds come first
    edge_index: Tensor   # [2, e] (sender, receiver) in local ids
    seed_index: Tensor   # [S] local id of each given seed (in given order)

    @property
    def num_nodes(self) -> int:
        return self.nodes.numel()

    def adjacency(self) -> CSRAdjacency:
        """The message graph for :class:`~ricea_pyg.nn.GATEncoder`: the
        sampled edges as they are (already both ways where sampled) plus a
        self-loop on every node, as on the full graph."""
        return CSRAdjacency(self.edge_index, self.num_nodes, undirected=False,
                            self_loops=True)


class NeighborSampler:
    r"""Samples, for a batch of seed nodes, up to :obj:`fanouts[h]`
    neighbours of every node reached at hop :math:`h` (GraphSAGE-style
    neighbourhood sampling, `"Inductive Representation Learning on Large
    Graphs" <https://arxiv.org/abs/1706.02216>`_).

    The graph is prepared like the structure encoder's
    (:class:`~ricea_pyg.nn.CSRAdjacency`: both directions, duplicates
    collapsed, no self-loop). A node with at most :obj:`fanouts[h]`
    neighbours keeps them all; a larger one gets :obj:`fanouts[h]` draws
    with replacement (duplicates collapse). With fan-outs at least the
    largest degree, a :math:`L`-layer encoder on the sample gives the seeds
    exactly their full-graph output (tested).

    Args:
        edge_index (Tensor): ``[2, E]`` edges of the graph.
        num_nodes (int): :math:`N`.
        fanouts (list of int): Neighbours per node at each hop; one entry per
            encoder layer. (default: :obj:`(10, 5)`)

    Cost per call is :math:`O(S \prod_h f_h)` for :math:`S` seeds, whatever
    :math:`N`: the global-to-local map is one buffer reset after each call.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 fanouts: Sequence[int] = (10, 5)):
        fanouts = [int(f) for f in fanouts]
        if not fanouts or min(fanouts) < 1:
            raise ValueError(f'fanouts must be a non-empty list of positive '
                             f'ints (got {fanouts}); e.g. [10, 5]')
        self.fanouts = fanouts
        graph = CSRAdjacency(edge_index, num_nodes, undirected=True,
                             self_loops=False)
        self.rowptr, self.col = graph.rowptr, graph.col  # receiver -> senders
        self.num_nodes = num_nodes
        self._local = torch.full((num_nodes,), -1, dtype=torch.long,
                                 device=edge_index.device)

    @property
    def degree(self) -> Tensor:
        return self.rowptr[1:] - self.rowptr[:-1]

    def _neighbours(self, frontier: Tensor, fanout: int,
                    generator: Optional[torch.Generator]):
        """(sender position in :attr:`col`, receiver) of the sampled edges
        into :obj:`frontier`."""
        start = self.rowptr[frontier]
        deg = self.rowptr[frontier + 1] - start
        full = deg <= fanout
        # Every neighbour of the small nodes: ranges start..start+deg.
        counts = deg[full]
        receivers_full = frontier[full].repeat_interleave(counts)
        offset = torch.arange(int(counts.sum()), device=frontier.device)
        first = torch.cumsum(counts, 0) - counts
        pos_full = (start[full].repeat_interleave(counts) + offset
                    - first.repeat_interleave(counts))
        # fanout draws with replacement for the large ones.
        big = ~full
        nb = int(big.sum())
        draws = torch.rand(nb, fanout, generator=generator).to(
            frontier.device)
        pos_big = (start[big].view(-1, 1) + (draws * deg[big].view(-1, 1))
                   .long()).view(-1)
        receivers_big = frontier[big].repeat_interleave(fanout)
        return (torch.cat([pos_full, pos_big]),
                torch.cat([receivers_full, receivers_big]))

    def sample(self, seeds: Tensor,
               generator: Optional[torch.Generator] = None
               ) -> SampledSubgraph:
        """The sampled neighbourhood of :obj:`seeds` ``[S]`` (global ids,
        repeats allowed)."""
        if seeds.numel() and (int(seeds.min()) < 0
                              or int(seeds.max()) >= self.num_nodes):
            raise ValueError(f'seeds must be node ids in [0, '
                             f'{self.num_nodes})')
        local = self._local
        nodes = torch.unique(seeds)
        local[nodes] = torch.arange(nodes.numel(), device=nodes.device)
        parts, senders, receivers = [nodes], [], []
        frontier, total = nodes, nodes.numel()
        try:
            for fanout in self.fanouts:
                pos, recv = self._neighbours(frontier, fanout, generator)
                send = self.col[pos]
                new = torch.unique(send[local[send] < 0])
                local[new] = torch.arange(total, total + new.numel(),
                                          device=new.device)
                total += new.numel()
                parts.append(new)
                senders.append(local[send])
                receivers.append(local[recv])
                frontier = new
            all_nodes = torch.cat(parts)
            seed_index = local[seeds]
        finally:
            local[torch.cat(parts)] = -1  # ready for the next call
        edge_index = torch.stack([torch.cat(senders), torch.cat(receivers)])
        return SampledSubgraph(all_nodes, edge_index, seed_index)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'fanouts={self.fanouts})')
