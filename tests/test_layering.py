"""The package's layers (ARCHITECTURE.md): no module imports one above it, no import cycles,
and the core loads none of the heavy optional dependencies.

The import graph is read from the source with ``ast`` (every import statement, at module
level or inside a function), so the check needs no import of the modules themselves.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ztensor_array

PACKAGE = Path(ztensor_array.__file__).parent

# Rank of each top-level module or subpackage: a module may import only modules of its own
# rank or below. Names of the target layout that do not exist yet are listed too, so that
# moving code there needs no change here.
RANKS = {
    "constants": 0,
    "errors": 0,
    "dtypes": 1,
    "codecs": 2,
    "interop": 2,
    "attributes": 3,
    "manifest": 3,
    "layouts": 4,  # each format's rules; the validation pass dispatches to them
    "validation": 5,
    "legacy": 6,  # v0.1 manifests, read by the reader
    "files": 6,
    "sources": 6,  # bytes of files that are no local path (URLs, buffers, file objects)
    "reader": 7,
    "writer": 8,  # appends read the manifest through the reader
    "parallel": 9,
    "numpy": 10,
    "torch": 10,  # built on the numpy helpers
    "safe": 10,  # safetensors' safe_open over the reader; torch's load_file uses it
    "backends": 11,
    "api": 12,  # dispatches to the backends
    "ops": 13,
    "convert": 14,
    "cli": 15,
    "__main__": 15,
}
HEAVY = ("torch", "xarray", "dask", "distributed", "scipy", "numcodecs", "zstandard")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    root = PACKAGE.parent
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (anywhere in the file)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == PACKAGE.name:
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    return found


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _rank(module: str) -> int:
    top = module.split(".")[1]
    if top not in RANKS:
        pytest.fail(f"{module} is in no layer: give {top!r} a rank in RANKS")
    return RANKS[top]


def test_no_module_imports_one_above_it():
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module != PACKAGE.name  # the package itself re-exports lazily from every layer
        for target in targets
        if target != PACKAGE.name and _rank(target) > _rank(module)
    ]
    assert not upward, upward


def test_no_import_cycles():
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(module) :] + [module]))
        if module in done:
            return
        for target in sorted(GRAPH.get(module, ())):
            visit(target, trail + [module])
        done.add(module)

    for module in GRAPH:
        visit(module, [])


@pytest.mark.parametrize(
    "module", ["ztensor_array", "ztensor_array.reader", "ztensor_array.writer"]
)
def test_the_core_imports_no_heavy_dependency(module):
    """Reading and writing load none of the optional or slow-to-import dependencies: torch,
    xarray, dask and distributed are optional; scipy, numcodecs and zstandard load when a
    sparse or compressed tensor is met."""
    code = (
        f"import json, sys\nimport {module}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout) == []


def test_spec_map_matches_the_package():
    """SPEC.md §0 lists every top-level module and package of ztensor_array, at the layer
    RANKS gives it (what this file checks the imports against)."""
    spec = (PACKAGE.parent / "SPEC.md").read_text()
    section = spec.split("## 0. Where things are", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for name in cells[1].split(","):
                listed[name.strip().strip("`").removesuffix(".py").rstrip("/")] = int(cells[0])
    present = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert set(listed) == present
    assert {n: RANKS[n] for n in listed} == listed
