import pytest
import torch

from ricea_pyg.data import PairInputs, synthetic_pair
from ricea_pyg.models import RICEA
from ricea_pyg.nn import FUSIONS


@pytest.fixture(scope='module')
def data():
    return synthetic_pair(120, missing={'img': 0.4}, seed=3)


def test_pair_inputs(data):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'img'])
    n = data['source'].num_nodes + data['target'].num_nodes
    assert inp.num_entities == n and inp.mask.shape == (n, 3)
    assert set(inp.features) == {'rel', 'img'}
    assert torch.equal(inp.mask[:, 2], torch.cat([data['source'].mask_img,
                                                  data['target'].mask_img]))
    pairs = torch.tensor([[0, 1], [2, 3]])
    assert inp.rows(pairs).tolist() == [[0, 1], [2 + inp.num_source,
                                                 3 + inp.num_source]]
    with pytest.raises(ValueError, match="'video'"):
        PairInputs.from_data(data, ['graph', 'video'])


def test_pair_inputs_union_graph_keeps_relation_types(data):
    inp = PairInputs.from_data(data, ['graph', 'rel'])
    rel_s = data['source', 'rel', 'source']
    rel_t = data['target', 'rel', 'target']
    e_s = rel_s.edge_index.size(1)
    assert torch.equal(inp.edge_index[:, :e_s], rel_s.edge_index)
    assert torch.equal(inp.edge_index[:, e_s:],
                       rel_t.edge_index + inp.num_source)
    shift = int(rel_s.edge_type.max()) + 1
    assert torch.equal(inp.edge_type[e_s:], rel_t.edge_type + shift)
    assert inp.num_relations == shift + int(rel_t.edge_type.max()) + 1
    xs, mask = inp.side('target')
    assert torch.equal(mask, inp.mask[inp.num_source:])
    assert torch.equal(xs['rel'], data['target'].x_rel)


def test_pair_inputs_old_place_warns():
    import ricea_pyg.models as models
    with pytest.warns(DeprecationWarning, match='ricea_pyg.data'):
        assert models.PairInputs is PairInputs


@pytest.mark.parametrize('fusion', sorted(FUSIONS))
def test_model_fusion_swap(data, fusion):
    inp = PairInputs.from_data(data)
    model = RICEA.from_inputs(inp, channels=8, fusion=fusion)
    M = len(inp.modalities)
    idx = torch.tensor([0, 5, inp.num_source + 2])
    out = model(inp, idx)
    assert out.x.shape == (3, M, 8) and out.fused.shape == (3, M * 8)
    full = model.embed(inp)
    assert torch.allclose(full.fused[idx],
                          torch.nn.functional.normalize(out.fused), atol=1e-5)
    missing = ~inp.mask
    assert (full.weights[missing] == 0).all()
    assert torch.isfinite(full.fused).all()
    assert type(model.fusion) is FUSIONS[fusion]
    assert f'fusion={FUSIONS[fusion].__name__}(' in repr(model)


def test_model_graph_only_rows_use_full_graph(data):
    inp = PairInputs.from_data(data, ['graph', 'rel'])
    model = RICEA.from_inputs(inp, channels=8, fusion='concat')
    g = model.structure(model.entity.weight, model.adjacency(inp))
    assert model.adjacency(inp) is model.adjacency(inp)  # built once
    idx = torch.tensor([3, 7])
    assert torch.allclose(model.modality_embeddings(inp, idx)[:, 0], g[idx])


def test_model_requires_input_sizes():
    with pytest.raises(ValueError, match='rel'):
        RICEA(10, {}, ['graph', 'rel'])


def test_embed_in_chunks_equals_one_pass(data):
    inp = PairInputs.from_data(data)
    model = RICEA.from_inputs(inp, channels=8, fusion='adc')
    one = model.embed(inp, batch_size=10_000)
    chunked = model.embed(inp, batch_size=37)
    assert torch.allclose(one.fused, chunked.fused, atol=1e-6)
    assert torch.allclose(one.weights, chunked.weights, atol=1e-6)
    assert torch.allclose(one.uncertainty, chunked.uncertainty, atol=1e-6)


def test_relational_structure_encoder_reads_relation_types(data):
    inp = PairInputs.from_data(data, ['graph', 'rel'])
    model = RICEA.from_inputs(inp, channels=12, fusion='concat',
                              structure_encoder='relational')
    assert "structure_encoder='relational'" in repr(model)
    g = model.graph_embeddings(inp)
    assert g.shape == (inp.num_entities, 12) and torch.isfinite(g).all()
    # Six blocks of 2 (two views of three layers), no map after them.
    assert model.entity.weight.shape == (inp.num_entities, 2)
    assert model.structure.lin is None
    assert torch.equal(g, model.structure(model.entity.weight,
                                          model.adjacency(inp)))
    with pytest.raises(ValueError, match='multiple of 6, e.g. 768'):
        RICEA.from_inputs(inp, channels=8, structure_encoder='relational')
    old = {**model.state_dict(), 'structure.lin.weight': torch.zeros(12, 12)}
    with pytest.raises(ValueError, match='retrain it'):
        model.load_state_dict(old)
    model.load_state_dict(model.state_dict())
    # Relabelling the relation types changes the graph embedding.
    shuffled = PairInputs(**{**inp.__dict__, '_cache': {},
                             'edge_type': inp.edge_type.flip(0)})
    assert not torch.allclose(model.graph_embeddings(shuffled), g)
    with pytest.raises(ValueError, match='num_relations'):
        RICEA(10, {}, ['graph'], structure_encoder='relational')
    with pytest.raises(ValueError, match="'gat' or 'relational'"):
        RICEA(10, {}, ['graph'], structure_encoder='gcn')


