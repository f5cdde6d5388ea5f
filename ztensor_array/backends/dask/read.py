"""``from_ztensor``: a Dask array over one tensor of a .zt file, built the way
``dask.array.from_zarr`` builds its own: ``da.from_array`` over a small array-like.

The array-like (``TensorSource``) holds only the path, the tensor name and what identifies the
tensor (the file's device and inode, and a digest of the object's manifest entry), so tasks
pickle small and dask's optimizer fuses the read layer like any ``from_array`` graph. A task
reads through the process's shared ``Reader`` (``reader.shared_reader``): raw dense blocks are
zero-copy views of the file map, chunked tensors decode only the chunks a block touches, and
every dtype and layout comes back exactly as ``Reader.read_tensor`` gives it, with its errors.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from ... import codecs, dtypes, sources
from ...errors import ArgumentTypeError, InvalidArgumentError, ZTensorError
from ...layouts import chunked, sparse
from ...layouts.base import require_known_types
from ...reader import Reader, TensorRef, share

SPARSE_BLOCK_BYTES = 64 << 20  # target bytes of values + indices per CSR row block


class TensorSource:
    """What ``da.from_array`` reads blocks from: ``source[key]`` reads one block through the
    process's shared Reader of the file (``reader.TensorRef``: the data the array was made
    from, or a clear error)."""

    __slots__ = ("dtype", "format", "ref", "shape", "verify")

    def __init__(self, reader: Reader, name: str, verify: bool) -> None:
        meta = reader.metadata(name)
        self.ref = TensorRef.of(reader, name)
        self.shape = tuple(meta.shape)
        self.format = meta.layout
        self.dtype = meta.dtype
        if self.format in ("sparse_csr", "sparse_coo"):  # values read widened (scipy)
            self.dtype = dtypes.to_numpy(sparse.read_dtype(meta.object))
        self.verify = verify

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __dask_tokenize__(self):
        # what fixes the data: the same tensor of the same file gives the same key, also
        # after the file grew by appends
        return ("ztensor", *self.ref.token, self.verify)

    def __getitem__(self, key):
        reader = self.ref.open(verify=self.verify)
        return reader.read_slice(self.ref.name, key, copy=False)


def from_ztensor(
    path: str | os.PathLike,
    tensor: str | None = None,
    chunks: Any = "auto",
    *,
    name: str | None = None,
    inline_array: bool = False,
    verify_checksum: bool = False,
    storage_options: dict[str, Any] | None = None,
):
    """A lazy dask array of one tensor of a .zt file (a dict of every tensor when ``tensor``
    is None), built like ``da.from_zarr``.

    chunks: "auto" follows the stored grid (chunked tensors: one block per stored chunk;
    compressed and other non-raw tensors: one block; raw dense: dask's automatic size);
    anything ``dask.array.from_array`` accepts otherwise (a chunked tensor then decodes only
    the chunks each block touches; a compressed dense tensor is read as one block, then
    rechunked). ``name`` and ``inline_array`` mean what they mean for ``da.from_array``
    (``name=`` alone used to name the tensor: that spelling still works, with a
    DeprecationWarning). ``verify_checksum`` checks the digests of what each block reads (a
    non-chunked tensor is then read as one block, its digest checked once).

    ``path`` may be anything ``Reader`` opens: a local path, an fsspec URL (with
    ``storage_options``: tasks carry the URL and open the file on the worker, its manifest
    fetched once per process), bytes-like contents or an open binary file object (the
    latter only for schedulers in this process).
    """
    if tensor is None and name is not None:
        warnings.warn(
            "from_ztensor(path, name=...) naming the tensor is deprecated: pass it as the "
            "second argument or tensor=...; name= is dask's name of the array",
            DeprecationWarning,
            stacklevel=2,
        )
        tensor, name = name, None
    where = sources.target(path, storage_options)
    if isinstance(where, str):
        where = os.path.abspath(where)
    r = Reader(where)
    try:
        if tensor is None:
            return {
                t: _array(r, t, chunks, None, inline_array, verify_checksum) for t in r.tensor_names
            }
        if not isinstance(tensor, str):
            raise ArgumentTypeError(f"tensor names are text, got {tensor!r}", path=r.path)
        return _array(r, tensor, chunks, name, inline_array, verify_checksum)
    finally:
        if r.target is None:
            r.close()
        else:  # this process's tasks read through it: the manifest is not fetched again
            share(r)


def checked_chunks(chunks, shape, dtype, *, path, name, limit=None):
    """``chunks`` as dask normalizes them for an array of ``shape``; what dask refuses (or
    divides by zero on: a size of 0) is an InvalidArgumentError naming file and object."""
    try:
        return da.core.normalize_chunks(chunks, tuple(shape), limit=limit, dtype=dtype)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        why = "a chunk size of 0 on a non-empty axis" if isinstance(exc, ZeroDivisionError) else exc
        raise InvalidArgumentError(
            f"chunks {chunks!r} do not fit shape {tuple(shape)} ({why})", path=path, obj=name
        ) from None


def _array(r: Reader, tensor: str, chunks, name, inline_array: bool, verify: bool):
    meta = r.metadata(tensor)
    obj = meta.object
    require_known_types(obj, r.path, tensor)
    if not (isinstance(chunks, str) and chunks == "auto"):
        chunks = checked_chunks(chunks, obj.shape, meta.dtype, path=r.path, name=tensor)
    source = TensorSource(r, tensor, verify)
    read_as = _read_chunks(r, tensor, obj, chunks, verify)
    key = name or "from-ztensor-" + tokenize(source, read_as)
    arr = da.from_array(
        source,
        read_as,
        name=key,
        inline_array=inline_array,
        asarray=source.format not in ("sparse_csr", "sparse_coo"),  # blocks stay sparse
        meta=_meta(source),
    )
    sparse = source.format in ("sparse_csr", "sparse_coo")
    if (
        not sparse
        and chunks != "auto"
        and arr.chunks != da.core.normalize_chunks(chunks, arr.shape, dtype=arr.dtype)
    ):
        arr = arr.rechunk(chunks)
    return arr


def _read_chunks(r: Reader, tensor: str, obj, chunks, verify: bool):
    """The blocks a tensor is read in: any ``chunks`` for raw dense tensors (views of the
    map) and chunked ones (blocks decode the chunks they touch); the stored grid for
    chunked ones on "auto"; row blocks of a raw CSR matrix; else one block."""
    shape = tuple(obj.shape)
    if obj.format == "chunked":
        if chunks != "auto":
            return chunks
        grid = chunked.chunk_grid(obj, r.path, tensor)
        return chunked.regular_chunks(shape, grid.chunk_shape)
    if obj.format == "dense" and not verify and _mapped(obj):
        return chunks
    if obj.format == "sparse_csr" and not verify and _mapped(obj):
        return _csr_row_chunks(r, tensor, obj, chunks)
    return tuple((s,) for s in shape)


def _csr_row_chunks(r: Reader, tensor: str, obj, chunks):
    rows, cols = obj.shape
    if rows == 0:
        return ((0,), (cols,))
    if chunks == "auto":
        total = sum(obj.components[role].length for role in ("values", "indices")) or 1
        per = max(1, min(rows, rows * SPARSE_BLOCK_BYTES // total))
        return (da.core.normalize_chunks((per,), (rows,))[0], (cols,))
    norm = da.core.normalize_chunks(chunks, obj.shape, dtype=r.metadata(tensor).dtype)
    if len(norm[1]) != 1:
        raise ZTensorError(
            "sparse CSR tensors are split into row blocks only; give chunks=(rows, -1)",
            path=r.path,
            obj=tensor,
        )
    return norm


def _mapped(obj) -> bool:
    """Whether every component is raw little-endian, so blocks are views of the file map."""
    return all(
        c.encoding == codecs.RAW and c.byte_order == "little" for c in obj.components.values()
    )


def _meta(source: TensorSource):
    """An empty value of the kind a block is (numpy, or scipy.sparse for sparse tensors)."""
    empty = (0,) * len(source.shape)
    if source.format == "sparse_csr":
        import scipy.sparse  # optional heavy dependency: sparse tensors only

        return scipy.sparse.csr_matrix(empty, dtype=source.dtype)
    if source.format == "sparse_coo":
        import scipy.sparse  # optional heavy dependency: sparse tensors only

        if len(empty) == 2:
            return scipy.sparse.coo_matrix(empty, dtype=source.dtype)
        coords = tuple(np.empty(0, np.int64) for _ in empty)
        return scipy.sparse.coo_array((np.empty(0, source.dtype), coords), shape=empty)
    return np.empty(empty, source.dtype)
