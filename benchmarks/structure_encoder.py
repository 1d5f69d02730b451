"""Structure encoder speed: our CSR GAT against two stock GATConv layers.

    python benchmarks/structure_encoder.py                  # DBP15K zh_en
    python benchmarks/structure_encoder.py --synthetic 40000 --json

The graph is the disjoint union of both KGs of a DBP15K pair (as the RICEA
model encodes it), undirected with self-loops, d = 300 learnable inputs.
Rows, all forward+backward of a random linear read-out, in one process:

* ``gatconv``: ``GATConv(d, d, heads=2, concat=False)`` x2, ELU between;
* ``ours-full``: :class:`~ricea_pyg.nn.GATEncoder` with full weights, CSR;
* ``ours-diag``: the default (diagonal weights, MEAformer), CSR;
* ``ours-diag-scatter``: the default on PyG's gather/scatter path.

The script ends with the gatconv / ours ratios (goal: >= 3).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, emit, machine, median_time  # noqa: E402

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
    e_s = data['source', 'rel', 'source'].edge_index
    e_t = data['target', 'rel', 'target'].edge_index + n_s
    return torch.cat([e_s, e_t], 1), n_s + data['target'].num_nodes


class StockGAT(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.convs = torch.nn.ModuleList([
            GATConv(d, d, heads=2, concat=False, add_self_loops=False)
            for _ in range(2)])

    def forward(self, x, edge_index):
        x = F.elu(self.convs[0](x, edge_index))
        return self.convs[1](x, edge_index)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.environ.get('RICEA_DATA_ROOT',
                                                    '../shared/data'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--synthetic', type=int, default=0,
                   help='use a synthetic pair with this many entities')
    p.add_argument('--channels', type=int, default=300)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--json', action='store_true')
    args = p.parse_args()
    torch.manual_seed(0)
    edge_index, n = union_graph(args)
    graph = CSRAdjacency(edge_index, n)  # undirected + self-loops
    d, device = args.channels, torch.device('cpu')
    x = torch.randn(n, d, requires_grad=True)
    readout = torch.randn(n, d)
    models = {
        'gatconv': (StockGAT(d), graph.edge_index),
        'ours-full': (GATEncoder(d, diag=False, input_norm=False), graph),
        'ours-diag': (GATEncoder(d, input_norm=False), graph),
        'ours-diag-scatter': (GATEncoder(d, input_norm=False),
                              graph.edge_index),
    }
    rows = []
    for name, (model, g) in models.items():
        def step(model=model, g=g):
            x.grad = None
            model.zero_grad(set_to_none=True)
            (model(x, g) * readout).sum().backward()

        t = median_time(step, device, warmup=1, repeats=args.repeats)
        with PeakMemory(device) as mem:
            step()
        rows.append(dict(model=name, nodes=n, edges=graph.num_edges, d=d,
                         fwd_bwd_s=t, peak_mb=mem.peak / 2**20))
    emit(rows, args.json, ['model', 'nodes', 'edges', 'd', 'fwd_bwd_s',
                           'peak_mb'])
    base = rows[0]['fwd_bwd_s']
    if not args.json:
        print(f'# {machine()}')
        for r in rows[1:]:
            print(f"# gatconv / {r['model']}: {base / r['fwd_bwd_s']:.1f}x")


if __name__ == '__main__':
    main()