@pytest.mark.parametrize('fusion', ['adc', 'meaformer'])
def test_checkpointed_fusion_gives_the_same_gradients(data, fusion,
                                                       monkeypatch):
    import ricea_pyg.models.ricea as module
    calls = []
    monkeypatch.setattr(module, 'checkpoint', lambda *a, **k: calls.append(
        1) or torch.utils.checkpoint.checkpoint(*a, **k))
    inp = PairInputs.from_data(data)
    idx = torch.arange(0, 40)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = RICEA.from_inputs(inp, channels=8, fusion=fusion,
                                  checkpoint_fusion=flag)
        out = model(inp, idx)
        loss = out.fused.square().sum() + out.x.sum()
        for term in out.aux.terms().values():  # ADC's weights are detached
            if term.requires_grad:
                loss = loss + term.square().sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert calls == [1]  # only the second model checkpoints
    assert grads[0].keys() == grads[1].keys()
    assert any(n.startswith('fusion.') for n in grads[0])
    for n, g in grads[0].items():
        assert torch.allclose(g, grads[1][n], atol=1e-6), n


def test_projection_reads_float16_features(data):
    inp = PairInputs.from_data(data, ['graph', 'rel'])
    model = RICEA.from_inputs(inp, channels=8, fusion='concat')
    full = model.embed(inp).fused
    inp.features['rel'] = inp.features['rel'].half()
    half = model.embed(inp).fused
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, atol=1e-3)


@pytest.mark.parametrize('scoring', ['fused', 'pair_mean'])
def test_beside_scores_the_mixture_of_fused_and_beside_cosines(data,
                                                                scoring):
    import torch.nn.functional as F
    inp = PairInputs.from_data(data, ['graph', 'rel', 'attr', 'img'])
    inp.features['img'] = inp.features['img'].half()  # as seed labels are
    g = 0.3
    torch.manual_seed(0)
    beside = RICEA.from_inputs(inp, channels=16, fusion='adc',
                               fusion_kwargs={'scoring': scoring},
                               beside=['img'], beside_weight=g).eval()
    assert beside.modalities == ['graph', 'rel', 'attr']
    assert beside.beside == ['img']
    assert "beside=['img'], g=0.3" in repr(beside)
    alone = RICEA.from_inputs(
        PairInputs.from_data(data, ['graph', 'rel', 'attr']), channels=16,
        fusion='adc', fusion_kwargs={'scoring': scoring}).eval()
    alone.load_state_dict(beside.state_dict())  # the same parameters
    with torch.no_grad():
        out = beside(inp)
        ref = alone(PairInputs.from_data(data, ['graph', 'rel', 'attr']))
    assert torch.equal(out.mask, inp.mask[:, :3])
    assert torch.equal(out.weights, ref.weights)
    labels = F.normalize(inp.features['img'].float(), dim=1)
    if scoring == 'fused':
        h = F.normalize(ref.fused, dim=1)
        score = out.fused @ out.fused.t()
        expected = (1 - g) * h @ h.t() + g * labels @ labels.t()
    else:
        score = out.query @ out.key.t()
        expected = (1 - g) * ref.query @ ref.key.t() + \
            g * labels @ labels.t()
    assert torch.allclose(score, expected, atol=1e-5)
    # What search and the loss read is that score, never re-normalised,
    # also for the entities whose beside row is zero (30 % of img here).
    zero = inp.features['img'].float().abs().sum(1) == 0
    assert zero.any()
    emb = beside.embed(inp, batch_size=50).embeddings
    assert torch.allclose(emb.query @ emb.key.t(), expected, atol=1e-5)
    # Rows asked one chunk at a time give the same.
    idx = torch.arange(5, 40)
    with torch.no_grad():
        part = beside(inp, idx)
    assert torch.allclose(part.fused, out.fused[idx], atol=1e-6)
    # What training optimises leaves the beside rows out.
    with torch.no_grad():
        trained = beside(inp, beside=False)
    assert torch.equal(trained.fused, ref.fused)
    if scoring == 'pair_mean':
        assert torch.equal(trained.query, ref.query)


