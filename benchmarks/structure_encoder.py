"""Structure encoder speed: our CSR GAT and the relation-aware encoder
against two stock GATConv layers.

    python benchmarks/structure_encoder.py                  # DBP15K zh_en
    python benchmarks/structure_encoder.py --synthetic 40000 --json

The graph is the disjoint union of both KGs of a DBP15K pair (as the RICEA
model encodes it); the target KG's relation ids follow the source's. Rows,
all forward+backward of a random linear read-out, in one process:

* ``gatconv``: ``GATConv(d, d, heads=2, concat=False)`` x2, ELU between,
  on the undirected graph with self-loops (d = ``--channels``, 300);
* ``ours-full``: :class:`~ricea_pyg.nn.GATEncoder` with full weights;
* ``ours-diag``: the default (diagonal weights, MEAformer);
* ``relational``: :class:`~ricea_pyg.nn.RelationAwareEncoder` (2 views x 2
  layers, width ``--rel-channels``, 128, then a Linear to d) on the
  triples with reverse edges, sparse path;
* ``relational-mp``: the same encoder with its layers on PyG's
  gather/scatter message passing (the reference path).

Edge counts: the prepared graph's (undirected + self-loops for the GATs,
triples with reverses for the relational rows). The script ends with the
preparation times and the gatconv / row ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine, median_time  # noqa: E402

from ricea_pyg.nn.relational import (  # noqa: E402
    RelationalAdjacency,
    RelationalReflectionConv,
    RelationAwareEncoder,
)
from ricea_pyg.nn.structure import CSRAdjacency, GATEncoder  # noqa: E402


def union_graph(args):
    if args.synthetic:
        from ricea_pyg.data import synthetic_pair
        data = synthetic_pair(args.synthetic // 2, seed=0)
    else:
        from ricea_pyg.datasets import DBP15K
        data = DBP15K(os.path.join(args.root, 'dbp15k'), args.pair,
                      modalities=['graph', 'rel'], names=None)[0]
    n_s = data['source'].num_nodes
    rel_s = data['source', 'rel', 'source']
    rel_t = data['target', 'rel', 'target']
    r_s = int(rel_s.edge_type.max()) + 1
    edge_index = torch.cat([rel_s.edge_index, rel_t.edge_index + n_s], 1)
    edge_type = torch.cat([rel_s.edge_type, rel_t.edge_type + r_s])
    return (edge_index, edge_type, int(edge_type.max()) + 1,
            n_s + data['target'].num_nodes)


class StockGAT(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.convs = torch.nn.ModuleList([
            GATConv(d, d, heads=2, concat=False, add_self_loops=False)
            for _ in range(2)])

    def forward(self, x, edge_index):
        x = F.elu(self.convs[0](x, edge_index))
        return self.convs[1](x, edge_index)


class MessagePassingConv(RelationalReflectionConv):
    """Sends a prepared graph down the layer's message-passing path."""

    def forward(self, x, graph, edge_type=None, *, rel):
        return super().forward(x, graph.edge_index, graph.edge_type, rel=rel)


def timed(build):
    t = time.perf_counter()
    out = build()
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.environ.get('RICEA_DATA_ROOT',
                                                    '../shared/data'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--synthetic', type=int, default=0,
                   help='use a synthetic pair with this many entities')
    p.add_argument('--channels', type=int, default=300)
    p.add_argument('--rel-channels', type=int, default=128)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    torch.manual_seed(0)
    edge_index, edge_type, num_rel, n = union_graph(args)
    graph, t_csr = timed(lambda: CSRAdjacency.from_input(edge_index, n))
    rgraph, t_rel = timed(lambda: RelationalAdjacency(edge_index, edge_type,
                                                      n, num_rel))
    d, dr, device = args.channels, args.rel_channels, torch.device('cpu')
    x = torch.randn(n, d, requires_grad=True)
    x_rel = torch.randn(n, dr, requires_grad=True)
    readout = torch.randn(n, d)
    mp = RelationAwareEncoder(num_rel, dr, out_channels=d)
    for name in ('entity_convs', 'relation_convs'):
        setattr(mp, name, torch.nn.ModuleList(
            [MessagePassingConv(dr) for _ in range(mp.num_layers)]))
    models = {
        'gatconv': (StockGAT(d), x, graph.edge_index),
        'ours-full': (GATEncoder(d, diag=False, input_norm=False), x, graph),
        'ours-diag': (GATEncoder(d, input_norm=False), x, graph),
        'relational': (RelationAwareEncoder(num_rel, dr, out_channels=d),
                       x_rel, rgraph),
        'relational-mp': (mp, x_rel, rgraph),
    }
    rows = []
    for name, (model, inp, g) in models.items():
        def step(model=model, inp=inp, g=g):
            inp.grad = None
            model.zero_grad(set_to_none=True)
            (model(inp, g) * readout).sum().backward()

        t = median_time(step, device, warmup=1, repeats=args.repeats)
        with PeakMemory(device) as mem:
            step()
        edges = (rgraph.num_edges if name.startswith('relational')
                 else graph.num_edges)
        rows.append(dict(model=name, nodes=n, edges=edges,
                         d=dr if name.startswith('relational') else d,
                         fwd_bwd_s=t, peak_mb=mem.peak / 2**20))
    emit(rows, args.json, ['model', 'nodes', 'edges', 'd', 'fwd_bwd_s',
                           'peak_mb'])
    base = rows[0]['fwd_bwd_s']
    if not args.json:
        print(f'# {machine()}')
        print(f'# {num_rel} relations; preparation: CSRAdjacency '
              f'{t_csr:.2f} s, RelationalAdjacency {t_rel:.2f} s')
        for r in rows[1:]:
            print(f"# gatconv / {r['model']}: {base / r['fwd_bwd_s']:.1f}x")


if __name__ == '__main__':
    main()
