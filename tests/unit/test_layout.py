"""The package's shape is part of its design: the data path reads one way, no two
modules import each other (however indirectly), and no module or class grows past
what a reader can hold."""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
BASE = {"errors", "config", "models", "money", "clock", "digest", "wire", "events"}

# what each layer must never import: edge -> actions -> routing -> upstream/state;
# admin (the operator's dashboard and changes) sits beside the edge, which mounts it
FORBIDDEN = {
    "base": {"state", "upstream", "routing", "actions", "edge", "ops", "wiring", "sim", "admin"},
    "state": {"upstream", "routing", "actions", "edge", "ops", "wiring", "sim", "admin"},
    "upstream": {"state", "routing", "actions", "edge", "ops", "wiring", "sim", "admin"},
    "routing": {"actions", "edge", "ops", "wiring", "sim", "admin"},
    "wiring": {"actions", "edge", "ops", "sim", "admin"},
    "actions": {"edge", "ops", "sim", "admin"},
    "admin": {"actions", "edge", "ops", "sim"},
    "edge": {"ops", "sim"},
    "sim": {"state", "upstream", "routing", "actions", "edge", "ops", "wiring", "admin"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "base" if parts[0] in BASE else parts[0]


def _imported(path: Path) -> set[str]:
    """The gateway subpackages or top modules `path` imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gateway" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_data_path_reads_one_way(path: Path) -> None:
    forbidden = FORBIDDEN.get(_layer(path), set())
    assert not (_imported(path) & forbidden), f"{path.name} imports {_imported(path) & forbidden}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno < 200, f"class {node.name} is too long"


def test_only_the_state_package_imports_redis() -> None:
    for path in _modules():
        if _layer(path) in ("state",):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("redis"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("redis") for a in node.names), path


# --- import cycles -------------------------------------------------------------------
# A module's edges go to the modules it names (`from gateway.a import b`: the module
# `gateway.a.b` if there is one, else `gateway.a`), wherever the import is written: at
# the top, inside a function, or as a `module:attr` string an ASGI server imports.
# Imports under `if TYPE_CHECKING:` are for the type checker only and do not count,
# nor does the package `__init__` a submodule's import runs first.

_TARGET = re.compile(r"^(\w+(?:\.\w+)+):\w+$")


def _module_names(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _edges(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The modules of the package `name` imports, each with the line of its first import."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: dict[str, int] = {}

    def named(module: str, attrs: list[str], line: int) -> None:
        for attr in attrs:
            target = f"{module}.{attr}" if f"{module}.{attr}" in modules else module
            if target in modules and target != name:
                out.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.name != name:
                    out.setdefault(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            named(module, [a.name for a in node.names], node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _TARGET.match(node.value)
            if match and match[1] in modules and match[1] != name:
                out.setdefault(match[1], node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def import_cycles(root: Path) -> list[str]:
    """Each import cycle among the modules under `root`, one line naming its modules
    in order with the line of each import: `a (a.py:3) -> b (b.py:9) -> a`."""
    modules = _module_names(root)
    graph = {name: _edges(name, path, modules) for name, path in modules.items()}
    found: list[str] = []
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        # the shortest way back to `start`, if there is one
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue and start not in came_from:
            node = queue.popleft()
            for nxt in sorted(graph[node]):
                if nxt not in came_from:
                    came_from[nxt] = node
                    queue.append(nxt)
        if start not in came_from:
            continue
        ring = [start]
        while came_from[ring[0]] != start:
            ring.insert(0, came_from[ring[0]])
        ring.insert(0, start)
        done.update(ring)
        steps = [f"{a} ({modules[a].relative_to(root.parent)}:{graph[a][b]})"
                 for a, b in zip(ring, ring[1:], strict=False)]
        found.append(" -> ".join([*steps, start]))
    return found


def test_no_module_imports_itself_through_others() -> None:
    cycles = import_cycles(PACKAGE)
    assert not cycles, "import cycles in gateway/:\n" + "\n".join(cycles)


def test_an_import_cycle_is_named_wherever_the_import_is_written(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "ops").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "ops/__init__.py": "",
        "a.py": "from pkg.b import x\n",
        "b.py": "def f():\n    from pkg import a\n",  # inside a function: counts
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import y\n",
        "d.py": "import pkg.c\n",  # c imports d for the type checker only: no cycle
        "ops/cli.py": "from .servers import run\n",
        "ops/servers.py": 'APP = "pkg.ops.cli:app"\n',  # a server's factory string: counts
    }.items():
        (pkg / name).write_text(text)
    assert import_cycles(pkg) == [
        "pkg.a (pkg/a.py:1) -> pkg.b (pkg/b.py:2) -> pkg.a",
        "pkg.ops.cli (pkg/ops/cli.py:1) -> pkg.ops.servers (pkg/ops/servers.py:1) -> pkg.ops.cli",
    ]
