"""The engine's modules import one another one way only, and never the
command line.

The graph is read from the source rather than from ``sys.modules``: an
import inside a function postpones a cycle to the first call, it does not
remove it, so every import counts wherever it stands. A package's
``__init__`` is not a step of a cycle with its own submodules: ``from
denoise.engine import backends`` is an edge to ``denoise.engine.backends``,
and a name the package re-exports on first use (its ``_WHERE`` table) is an
edge to the module that defines it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import denoise.engine

ENGINE = "denoise.engine"
CLI = "denoise.cli"
ROOT = Path(denoise.engine.__file__).parent


@dataclass(frozen=True)
class Import:
    """One module named by an import statement, and where."""

    target: str
    where: str  # file:line


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ENGINE, *parts))


def engine_sources() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def lazy_exports(init: Path) -> dict[str, str]:
    """A package's ``_WHERE`` table: the names it imports on first use, by
    the submodule that defines each."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "_WHERE" for target in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imports(name: str, path: Path, sources: dict[str, Path]) -> list[Import]:
    """Every module that ``path`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    nodes = [node for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in sorted(nodes, key=lambda node: node.lineno):
        where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
        if isinstance(node, ast.Import):
            found += [Import(alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, up level - 1
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            exports = lazy_exports(sources[base]) if base in sources \
                and sources[base].name == "__init__.py" else {}
            for alias in node.names:
                if f"{base}.{alias.name}" in sources or f"{base}.{alias.name}".startswith(CLI):
                    found.append(Import(f"{base}.{alias.name}", where))
                elif alias.name in exports:
                    found.append(Import(f"{base}.{exports[alias.name]}", where))
                else:
                    found.append(Import(base, where))
    return found


def graph() -> dict[str, dict[str, str]]:
    """Engine module -> the engine modules it imports -> where (the first
    such import)."""
    sources = engine_sources()
    edges: dict[str, dict[str, str]] = {name: {} for name in sources}
    for name, path in sources.items():
        for found in imports(name, path, sources):
            # ``import denoise.engine.a.b`` names a.b; the longest known prefix
            # is the module that runs.
            target = found.target
            while target and target not in sources:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].setdefault(target, found.where)
    return edges


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle in each group of modules that reach one another (Tarjan's
    strongly connected components), as the modules in import order with the
    first repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return [cycle_within(set(group), edges) for group in groups]


def cycle_within(group: set[str], edges: dict[str, dict[str, str]]) -> list[str]:
    """The shortest path from the group's first module back to itself."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(edges[module]):
                if target == start:
                    return paths[module] + [start]
                if target in group and target not in paths:
                    paths[target] = paths[module] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def described(cycle: list[str], edges: dict[str, dict[str, str]]) -> str:
    steps = [cycle[0]] + [f"-> {target} ({edges[module][target]})"
                          for module, target in zip(cycle, cycle[1:])]
    return " ".join(steps)


def test_the_graph_reads_the_engine_s_imports():
    """The reader itself: it sees imports inside functions and resolves a
    package's re-exports (else an empty graph would pass)."""
    edges = graph()
    assert "denoise.engine.discovery" in edges["denoise.engine.batch"]
    assert "denoise.engine.backends" in edges["denoise.engine.pipeline"]  # from ... import backends
    assert "denoise.engine.dsp" in edges["denoise.engine.vad"]  # inside a function
    assert "denoise.engine.batch" in edges["denoise.engine.selftest"]  # through _WHERE
    assert cycles({"a": {"b": "a:1"}, "b": {"c": "b:1"}, "c": {"a": "c:1"}, "d": {"a": "d:1"}}) \
        == [["a", "b", "c", "a"]]


def test_engine_modules_import_one_another_one_way():
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles in the engine:\n" + "\n".join(
        described(cycle, edges) for cycle in found)


def test_the_engine_does_not_import_the_command_line():
    sources = engine_sources()
    offending = [f"{found.where}: {found.target}"
                 for name, path in sources.items() for found in imports(name, path, sources)
                 if found.target == CLI or found.target.startswith(f"{CLI}.")]
    assert not offending, "the engine imports the command line:\n" + "\n".join(offending)
