"""Logical layouts, one module per manifest `format`, each owning that format's rules.

A layout (``base.Layout``) checks an object's structure when a file opens, knows the decoded
sizes its geometry fixes, names the dtype a read returns, and turns component arrays into
the user's value on read. Layouts never touch files. ``layout_for`` imports the module of a
format on first use, so rarely used layouts cost nothing at import.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..manifest import Object
from .base import Getter, Layout

# format -> (module in this package, Layout class); imported on first use
_BUILTIN: dict[str, tuple[str, str]] = {
    "dense": ("dense", "Dense"),
    "sparse_csr": ("sparse", "SparseCSR"),
    "sparse_coo": ("sparse", "SparseCOO"),
    "quantized_group": ("quantized", "QuantizedGroupLayout"),
    "ggml_quantized": ("ggml", "GGMLQuantized"),
    "chunked": ("chunked", "Chunked"),
    # only in memory, for files opened from v0.1 (never written to a v1 file)
    "legacy_sparse_csr": ("legacy", "LegacyCSR"),
    "legacy_sparse_coo": ("legacy", "LegacyCOO"),
}
_loaded: dict[str, Layout] = {}
_GENERIC = Layout()  # a format this version does not know: no rules, not readable


def layout_for(fmt: str) -> Layout | None:
    """The layout of a format, or None when this version does not know the format."""
    layout = _loaded.get(fmt)
    if layout is None:
        entry = _BUILTIN.get(fmt)
        if entry is None:
            return None
        module = importlib.import_module(f".{entry[0]}", __name__)
        layout = _loaded[fmt] = getattr(module, entry[1])()
    return layout


def register(layout: Layout) -> None:
    """Add (or replace) the layout of ``layout.format``: the seam for formats defined
    outside this package. Their objects are then checked at open and readable."""
    _loaded[layout.format] = layout


def unregister(fmt: str) -> None:
    """Forget a format added by ``register`` (a built-in one reverts to its own layout)."""
    _loaded.pop(fmt, None)


def value_dtype(obj: Object) -> str | None:
    """zTensor dtype name of what reading ``obj`` returns (None if unknown)."""
    return (layout_for(obj.format) or _GENERIC).value_dtype(obj)


def read(obj: Object, get: Getter, *, path=None, name=None) -> Any:
    """The user's value of ``obj`` from its component arrays; UnsupportedError for a format
    this version does not know."""
    return (layout_for(obj.format) or _GENERIC).read(obj, get, path=path, name=name)


def read_selection(
    obj: Object, get: Getter, key: Any, *, path=None, name=None, copy: bool = True
) -> Any:
    """``value[key]`` of ``obj``, reading as little as its layout can."""
    layout = layout_for(obj.format) or _GENERIC
    return layout.read_selection(obj, get, key, path=path, name=name, copy=copy)


def stored_encoding(obj: Object) -> tuple[int, str | None]:
    """(zstd level, digest algorithm) that a partial rewrite of ``obj`` keeps by default."""
    return (layout_for(obj.format) or _GENERIC).stored_encoding(obj)
