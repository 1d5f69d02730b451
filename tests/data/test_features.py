from collections import Counter

import torch

from ricea_pyg.data.features import (
    bag_of_attributes,
    bag_of_relations,
    bigram_vocabulary,
    char_bigrams,
    top_k_vocabulary,
)


def test_top_k_vocabulary_breaks_ties_by_key():
    vocab = top_k_vocabulary(Counter({'b': 2, 'a': 2, 'c': 5, 'd': 1}), 3)
    assert vocab == {'c': 0, 'a': 1, 'b': 2}


def test_bag_of_relations_counts_head_and_tail():
    edge_index = torch.tensor([[0, 0, 1], [1, 2, 2]])
    edge_key = torch.tensor([5, 5, 9])
    x = bag_of_relations(edge_index, edge_key, 3, {5: 0, 9: 1})
    assert x.tolist() == [[2, 0], [1, 1], [1, 1]]


def test_bag_of_relations_ignores_out_of_vocab():
    x = bag_of_relations(torch.tensor([[0], [1]]), torch.tensor([3]), 2,
                         {5: 0})
    assert x.abs().sum() == 0


def test_bag_of_attributes_multi_hot():
    x = bag_of_attributes([(0, 'pop'), (0, 'pop'), (1, 'area'), (1, 'x')],
                          2, {'pop': 0, 'area': 1})
    assert x.tolist() == [[1, 0], [0, 1]]


def test_char_bigrams():
    vocab = bigram_vocabulary(['Ab ab', 'b'], 10)
    assert set(vocab) == {'ab', 'b ', ' a'}
    x = char_bigrams(['ab ab', None, ''], vocab)
    assert x[0, vocab['ab']] == 2 and x[0, vocab[' a']] == 1
    assert x[1:].abs().sum() == 0
