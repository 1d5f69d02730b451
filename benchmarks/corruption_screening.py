"""Can corrupted names be found without labels, and does masking them pay?

    python benchmarks/corruption_screening.py --treatment noise
    python benchmarks/corruption_screening.py --treatment wrong

Training-free, on DBP15K zh_en after ``CorruptModalities`` has treated the
name and char modalities of a share ``1 - keep`` of the entities (the cells
of ``benchmarks/robustness.py``). Two questions:

1. **Detection.** The AUROC, over the entities whose modality is present,
   of three label-free scores for telling corrupted rows from clean ones:

   * ``neighbours``: 1 - the cosine of an entity's features and the mean of
     its neighbours' (over the triples, both directions);
   * ``neighbours (2 hops)``: the same against the 1-hop mean plus half the
     2-hop mean;
   * ``off-manifold``: the share of the centred row's energy outside the
     top ``--components`` principal components of the present rows.

2. **Screening.** The names-only model that the default inputs start from:
   name features propagated over the triples (SEU, ``FeaturePropagation``,
   2 hops), scored with CSLS on the test pairs. Rows flagged before the
   propagation are masked, so their neighbours do not spread them and they
   take their neighbours' names (as ``TrainConfig.impute_missing`` does):
   ``none`` masks nothing, ``oracle`` masks exactly the corrupted rows (the
   *missing* treatment), and each detector masks its top ``q`` share.

Writes one JSON line per treatment to --results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from ricea_pyg.data import (  # noqa: E402
    CorruptModalities,
    PairInputs,
    corrupted_flags,
)
from ricea_pyg.data.schema import ALIGN  # noqa: E402
from ricea_pyg.datasets import DBP15K  # noqa: E402
from ricea_pyg.metrics import auroc, evaluate_embeddings  # noqa: E402
from ricea_pyg.nn.propagation import (  # noqa: E402
    FeaturePropagation,
    PropagationGraph,
)
from ricea_pyg.nn.structure import csr_spmm  # noqa: E402

CORRUPTED = ('name', 'char')
SHARES = (0.1, 0.2, 0.4)


def neighbour_mean(graph: PropagationGraph, x):
    return csr_spmm(graph.neighbours, graph.neighbour_count, x)


def suspicion(x, present, graph, components):
    """``{detector: [N] score}``, higher = more likely corrupted."""
    x = F.normalize(x.float(), dim=1) * present.view(-1, 1)
    hop1 = neighbour_mean(graph, x)
    hop2 = neighbour_mean(graph, F.normalize(hop1, dim=1))
    centre = x[present].mean(0)
    _, _, basis = torch.pca_lowrank(x[present] - centre, q=components,
                                    center=False)
    centred = x - centre
    inside = (centred @ basis).pow(2).sum(1)
    return {
        'neighbours': 1 - F.cosine_similarity(x, hop1, dim=1),
        'neighbours (2 hops)': 1 - F.cosine_similarity(x, hop1 + 0.5 * hop2,
                                                       dim=1),
        'off-manifold': 1 - inside / centred.pow(2).sum(1).clamp_min(1e-12),
    }


def names_only_hits(x, keep, graph, ns, pairs, csls_k):
    """CSLS Hits@1 of the propagated names with the rows not in ``keep``
    masked before the propagation."""
    h = FeaturePropagation(2)(x.float().masked_fill(~keep.view(-1, 1), 0),
                              graph)
    m = evaluate_embeddings(h[:ns], h[ns:], pairs, csls_k=csls_k,
                            progress=False)
    return m['hits@1']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pair', default='zh_en')
    p.add_argument('--treatment', default='noise', choices=('noise', 'wrong'))
    p.add_argument('--keep', type=float, default=0.6)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--components', type=int, default=64)
    p.add_argument('--csls-k', type=int, default=3)
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results',
        'corruption_screening.jsonl'))
    args = p.parse_args()

    start = time.perf_counter()
    data = DBP15K(args.root, args.pair, modalities=['graph', 'rel', *CORRUPTED],
                  seed=0, log=False)[0]
    pairs = data[ALIGN].test_index
    data = CorruptModalities(list(CORRUPTED), args.keep, args.treatment,
                             seed=args.seed)(data)
    inputs = PairInputs.from_data(data, ['graph', 'rel', *CORRUPTED])
    graph = PropagationGraph(inputs.edge_index, inputs.edge_type,
                             inputs.num_entities, inputs.num_relations)
    ns = inputs.num_source
    detection, screening = {}, {}
    for m in CORRUPTED:
        present = inputs.mask[:, inputs.modalities.index(m)]
        flags = corrupted_flags(data, m)
        scores = suspicion(inputs.features[m], present, graph,
                           args.components)
        detection[m] = {k: auroc(s[present], flags[present])
                        for k, s in scores.items()}
        if m != 'name':
            continue
        x = inputs.features[m]
        rows = {'none': present, 'oracle': present & ~flags}
        for k, s in scores.items():
            for q in SHARES:
                cut = s[present].quantile(1 - q)
                rows[f'{k}, q={q}'] = present & (s < cut)
        for label, keep in rows.items():
            masked = present & ~keep
            screening[label] = {
                'hits@1': names_only_hits(x, keep, graph, ns, pairs,
                                          args.csls_k),
                'masked': int(masked.sum()),
                'masked_corrupted': int((masked & flags).sum())}
            print(f'{label:32s} masked {screening[label]["masked"]:6d} '
                  f'(corrupted {screening[label]["masked_corrupted"]:6d}) '
                  f'Hits@1 {screening[label]["hits@1"]:.4f}', flush=True)
    for m, row in detection.items():
        print(m, ' '.join(f'{k}: AUROC {v:.3f}' for k, v in row.items()))
    result = {'pair': args.pair, 'treatment': args.treatment,
              'keep': args.keep, 'seed': args.seed,
              'components': args.components, 'detection_auroc': detection,
              'names_only_screening': screening,
              'corrupted_names': int(corrupted_flags(data, 'name').sum()),
              'wall_s': time.perf_counter() - start, 'machine': machine(),
              'date': time.strftime('%Y-%m-%d'),
              'command': 'python benchmarks/corruption_screening.py ' +
              ' '.join(sys.argv[1:])}
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, 'a') as f:
        f.write(json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
