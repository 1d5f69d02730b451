import pickle

import numpy as np
import pytest

from ricea_pyg.data import DataFormatError, MultiModalKGPair, readers


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def assert_error(exc, name, line=None):
    msg = str(exc.value)
    assert name in msg and 'Fix:' in msg
    if line is not None:
        assert f'{name}:{line}:' in msg
        assert exc.value.line == line


def test_short_line(tmp_path):
    path = write(tmp_path, 'ent_ids_1', '0\ta\n1\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_uri(path)
    assert_error(exc, 'ent_ids_1', 2)
    assert 'expected 2 tab-separated fields, got 1' in str(exc.value)


def test_non_integer_id(tmp_path):
    path = write(tmp_path, 'ent_ids_1', '0\ta\nx1\tb\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_uri(path)
    assert_error(exc, 'ent_ids_1', 2)
    assert "'x1' is not an integer" in str(exc.value)


def test_duplicate_entity_id(tmp_path):
    path = write(tmp_path, 'ent_ids_1', '0\ta\n0\tb\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_uri(path)
    assert_error(exc, 'ent_ids_1', 2)


def test_triple_with_unknown_entity(tmp_path):
    path = write(tmp_path, 'triples_1', '0\t5\t1\n0\t5\t7\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_triples(path, {0: 0, 1: 1})
    assert_error(exc, 'triples_1', 2)
    assert 'tail id 7 is not a known entity' in str(exc.value)


def test_triples_map_to_local_ids(tmp_path):
    path = write(tmp_path, 'triples_1', '10\t3\t30\n30\t4\t20\n')
    ei, et = readers.read_id_triples(path, {10: 0, 20: 1, 30: 2})
    assert ei.tolist() == [[0, 2], [2, 1]]
    assert et.tolist() == [3, 4]


@pytest.mark.parametrize('text,kind', [
    ('0\t10\n1\t11\n0\t10\n', 'duplicate link'),
    ('0\t10\n1\t11\n0\t11\n', 'conflicting link'),
    ('0\t10\n1\t10\n', 'conflicting link'),
])
def test_duplicate_or_conflicting_link(tmp_path, text, kind):
    path = write(tmp_path, 'ref_ent_ids', text)
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_links(path, {0: 0, 1: 1}, {10: 0, 11: 1})
    assert kind in str(exc.value)
    assert exc.value.line == text.count('\n')


def test_shared_target_allowed_when_asked(tmp_path):
    path = write(tmp_path, 'links', '0\t10\n1\t10\n')
    links = readers.read_id_links(path, {0: 0, 1: 1}, {10: 0},
                                  allow_shared_target=True)
    assert links.tolist() == [[0, 1], [0, 0]]


@pytest.mark.parametrize('content', ['', '\n\n  \n'])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, 'triples_2', content)
    with pytest.raises(DataFormatError) as exc:
        readers.read_id_triples(path, {})
    assert 'file is empty' in str(exc.value)
    assert_error(exc, 'triples_2')


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match='file not found'):
        readers.read_id_uri(str(tmp_path / 'nope'))


def test_nan_in_text_feature_file(tmp_path):
    path = write(tmp_path, 'img.tsv', 'a\t1 2 3\nb\t1 nan 3\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_feature_file(path, {'a': 0, 'b': 1})
    assert_error(exc, 'img.tsv', 2)
    assert 'not finite' in str(exc.value)


def test_nan_in_pickle_features(tmp_path):
    path = tmp_path / 'img.pkl'
    path.write_bytes(pickle.dumps({0: np.ones(3), 1: np.array([1, np.nan,
                                                                3.])}))
    with pytest.raises(DataFormatError) as exc:
        readers.read_feature_file(str(path), {0: 0, 1: 1},
                                  trust_pickle=True)
    assert 'entity 1' in str(exc.value) and 'NaN' in str(exc.value)


def test_feature_dimension_differs_text(tmp_path):
    path = write(tmp_path, 'img.tsv', 'a\t1 2 3\nb\t1 2\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_feature_file(path, {'a': 0, 'b': 1})
    assert_error(exc, 'img.tsv', 2)
    assert 'dimension 2, earlier ones have 3' in str(exc.value)


def test_feature_dimension_differs_pickle(tmp_path):
    path = tmp_path / 'img.pkl'
    path.write_bytes(pickle.dumps({0: np.ones(4), 1: np.ones(5)}))
    with pytest.raises(DataFormatError, match='dimension 5, earlier ones '
                       'have 4'):
        readers.read_feature_file(str(path), {0: 0, 1: 1},
                                  trust_pickle=True)


def test_npy_features_with_ids(tmp_path):
    np.save(tmp_path / 'img.npy', np.arange(6, dtype=np.float32).reshape(2,
                                                                          3))
    ids = write(tmp_path, 'img_ids', 'c\na\n')
    x, mask = readers.read_feature_file(str(tmp_path / 'img.npy'),
                                        {'a': 0, 'b': 1, 'c': 2}, ids)
    assert mask.tolist() == [True, False, True]
    assert x[0].tolist() == [3, 4, 5] and x[1].abs().sum() == 0
    assert x[2].tolist() == [0, 1, 2]


def test_npy_row_count_mismatch(tmp_path):
    np.save(tmp_path / 'img.npy', np.zeros((3, 2), dtype=np.float32))
    ids = write(tmp_path, 'img_ids', 'a\nb\n')
    with pytest.raises(DataFormatError, match='does not match 2 ids'):
        readers.read_feature_file(str(tmp_path / 'img.npy'), {'a': 0,
                                                              'b': 1}, ids)


def test_openke_header_mismatch(tmp_path):
    path = write(tmp_path, 'entity2id.txt', '3\n<a> 0\n<b> 1\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_openke_entities(path)
    assert_error(exc, 'entity2id.txt', 1)


def test_openke_triples_order_htr(tmp_path):
    path = write(tmp_path, 'train2id.txt', '2\n0 1 7\n1 0 8\n')
    ei, et = readers.read_openke_triples(path, 2)
    assert ei.tolist() == [[0, 1], [1, 0]] and et.tolist() == [7, 8]


def test_translated_names_bad_record(tmp_path):
    path = write(tmp_path, 'names.json', '[[0, ["a"]], [1, "b"]]')
    with pytest.raises(DataFormatError, match='record 1'):
        readers.read_translated_names(path, {0: 0, 1: 1})


def test_invalid_json_names(tmp_path):
    path = write(tmp_path, 'names.json', '[[0, ["a"]')
    with pytest.raises(DataFormatError, match='invalid JSON'):
        readers.read_translated_names(path, {0: 0})


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, 'ids', '0\ta\r\n1\tb\r\n')
    assert readers.read_id_uri(path) == ([0, 1], ['a', 'b'])


def test_local_name():
    assert readers.local_name('<http://dbpedia.org/resource/Kim_Dae-jung>') \
        == 'Kim Dae-jung'
    assert readers.local_name('http://zh.dbpedia.org/property/毗邻') == '毗邻'


def test_from_files_errors_name_the_user_file(tmp_path):
    s = write(tmp_path, 's.tsv', 'a\tr\tb\n')
    t = write(tmp_path, 't.tsv', 'x\tr\ty\n')
    links = write(tmp_path, 'links.tsv', 'a\tx\nb\tzzz\n')
    with pytest.raises(DataFormatError) as exc:
        MultiModalKGPair.from_files(s, t, links)
    assert_error(exc, 'links.tsv', 2)
    assert 'target' in str(exc.value) and "'zzz'" in str(exc.value)


# -- input hygiene: BOMs and stray whitespace never make phantom entities ---

def test_bom_and_trailing_tab_are_not_data(tmp_path):
    ent = write(tmp_path, 'ent_ids_1', '\ufeff0\thead\t\n1\ttail \r\n')
    ids, uris = readers.read_id_uri(ent)
    assert ids == [0, 1] and uris == ['head', 'tail']
    index = {}
    triples = write(tmp_path, 'triples.tsv',
                    '\ufeffhead\tr\ttail\t\nhead\t\ufeffr\ttail\n')
    ei, et = readers.read_string_triples(triples, index, {})
    assert list(index) == ['head', 'tail']  # no '\ufeffhead', no 'tail\t'
    assert ei.tolist() == [[0, 0], [1, 1]] and et.tolist() == [0, 0]
    names = write(tmp_path, 'names.tsv', '\ufeffhead\tThe Head\t\n')
    assert readers.read_names_tsv(names, index) == ['The Head', None]


def test_empty_field_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, 'triples.tsv', 'a\tr\tb\na\t\tb\n')
    with pytest.raises(DataFormatError) as exc:
        readers.read_string_triples(path, {}, {})
    assert_error(exc, 'triples.tsv', 2)
    assert 'field 2 is empty' in str(exc.value)


def test_bom_in_openke_and_json(tmp_path):
    ent = write(tmp_path, 'entity2id.txt', '\ufeff2\n/m/a\t0\n/m/b\t1\t\n')
    assert readers.read_openke_entities(ent) == ['/m/a', '/m/b']
    js = write(tmp_path, 'names.json', '\ufeff[[0, ["\ufeffa", "b "]]]')
    assert readers.read_translated_names(js, {0: 0, 1: 1}) == ['a b', None]


# -- feature files never unpickle unless told to ---------------------------

class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickle_features_refused_by_default(tmp_path):
    marker = tmp_path / 'ran'
    path = tmp_path / 'img.pkl'
    path.write_bytes(pickle.dumps({0: _Payload(marker)}))
    with pytest.raises(DataFormatError) as exc:
        readers.read_feature_file(str(path), {0: 0})
    msg = str(exc.value)
    assert 'img.pkl' in msg and 'trust_pickle=True' in msg
    assert 'convert_pickle_features' in msg and '\n' not in msg
    assert not marker.exists()


def test_convert_pickle_features_round_trip(tmp_path):
    pkl, npz = tmp_path / 'img.pkl', tmp_path / 'img.npz'
    feats = {3: np.arange(3.), 5: np.ones(3)}
    pkl.write_bytes(pickle.dumps(feats))
    with pytest.raises(ValueError, match='trust_pickle=True'):
        readers.convert_pickle_features(pkl, npz)
    assert not npz.exists()
    readers.convert_pickle_features(pkl, npz, trust_pickle=True)
    index = {5: 0, 3: 1, 9: 2}
    x, mask = readers.read_feature_file(str(npz), index)
    ref, ref_mask = readers.read_feature_file(str(pkl), index,
                                              trust_pickle=True)
    assert mask.tolist() == [True, True, False]
    assert x.tolist() == [[1, 1, 1], [0, 1, 2], [0, 0, 0]]
    assert x.equal(ref) and mask.equal(ref_mask)


def test_object_npy_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    arr = np.empty((1, 1), dtype=object)
    arr[0, 0] = _Payload(marker)
    np.save(tmp_path / 'img.npy', arr, allow_pickle=True)
    ids = write(tmp_path, 'ids.txt', 'a\n')
    with pytest.raises(DataFormatError, match='img.npy.*without unpickling'):
        readers.read_feature_file(str(tmp_path / 'img.npy'), {'a': 0}, ids)
    assert not marker.exists()


def test_npz_with_string_ids(tmp_path):
    np.savez(tmp_path / 'img.npz', x=np.eye(2, dtype=np.float32),
             ids=np.array(['b', 'a']))
    x, mask = readers.read_feature_file(str(tmp_path / 'img.npz'),
                                        {'a': 0, 'b': 1})
    assert x.tolist() == [[0, 1], [1, 0]] and mask.all()
