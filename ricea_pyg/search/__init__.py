from ricea_pyg.search.assignment import (
    HUNGARIAN_MAX_CELLS,
    Assignment,
    dense_similarity,
    greedy_matching,
    hungarian_assignment,
    one_to_one_assignment,
    one_to_one_hits,
    pair_precision_recall,
    sinkhorn,
    sparse_sinkhorn,
    topk_candidates,
)
from ricea_pyg.search.csls import (
    csls_search,
    mean_topk_similarity,
    mutual_nearest_neighbors,
    rank_counts,
    sparse_csls_search,
    top1_both_directions,
    true_ranks,
)
from ricea_pyg.search.distributed import (
    ShardedIndex,
    merge_topk,
    shard_range,
    sharded_csls_search,
    sharded_true_ranks,
)
from ricea_pyg.search.embedding import QueryKey, query_key
from ricea_pyg.search.index import AlignmentIndex, faiss_available, torch_topk

__all__ = ['QueryKey', 'query_key',
           'AlignmentIndex', 'faiss_available', 'torch_topk', 'csls_search',
           'sparse_csls_search',
           'mean_topk_similarity', 'rank_counts', 'true_ranks',
           'top1_both_directions',
           'mutual_nearest_neighbors',
           'ShardedIndex', 'merge_topk', 'shard_range',
           'sharded_csls_search', 'sharded_true_ranks',
           'Assignment', 'HUNGARIAN_MAX_CELLS', 'dense_similarity',
           'hungarian_assignment', 'sinkhorn', 'sparse_sinkhorn',
           'topk_candidates', 'greedy_matching', 'one_to_one_assignment',
           'one_to_one_hits', 'pair_precision_recall']
