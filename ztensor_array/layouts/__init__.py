"""Logical layouts, one module per manifest `format`.

A layout turns component arrays into the user's value on read: ``read(obj, get, path=...,
name=...)``, where ``get(role)`` returns a component decoded to a 1-D array of its storage
dtype. Layouts never touch files. ``reader_for`` finds the module of a format lazily, so
rarely used layouts cost nothing at import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# format -> (module, function); modules are imported on first use
_READERS: dict[str, tuple[str, str]] = {
    "dense": ("dense", "read_object"),
    "sparse_csr": ("sparse", "read_csr"),
    "sparse_coo": ("sparse", "read_coo"),
    "quantized_group": ("quantized", "read_object"),
    "ggml_quantized": ("ggml", "read_object"),
    "chunked": ("chunked", "read_object"),
}


def register(fmt: str, module: str, function: str = "read_object") -> None:
    """Declare the reader of a format implemented in ``layouts/<module>.py``."""
    _READERS[fmt] = (module, function)


def reader_for(fmt: str) -> Callable | None:
    entry = _READERS.get(fmt)
    if entry is None:
        return None
    module = importlib.import_module(f".{entry[0]}", __name__)
    return getattr(module, entry[1])
