"""The import structure of ``ricea_pyg``, read from the source with :mod:`ast`.

* The graph of package-internal imports executed at import time (module level,
  ``if TYPE_CHECKING:`` blocks excluded) has no cycle.
* No module imports a ``_private`` name, or a ``_private`` module, from
  another package (anywhere in the file, deferred imports included).
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

import ricea_pyg

ROOT = Path(ricea_pyg.__file__).parent
PKG = 'ricea_pyg'


def _module_names() -> Dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob('*.py')):
        parts = (PKG, ) + path.relative_to(ROOT).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


MODULES = _module_names()


def _is_package(name: str) -> bool:
    return MODULES[name].name == '__init__.py'


def _package_of(name: str) -> str:
    return name if _is_package(name) else name.rpartition('.')[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _statements(body: List[ast.stmt], module_level: bool
                ) -> Iterator[ast.stmt]:
    """The statements of :obj:`body`; with :obj:`module_level`, only those
    that run when the module is imported (not inside functions or classes'
    methods, not under ``if TYPE_CHECKING:``)."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            if not module_level:
                yield from _statements(node.body, module_level)
            yield from _statements(node.orelse, module_level)
            continue
        if module_level and isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for field in ('body', 'orelse', 'finalbody', 'handlers'):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _statements(
                    [c for c in children if isinstance(c, ast.AST)],
                    module_level)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = _package_of(module).split('.')
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, module_level: bool
             ) -> Iterator[Tuple[str, Optional[str]]]:
    """``(imported module, imported name or None)`` for each internal
    import of :obj:`module`."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in _statements(tree.body, module_level):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == PKG:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split('.')[0] != PKG:
                continue
            for alias in node.names:
                sub = f'{source}.{alias.name}'
                if sub in MODULES:  # `from pkg import submodule`
                    yield sub, None
                else:
                    yield source, alias.name


def import_graph(module_level: bool = True) -> Dict[str, Set[str]]:
    return {m: {target for target, _ in _imports(m, module_level)
                if target != m}
            for m in MODULES}


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component with more than one module
    (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []

    def visit(v: str):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def private_imports() -> List[str]:
    found = []
    for module in MODULES:
        here = _package_of(module)
        for target, name in _imports(module, module_level=False):
            there = _package_of(target) if target in MODULES else target
            if there == here:
                continue
            private_module = any(p.startswith('_') and p != '__init__'
                                 for p in target.split('.'))
            if private_module or (name is not None and name.startswith('_')
                                  and not name.startswith('__')):
                found.append(f'{module} imports '
                             f'{target}{"." + name if name else ""}')
    return sorted(set(found))


def test_helpers_find_a_cycle_and_resolve_relative_imports():
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]
    assert find_cycles({'a': {'b'}, 'b': set()}) == []
    node = ast.parse('from ..loss import x').body[0]
    assert _absolute('ricea_pyg.nn.projection', node) == 'ricea_pyg.loss'
    assert _absolute('ricea_pyg.nn', node) == 'ricea_pyg.loss'
    # Deferred imports are not import-time edges; TYPE_CHECKING ones neither.
    tree = ast.parse('import a\nif TYPE_CHECKING:\n    import b\n'
                     'def f():\n    import c\n')
    names = [n.names[0].name for n in _statements(tree.body, True)
             if isinstance(n, ast.Import)]
    assert names == ['a']


def test_import_graph_sees_known_edges():
    graph = import_graph()
    assert 'ricea_pyg.nn.fusion.base' in graph['ricea_pyg.nn.fusion.ricea']
    # `from ricea_pyg.nn.fusion import functional as RF` is an edge to the
    # submodule, not to the package.
    assert 'ricea_pyg.nn.fusion.functional' in graph[
        'ricea_pyg.nn.fusion.ricea']


def test_no_import_cycle():
    cycles = find_cycles(import_graph(module_level=True))
    assert not cycles, f'import cycles: {cycles}'


def test_no_import_cycle_through_deferred_imports():
    """An import inside a function hides a cycle from the interpreter, not
    from the design (``loss`` <-> ``nn.fusion.functional`` was one)."""
    cycles = find_cycles(import_graph(module_level=False))
    assert not cycles, f'import cycles: {cycles}'


def test_loss_is_above_nn():
    """``ricea_pyg.loss`` may use ``ricea_pyg.nn``, never the reverse: the
    only edge back is the deferred import of the deprecated ``tcp_*``
    aliases (one release), and nothing under ``nn`` imports the loss module
    at import time."""
    nn = [m for m in MODULES if m.startswith('ricea_pyg.nn')]
    deferred = import_graph(module_level=False)
    assert [m for m in nn if 'ricea_pyg.loss' in deferred[m]] == [
        'ricea_pyg.nn.fusion.functional']
    eager = import_graph(module_level=True)
    assert [m for m in nn if 'ricea_pyg.loss' in eager[m]] == []


def test_no_private_import_from_another_package():
    found = private_imports()
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('source', [
    'from ricea_pyg.datasets.base import _hidden',
    'from ricea_pyg.nn.fusion import _deprecated',
])
def test_private_import_check_can_fail(source, monkeypatch, tmp_path):
    fake = tmp_path / 'fake.py'
    fake.write_text(source + '\n')
    monkeypatch.setitem(MODULES, 'ricea_pyg.fake', fake)
    assert private_imports()[-1:] != [] and any(
        f.startswith('ricea_pyg.fake imports') for f in private_imports())
