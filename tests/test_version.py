"""One version, defined once (``ricea_pyg.__version__``), seen everywhere."""
import importlib.metadata
import os
import subprocess
import sys
import tomllib

import pytest

import ricea_pyg
from ricea_pyg.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ricea_command():
    # The console script installed next to this interpreter, else the module.
    script = os.path.join(os.path.dirname(sys.executable), 'ricea')
    if os.path.exists(script):
        return [script]
    return [sys.executable, '-m', 'ricea_pyg.cli']


def test_cli_metadata_and_module_agree():
    out = subprocess.run([*_ricea_command(), '--version'], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == f'ricea {ricea_pyg.__version__}'
    assert importlib.metadata.version('ricea-pyg') == ricea_pyg.__version__


def test_version_option_in_process(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--version'])
    assert e.value.code == 0
    assert capsys.readouterr().out.split() == ['ricea', ricea_pyg.__version__]


def test_pyproject_reads_the_version_from_the_package():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        meta = tomllib.load(f)
    assert 'version' not in meta['project']
    assert 'version' in meta['project']['dynamic']
    attr = meta['tool']['setuptools']['dynamic']['version']['attr']
    assert attr == 'ricea_pyg.__version__'


def test_citation_cites_this_version():
    with open(os.path.join(ROOT, 'CITATION.cff'), encoding='utf-8') as f:
        versions = [line.split(':', 1)[1].strip() for line in f
                    if line.startswith('version:')]
    assert versions == [ricea_pyg.__version__]
