from ricea_pyg.search.csls import (
    csls_search,
    mean_topk_similarity,
    mutual_nearest_neighbors,
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
from ricea_pyg.search.index import AlignmentIndex, faiss_available, torch_topk

__all__ = ['AlignmentIndex', 'faiss_available', 'torch_topk', 'csls_search',
           'sparse_csls_search',
           'mean_topk_similarity', 'true_ranks', 'top1_both_directions',
           'mutual_nearest_neighbors',
           'ShardedIndex', 'merge_topk', 'shard_range',
           'sharded_csls_search', 'sharded_true_ranks']
