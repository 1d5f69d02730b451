r"""What a trained model weighs: per-entity modality weights and
uncertainties as a CSV table and two plots (``ricea explain``)."""
from __future__ import annotations

import csv
import os
from typing import List, Optional

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ricea_pyg.data.inputs import PairInputs
from ricea_pyg.data.schema import ALIGN, SIDES
from ricea_pyg.io import atomic_write
from ricea_pyg.models.ricea import RICEA
from ricea_pyg.search.csls import csls_search

__all__ = ['entity_uris', 'explain_model']


def entity_uris(data: HeteroData, side: str) -> List[str]:
    """The URIs of one KG's entities, or ``side:index`` where it has
    none."""
    store = data[side]
    uris = getattr(store, 'uri', None)
    if uris is None:
        return [f'{side}:{i}' for i in range(store.num_nodes)]
    return list(uris)


def explain_model(model: RICEA, data: HeteroData, inputs: PairInputs,
                  out_dir: str, csls_k: int = 3) -> str:
    r"""Writes ``modality_weights.csv`` (one row per entity: its weights,
    uncertainties where the fusion has them, and whether a test source's
    top-1 is right) and the plots ``weights.png`` and ``uncertainty.png``
    to :obj:`out_dir`; returns the CSV's path.

    Args:
        model (RICEA): A trained model.
        data (HeteroData): The pair it was trained on.
        inputs (PairInputs): :obj:`data` as the model reads it.
        out_dir (str): Output folder.
        csls_k (int): CSLS neighbourhood for the top-1 correctness column.
            (default: :obj:`3`)
    """
    out = model.embed(inputs)
    out = out._replace(**{k: v.cpu() for k, v in out._asdict().items()
                          if isinstance(v, Tensor)})
    n_s, mods = inputs.num_source, model.modalities  # the fused ones
    test = data[ALIGN].test_index
    emb = out.embeddings
    _, top = csls_search(emb[:n_s][test[0]], emb[n_s:][test[1]], 1, csls_k)
    correct = torch.full((inputs.num_entities,), -1, dtype=torch.long)
    correct[test[0]] = (top[:, 0] == torch.arange(test.size(1))).long()
    uris = entity_uris(data, SIDES[0]) + entity_uris(data, SIDES[1])
    weights, unc = out.weights, out.uncertainty

    def write(f):
        w = csv.writer(f)
        w.writerow(['side', 'index', 'uri'] + [f'w_{m}' for m in mods]
                   + ([f'u_{m}' for m in mods] if unc is not None else [])
                   + ['test_top1_correct'])
        for r in range(inputs.num_entities):
            side, idx = ('source', r) if r < n_s else ('target', r - n_s)
            row = [side, idx, uris[r]]
            row += [f'{v:.6f}' for v in weights[r].tolist()]
            if unc is not None:
                row += [f'{v:.6f}' for v in unc[r].tolist()]
            row.append('' if correct[r] < 0 else int(correct[r]))
            w.writerow(row)
    csv_path = os.path.join(out_dir, 'modality_weights.csv')
    atomic_write(csv_path, write, binary=False)
    _plots(out_dir, mods, weights, unc, out.mask, correct)
    return csv_path


def _save_figure(fig, path: str) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=120))


def _plots(folder: str, mods: List[str], weights: Tensor,
           unc: Optional[Tensor], mask: Tensor, correct: Tensor) -> None:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('explain plots need matplotlib: pip install '
                          'ricea-pyg[plot]') from None
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(mods), 3.5))
    ax.boxplot([weights[mask[:, m], m].numpy() for m in range(len(mods))],
               showfliers=False)
    ax.set_xticks(range(1, len(mods) + 1), mods)
    ax.set_ylabel('weight (present entities)')
    ax.set_title('Modality weight per entity')
    fig.tight_layout()
    _save_figure(fig, os.path.join(folder, 'weights.png'))
    plt.close(fig)
    if unc is None:
        return
    tested = correct >= 0
    fig, ax = plt.subplots(figsize=(1.5 + 2.0 * len(mods), 3.5))
    groups, labels = [], []
    for m, name in enumerate(mods):
        for ok, tag in ((1, 'right'), (0, 'wrong')):
            sel = tested & (correct == ok) & mask[:, m]
            groups.append(unc[sel, m].numpy())
            labels.append(f'{name}\n{tag}')
    ax.boxplot(groups, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel('uncertainty u')
    ax.set_title('Uncertainty vs. top-1 correctness (test sources)')
    fig.tight_layout()
    _save_figure(fig, os.path.join(folder, 'uncertainty.png'))
    plt.close(fig)
