"""ADCFusion inside an ordinary PyG node classifier.

Data: the project's synthetic generator (``ricea_pyg.data.synthetic_pair``,
one side of the pair), with class labels and homophilous edges. Every node
carries four feature views (attr, img, name, char) of different quality, and
each view is missing for a share of the nodes (masked): the best view (name)
is missing most often. On top of that, ``CorruptModalities`` gives 30 % of
the nodes that have a name another node's name (``--corrupt``), a
deliberately wrong view. No download needed.

Model: one Linear per view -> fusion -> 2 x GCNConv -> classes. The model
adds one call for the fusion's own losses, ``auxiliary_loss(out, p)``, where
``p [N, M]`` is the probability that each view alone gives the true class
(per-view linear heads): it trains ADC's confidence (TCP loss) and teaches
its attention-read uncertainty to flag a failing view. ``ADCFusion`` fuses
its transformer outputs (``features='z'``), so the task loss trains the
transformer too. Printed per fusion: accuracy, time, mean weight per view,
and how well ``1 - weight`` (and ADC's uncertainty) of the name view tells
corrupted names from clean ones (AUROC).

    python examples/adc_fusion_node_classification.py [--nodes 6000]
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_undirected

from ricea_pyg.data import CorruptModalities, synthetic_pair
from ricea_pyg.loss import auxiliary_loss
from ricea_pyg.metrics import auroc
from ricea_pyg.nn import fusion_resolver

VIEWS = ['attr', 'img', 'name', 'char']
#: Constructor options per fusion: ADC fuses its transformer outputs, so
#: that the task loss reaches the transformer.
FUSION_KWARGS = {'adc': {'features': 'z'}}


class MultiViewGCN(torch.nn.Module):
    def __init__(self, in_dims, hidden, num_classes, fusion):
        super().__init__()
        self.proj = torch.nn.ModuleList([torch.nn.Linear(d, hidden)
                                         for d in in_dims])
        self.fusion = fusion_resolver(fusion, num_modalities=len(in_dims),
                                      channels=hidden,
                                      **FUSION_KWARGS.get(fusion, {}))
        out = self.fusion.out_channels(hidden)
        self.conv1 = GCNConv(out, hidden)
        self.conv2 = GCNConv(hidden, num_classes)
        # Per-view heads: the target of the fusion's auxiliary losses.
        self.view_heads = torch.nn.ModuleList([
            torch.nn.Linear(hidden, num_classes) for _ in in_dims])

    def forward(self, xs, mask, edge_index):
        hs = [p(x) for p, x in zip(self.proj, xs)]
        out = self.fusion.forward_full(hs, mask)
        h = F.dropout(out.fused, 0.3, self.training)
        h = F.elu(self.conv1(h, edge_index))
        h = F.dropout(h, 0.3, self.training)
        return self.conv2(h, edge_index), hs, out


def run(fusion, data, epochs, seed):
    torch.manual_seed(seed)
    store = data['source']
    xs = [store[f'x_{v}'] for v in VIEWS]
    mask = torch.stack([store[f'mask_{v}'] for v in VIEWS], dim=1)
    edge_index = to_undirected(data['source', 'rel', 'source'].edge_index)
    y = store.y
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(y.numel(), generator=gen)
    n_train, n_val = int(0.2 * y.numel()), int(0.2 * y.numel())
    train, val, test = (perm[:n_train], perm[n_train:n_train + n_val],
                        perm[n_train + n_val:])
    model = MultiViewGCN([x.size(1) for x in xs], 64, int(y.max()) + 1,
                         fusion)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=5e-4)
    best_val, test_at_best = 0.0, 0.0
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        logits, hs, out = model(xs, mask, edge_index)
        loss = F.cross_entropy(logits[train], y[train])
        # Per-view heads (all fusions get them, so the comparison is fair).
        probs = []
        for head, h, m in zip(model.view_heads, hs, mask.t()):
            view_logits = head(h[train])
            loss = loss + F.cross_entropy(view_logits[m[train]],
                                          y[train][m[train]])
            probs.append(view_logits.softmax(-1).gather(
                1, y[train].view(-1, 1)).squeeze(1))
        p = torch.stack(probs, dim=1).detach()
        loss = loss + auxiliary_loss(out.select(train), p)
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xs, mask, edge_index)[0].argmax(-1)
        acc_val = (pred[val] == y[val]).float().mean().item()
        if acc_val > best_val:  # model selection on validation only
            best_val = acc_val
            test_at_best = (pred[test] == y[test]).float().mean().item()
    with torch.no_grad():
        _, (w, u) = model.fusion(
            [p(x) for p, x in zip(model.proj, xs)], mask=mask,
            return_weights=True)
    mean_w = (w.sum(0) / mask.sum(0).clamp_min(1)).tolist()
    # Corrupted vs clean names, among the nodes whose name is present and
    # that have another view to weigh it against.
    name = VIEWS.index('name')
    rows = mask[:, name] & (mask.sum(1) > 1)
    bad = store.corrupted_name[rows]
    separation = {}
    if 0 < int(bad.sum()) < int(rows.sum()):
        separation['1-w'] = auroc(1 - w[rows, name], bad)
        if u is not None:
            separation['u'] = auroc(u[rows, name], bad)
    return best_val, test_at_best, mean_w, separation


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nodes', type=int, default=6000)
    parser.add_argument('--epochs', type=int, default=150)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--corrupt', type=float, default=0.3,
                        help='share of the present names replaced by '
                        "another node's name (default: 0.3)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = synthetic_pair(
        args.nodes, num_classes=6, homophily=0.4, latent_dim=16,
        modalities=('rel', *VIEWS),
        noise={'attr': 2.5, 'img': 2.0, 'name': 0.3, 'char': 3.0},
        missing={'attr': 0.2, 'img': 0.3, 'name': 0.6, 'char': 0.1},
        seed=args.seed)
    data = CorruptModalities(['name'], keep_ratio=1 - args.corrupt,
                             treatment='wrong', seed=args.seed,
                             node_types=('source', ))(data)
    print(f'Synthetic multi-view graph (ricea_pyg.data.synthetic_pair): '
          f'{data["source"].num_nodes} nodes, views {VIEWS}, missing '
          f'{[round(1 - data["source"][f"mask_{v}"].float().mean().item(), 2) for v in VIEWS]}')  # noqa: E501
    print(f'{args.corrupt:.0%} of the present names are another node\'s '
          '(CorruptModalities, treatment="wrong")')
    print(f'{"fusion":<10} {"val acc":>8} {"test acc":>9} {"time s":>7}  '
          f'mean weight per view (present nodes) | AUROC of corrupted '
          f'names')
    for fusion in ('concat', 'meaformer', 'adc'):
        t = time.perf_counter()
        val, test, w, sep = run(fusion, data, args.epochs, args.seed)
        print(f'{fusion:<10} {val:>8.4f} {test:>9.4f} '
              f'{time.perf_counter() - t:>7.1f}  '
              + ' '.join(f'{v}={x:.2f}' for v, x in zip(VIEWS, w))
              + ' | ' + (' '.join(f'{k} {v:.3f}' for k, v in sep.items())
                         or '-'))


if __name__ == '__main__':
    main()
