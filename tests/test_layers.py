"""The layers import only downward: _messages -> _exceptions -> _core -> _pool -> _rpc -> _sync
-> _adapters -> _cli.

See docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "h2pool"

# Each layer, and the layers it may import from (itself included).
LAYERS = ["_messages", "_exceptions", "_core", "_pool", "_rpc", "_sync", "_adapters", "_cli"]


def layer_of(module: str) -> int | None:
    """The layer index of ``h2pool.<layer>...``; None for the package root or outside it."""
    parts = module.split(".")
    if parts[0] != "h2pool" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` of ``path``, resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from .. import _exceptions" imports a module, named by the alias.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    own = layer_of(module_name(path))
    if own is None:
        return []
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for line, target in imported_modules(path, source or path.read_text())
        if (layer := layer_of(target)) is not None and layer > own
    ]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path: Path) -> None:
    assert upward_imports(path) == []


def test_every_layer_is_checked() -> None:
    layers = {layer_of(module_name(path)) for path in MODULES}
    assert layers >= set(range(len(LAYERS)))


def test_an_upward_import_is_caught() -> None:
    # The check itself must be able to fail: a _core module importing _pool and _adapters.
    probe = PACKAGE / "_core" / "probe.py"
    source = "from .._pool import pool\nfrom .. import _adapters\nimport h2pool._pool.scheduler\n"
    problems = upward_imports(probe, source)
    assert len(problems) == 3
    assert problems[0] == "h2pool/_core/probe.py:1 imports h2pool._pool.pool"
    downward = "from .. import _exceptions\nfrom .headers import HeaderList\nimport asyncio\n"
    assert upward_imports(probe, downward) == []
    assert upward_imports(PACKAGE / "_exceptions.py", "from ._core import errors\n") != []