@pytest.mark.parametrize('scoring', ['fused', 'pair_mean'])
def test_reweigh_equals_the_model_at_the_other_weight(data, scoring):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'img'])
    torch.manual_seed(0)
    model = RICEA.from_inputs(inp, channels=8, fusion='adc',
                              fusion_kwargs={'scoring': scoring},
                              beside=['img'], beside_weight=0.5)
    assert model.beside_width == inp.features['img'].size(1)
    emb = model.embed(inp).embeddings
    model.beside_weight = 0.2
    expected = model.embed(inp).embeddings
    model.beside_weight = 0.5
    got = model.reweigh(emb, 0.2)
    assert torch.allclose(got.query, expected.query, atol=1e-6)
    assert torch.allclose(got.key, expected.key, atol=1e-6)
    assert not torch.allclose(got.query, emb.query)
    with pytest.raises(ValueError, match=r'weight must be in \(0, 1\)'):
        model.reweigh(emb, 1.0)
    with pytest.raises(ValueError, match='not this model'):
        model.reweigh(emb.query[:, -3:], 0.2)
    plain = RICEA.from_inputs(inp, channels=8, fusion='concat')
    with pytest.raises(ValueError, match='has none'):
        plain.reweigh(emb.query, 0.2)


def test_beside_bad_arguments(data):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'img'])
    with pytest.raises(ValueError, match=r"beside names \['graph'\]"):
        RICEA.from_inputs(inp, channels=8, beside=['graph'])
    with pytest.raises(ValueError, match=r"beside names \['name'\]"):
        RICEA.from_inputs(inp, channels=8, beside=['name'])
    with pytest.raises(ValueError, match='beside_weight'):
        RICEA.from_inputs(inp, channels=8, beside=['img'], beside_weight=1.0)
    only = PairInputs.from_data(data, ['img'])
    with pytest.raises(ValueError, match='at least one must be fused'):
        RICEA.from_inputs(only, channels=8, beside=['img'])


def _cosines(x, mask):
    """``[N, N, M]`` per-modality cosines, 0 where either side is missing."""
    import torch.nn.functional as F
    u = F.normalize(x, dim=-1) * mask.unsqueeze(-1)
    return torch.einsum('imd,jmd->ijm', u, u)


@pytest.mark.parametrize('fusion', ['concat', 'meaformer'])
def test_score_weights_weigh_each_modality_cosine(data, fusion):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'attr', 'img'])
    torch.manual_seed(0)
    model = RICEA.from_inputs(inp, channels=8, fusion=fusion).eval()
    s = {'attr': 0.25, 'img': 4.0}
    model.score_weights = s
    assert model.score_weights == s and 'score_weights=' in repr(model)
    with torch.no_grad():
        out = model(inp)
        trained = model(inp, beside=False)
    cos = _cosines(out.x, out.mask)
    w = out.weights
    sw = torch.tensor([1.0, 1.0, 0.25, 4.0])
    # fused = [w_m x^_m], each block times sqrt(s_m), then normalised
    num = (cos * w.unsqueeze(1) * w.unsqueeze(0) * sw).sum(-1)
    sq = (w ** 2 * out.mask * sw).sum(-1).sqrt()
    expected = num / (sq.unsqueeze(1) * sq.unsqueeze(0))
    emb = model.embed(inp).embeddings
    assert torch.allclose(emb @ emb.t(), expected, atol=1e-5)
    # Training never sees them.
    model.score_weights = None
    with torch.no_grad():
        assert torch.equal(trained.fused, model(inp, beside=False).fused)


@pytest.mark.parametrize('scoring,beside', [('fused', False),
                                            ('pair_mean', False),
                                            ('fused', True),
                                            ('pair_mean', True)])
def test_rescore_equals_the_model_at_the_other_weights(data, scoring,
                                                       beside):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'attr', 'img'])
    torch.manual_seed(0)
    model = RICEA.from_inputs(inp, channels=8, fusion='adc',
                              fusion_kwargs={'scoring': scoring},
                              beside=['img'] if beside else (),
                              score_weights={'attr': 0.5})
    emb = model.embed(inp).embeddings
    for new in ({'attr': 0.1, 'rel': 2.0}, {}):
        model.score_weights = new
        expected = model.embed(inp).embeddings
        model.score_weights = {'attr': 0.5}
        got = model.rescore(emb, new)
        pairs = [(got, expected)] if isinstance(got, torch.Tensor) else \
            [(got.query, expected.query), (got.key, expected.key)]
        for a, b in pairs:
            assert torch.allclose(a, b, atol=1e-5)
    assert model.score_weights == {'attr': 0.5}  # rescore changes nothing


def test_score_weights_bad_arguments(data):
    inp = PairInputs.from_data(data, ['graph', 'rel', 'attr'])
    model = RICEA.from_inputs(inp, channels=8, fusion='concat')
    with pytest.raises(ValueError, match=r"names \['name'\], which are not"):
        model.score_weights = {'name': 0.5}
    for bad in (0.0, -1.0, float('nan'), True):
        with pytest.raises(ValueError, match='finite numbers > 0'):
            model.score_weights = {'attr': bad}
    summed = RICEA.from_inputs(inp, channels=8, fusion='global',
                               fusion_kwargs={'mode': 'sum'},
                               score_weights={'attr': 0.5})
    with pytest.raises(ValueError, match="mode='concat'"):
        summed.embed(inp)
    # Weights of 1 are the default and are not kept.
    model.score_weights = {'attr': 1.0}
    assert model.score_weights == {} and 'score_weights' not in repr(model)
