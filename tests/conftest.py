import importlib.util
import os
import sys

import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

_HERE = os.path.dirname(os.path.abspath(__file__))
DATA_ROOT = os.environ.get('RICEA_DATA_ROOT', os.path.join(
    _HERE, '..', '..', 'shared', 'data'))


@pytest.fixture(scope='session', autouse=True)
def _isolated_cache(tmp_path_factory):
    """Processed files and name embeddings go to a fresh folder per run."""
    old = os.environ.get('RICEA_CACHE')
    os.environ['RICEA_CACHE'] = str(tmp_path_factory.mktemp('ricea_cache'))
    yield
    if old is None:
        os.environ.pop('RICEA_CACHE', None)
    else:
        os.environ['RICEA_CACHE'] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)


def data_path(*parts):
    """A path under RICEA_DATA_ROOT, or a visible skip when it is absent."""
    path = os.path.join(DATA_ROOT, *parts)
    if not os.path.exists(path):
        pytest.skip(f'real data not found at {path} (set RICEA_DATA_ROOT to '
                    'the folder holding dbp15k/ and fbdb15k/)')
    return path


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as ``bench_<name>`` for a module
    fixture to yield; :func:`unload_benchmark` removes it again."""
    path = os.path.join(_HERE, '..', 'benchmarks', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'bench_{name}', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def unload_benchmark(name: str) -> None:
    sys.modules.pop(f'bench_{name}', None)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA (no GPU on this machine)')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)
