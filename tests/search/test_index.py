import pytest
import torch
import torch.nn.functional as F

from ricea_pyg.search import AlignmentIndex, faiss_available, torch_topk

BACKENDS = ['torch'] + (['faiss'] if faiss_available() else [])


def data(n=300, q=50, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=gen), dim=1),
            F.normalize(torch.randn(q, d, generator=gen), dim=1))


def dense(base, queries, k, metric='ip'):
    if metric == 'ip':
        s = queries @ base.t()
    else:
        s = -torch.cdist(queries, base).pow(2)
    return s.topk(k, dim=1)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('metric', ['ip', 'l2'])
def test_flat_equals_dense(backend, metric):
    base, q = data()
    index = AlignmentIndex('flat', metric, backend, batch_size=7).add(base)
    s, i = index.search(q, 5)
    ref_s, ref_i = dense(base, q, 5, metric)
    assert torch.equal(i, ref_i)
    assert torch.allclose(s, ref_s, atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
def test_exclude_and_k_larger_than_n(backend):
    base, q = data(n=6)
    exclude = torch.tensor([0, 3])
    s, i = AlignmentIndex('flat', backend=backend).add(base).search(
        q, 8, exclude=exclude)
    assert not torch.isin(i[i >= 0], exclude).any()
    assert (i[:, 4:] == -1).all() and torch.isinf(s[:, 4:]).all()
    ref = q @ base.t()
    ref[:, exclude] = float('-inf')
    assert torch.equal(i[:, :4], ref.topk(4, dim=1).indices)


@pytest.mark.skipif(not faiss_available(), reason='faiss not installed')
@pytest.mark.parametrize('kind', ['ivf', 'hnsw'])
def test_approximate_kinds_have_high_recall(kind):
    base, q = data(n=4000, q=200, d=32)
    index = AlignmentIndex(kind, nlist=32, nprobe=16).add(base)
    _, i = index.search(q, 1)
    _, ref = dense(base, q, 1)
    assert (i[:, 0] == ref[:, 0]).float().mean() >= 0.95
    assert index.chosen == kind


def test_auto_reports_choice():
    base, _ = data(n=100)
    index = AlignmentIndex('auto', auto_exact_below=50)
    assert index.add(base).chosen == ('ivf' if faiss_available() else 'flat')
    assert 'kind=' in repr(index)


def test_auto_backend_is_torch_for_exact_search_on_the_cpu(monkeypatch):
    import ricea_pyg.search.index as index_module
    base, q = data(n=100)
    index = AlignmentIndex('flat').add(base)
    assert index.backend == 'torch'
    assert torch.equal(index.search(q, 3)[1], dense(base, q, 3)[1])
    if faiss_available():  # approximate kinds stay on FAISS
        assert AlignmentIndex('auto', auto_exact_below=50).add(
            base).backend == 'faiss'
        # faiss-gpu holding the inputs' device keeps exact search on FAISS
        monkeypatch.setattr(index_module, '_faiss_gpu_device',
                            lambda device: 0)
        monkeypatch.setattr(AlignmentIndex, '_add_faiss',
                            lambda self, x: None)
        assert AlignmentIndex('flat').add(base).backend == 'faiss'


@pytest.mark.parametrize('backend', BACKENDS)
def test_save_load(backend, tmp_path):
    base, q = data()
    index = AlignmentIndex('flat', backend=backend).add(base)
    index.save(str(tmp_path / 'idx'))
    loaded = AlignmentIndex.load(str(tmp_path / 'idx'))
    assert loaded.ntotal == 300
    assert torch.equal(loaded.search(q, 3)[1], index.search(q, 3)[1])


def test_errors():
    with pytest.raises(ValueError, match='needs FAISS'):
        AlignmentIndex('hnsw', backend='torch')
    with pytest.raises(RuntimeError, match='empty index'):
        AlignmentIndex('flat', backend='torch').search(torch.zeros(1, 2), 1)
    with pytest.raises(ValueError, match='NaN'):
        AlignmentIndex('flat', backend='torch').add(torch.tensor([[float(
            'nan'), 0.0]]))


def test_torch_topk_offset():
    base, q = data(n=20)
    s, i = torch_topk(q, base, 3, base_offset=100)
    assert (i >= 100).all()


def test_score_memory_bound_splits_chunks(monkeypatch):
    import ricea_pyg.search.index as index_module
    from ricea_pyg.search import true_ranks
    base, q = data()
    ref = torch_topk(q, base, 4)
    ref_ranks = true_ranks(q, base, torch.arange(q.size(0)), csls_k=3)
    assert index_module.query_chunk_rows(8192, 300) == 8192
    # two rows of 300 float32 scores per chunk
    monkeypatch.setattr(index_module, 'SCORE_CHUNK_BYTES', 2 * 300 * 4)
    assert index_module.query_chunk_rows(8192, 300) == 2
    assert index_module.query_chunk_rows(8192, 10**9) == 1
    out = torch_topk(q, base, 4)
    assert torch.equal(out[1], ref[1])
    assert torch.allclose(out[0], ref[0], atol=1e-6)  # GEMM blocking
    assert torch.equal(true_ranks(q, base, torch.arange(q.size(0)),
                                  csls_k=3), ref_ranks)


@pytest.mark.gpu
@pytest.mark.skipif(not faiss_available(), reason='faiss not installed')
def test_cuda_inputs_match_cpu():
    base, q = data()
    cpu = AlignmentIndex('flat').add(base).search(q, 5)
    gpu = AlignmentIndex('flat').add(base.cuda()).search(q.cuda(), 5)
    assert gpu[1].is_cuda and torch.equal(gpu[1].cpu(), cpu[1])


def test_progress_bars_only_when_asked_or_long(capsys):
    x = torch.nn.functional.normalize(torch.randn(500, 8), dim=1)
    AlignmentIndex('flat').add(x).search(x, 2)  # small: silent by default
    assert 'search' not in capsys.readouterr().err
    if faiss_available():
        AlignmentIndex('flat', backend='faiss', progress=True).add(x).search(
            x, 2)
        assert 'search (flat)' in capsys.readouterr().err
    AlignmentIndex('flat', backend='torch', progress=True).add(x).search(x, 2)
    assert 'search' in capsys.readouterr().err


@pytest.mark.skipif(not faiss_available(), reason='faiss not installed')
def test_faiss_gpu_index_goes_to_the_inputs_device(monkeypatch):
    # Wiring only, so it runs anywhere: a fake faiss-gpu with two GPUs
    # records where the index is sent.
    import ricea_pyg.search.index as index_module
    faiss, sent = index_module.faiss, []
    monkeypatch.setattr(index_module, '_faiss_gpu', lambda: True)
    monkeypatch.setattr(faiss, 'get_num_gpus', lambda: 2, raising=False)
    monkeypatch.setattr(faiss, 'StandardGpuResources', object, raising=False)
    monkeypatch.setattr(faiss, 'index_cpu_to_gpu', lambda res, gpu, index:
                        sent.append(gpu) or index, raising=False)
    assert index_module._faiss_gpu_device(torch.device('cuda', 1)) == 1
    assert index_module._faiss_gpu_device(torch.device('cuda', 2)) is None
    assert index_module._faiss_gpu_device(torch.device('cpu')) is None
    base, q = data()
    index = AlignmentIndex('flat', backend='faiss')
    index.chosen, index.device = 'flat', torch.device('cuda', 1)
    index._add_faiss(base.numpy())
    assert sent == [1] and index._gpu == 1


@pytest.mark.gpu
def test_faiss_gpu_index_on_the_inputs_device():
    import ricea_pyg.search.index as index_module
    if not index_module._faiss_gpu():
        pytest.skip('needs faiss-gpu with a visible GPU')
    device = torch.device('cuda', torch.cuda.device_count() - 1)
    base, q = data()
    index = AlignmentIndex('flat', backend='faiss').add(base.to(device))
    assert index._gpu == device.index
    assert index._index.getDevice() == device.index
    s, i = index.search(q.to(device), 5)
    assert i.device == device
    assert torch.equal(i.cpu(), dense(base, q, 5)[1])
