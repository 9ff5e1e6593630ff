"""The package's layers import only downward (docs/architecture.md), and nothing imports the sandbox."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fixeduser"
# Lowest first. A module may import its own layer's siblings only where the layer says so (its own
# package, or the leaves), and any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("clipping", "linux", "postgres"),
    ("docker_api",),
    ("policy",),
    ("state",),
    ("plugin",),
    ("authz", "volumes"),
    ("app",),
    ("admin",),
    ("sandbox",),
    ("commands",),
    ("cli",),
    ("__main__",),
)
RANK = {top: rank for rank, layer in enumerate(LAYERS) for top in layer}
SANDBOX_USERS = {"commands/demo.py"}  # `fixeduser demo` runs the sandbox; nothing else in the product may


def _top(module: Path) -> str:
    parts = module.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """Top-level fixeduser packages a module imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fixeduser" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["fixeduser"] and isinstance(node, ast.ImportFrom):
                found.update(alias.name for alias in node.names)
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_go_down(module: Path) -> None:
    """A module imports its own package and the layers below it: never a layer above, never a sibling layer."""
    top = _top(module)
    assert top in RANK, f"{top} is in no layer: add it to LAYERS and to docs/architecture.md"
    for imported in _imports(module) - {top}:
        assert imported in RANK, f"{module.relative_to(SRC)} imports fixeduser.{imported}, which is in no layer"
        assert RANK[imported] < RANK[top], (
            f"{module.relative_to(SRC)} ({top}, layer {RANK[top]}) imports fixeduser.{imported} "
            f"(layer {RANK[imported]}): layers import only downward"
        )
        if imported == "sandbox":
            assert str(module.relative_to(SRC)) in SANDBOX_USERS, f"{module.relative_to(SRC)} imports the sandbox"


def test_every_layer_exists() -> None:
    """Each layer named here is a real package or module, so the table cannot rot."""
    for top in RANK:
        assert (SRC / top).is_dir() or (SRC / f"{top}.py").is_file(), top
