"""The package's shape is part of its design: the data path reads one way, and no
module or class grows past what a reader can hold."""

from __future__ import annotations

import ast
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
