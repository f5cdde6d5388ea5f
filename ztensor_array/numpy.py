"""safetensors-style helpers for NumPy: ``save_file``, ``load_file``, ``save``, ``load``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import attributes as attrs_codec
from . import files
from .reader import Reader
from .writer import Writer


def save_file(
    tensors: Mapping[str, Any],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    compress: bool | int = False,
    *,
    checksum: str | None = None,
    compression: bool | int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write a dict of arrays (numpy, torch, scipy.sparse or array-like) to ``path`` (a
    local path, or an fsspec URL with ``storage_options``: uploaded once complete).

    ``metadata`` becomes the file's global attributes. ``compression`` is the reference's
    spelling of ``compress``.
    """
    if compression is not None:
        compress = compression
    # The arrays stay untouched until we return, so compression can read them in place.
    with Writer(path, copy_inputs=False, storage_options=storage_options) as w:
        if metadata:
            w.attributes.update(attrs_codec.as_mapping(metadata, w.path))
        for name, value in tensors.items():
            if hasattr(value, "tocsr") and hasattr(value, "nnz"):  # scipy.sparse
                w.add_sparse(name, value, compress=compress, checksum=checksum)
            else:
                w.add_tensor(name, value, compress=compress, checksum=checksum)


def load_file(
    path: str | os.PathLike,
    *,
    verify_checksum: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every tensor of the file as an owned, writable numpy array (or scipy.sparse matrix).

    Raw tensors are read with ``preadv`` straight into fresh arrays (no page-cache mapping
    is kept), compressed ones are decoded in parallel. ``path`` may also be anything
    ``Reader`` opens: an fsspec URL (with ``storage_options``), bytes, a file object.
    """
    with Reader(path, storage_options=storage_options) as r:
        return r.to_dict(copy=True, verify_checksum=verify_checksum)


def save(
    tensors: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    compress: bool | int = False,
    *,
    compression: bool | int | None = None,
) -> bytes:
    """The bytes of a .zt file holding ``tensors`` (``compression``: the reference's name)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "buffer.zt")
        save_file(tensors, path, metadata, compress, compression=compression)
        return files.read_file(path)


def load(data: bytes) -> dict[str, np.ndarray]:
    """Tensors from the bytes of a .zt file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "buffer.zt")
        files.write_new(path, data)
        return load_file(path)
