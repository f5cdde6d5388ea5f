"""Lazy reading: a variable is a ``ZTensorBackendArray`` that reads only what is indexed.

File handles go through xarray's ``CachingFileManager`` (the contract the netCDF4 and
h5netcdf backends use): one ``Reader`` per opened dataset and process, kept in xarray's LRU
file cache, reopened on demand after eviction, and a manager that pickles as a few names,
so lazy variables travel to distributed workers and open the file there.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
from xarray.backends import BackendArray, CachingFileManager
from xarray.core import indexing

from ...errors import MissingFileError, ZTensorError
from ...layouts import dense
from ...reader import Reader


def file_identity(path: str) -> tuple:
    """What tells two files at one path apart: device, inode, size and modification time."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError("no such file", path=path) from None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _OpenedReader:
    """What the file manager caches: a Reader and the identity of the file it opened.

    Closing lets go of the Reader, which closes its file as soon as no read in flight still
    holds it: the cache may drop an entry while another thread reads through it."""

    def __init__(self, path: str, mode: str = "r", verify: bool = False) -> None:
        self.ident = file_identity(path)
        self.reader = Reader(path, verify=verify)

    def close(self) -> None:
        pass  # the manager forgets this entry; the Reader closes when unreferenced


class ReaderFiles:
    """The per-process Reader of one opened .zt file.

    ``acquire`` reopens when the path now names another file (replaced, rewritten or
    appended to), so a stale reader never keeps a deleted file's space and pages;
    ``close`` drops the cached reader (the dataset closed), and lazy variables still in
    use reopen the file when next read. ``ident``: the file's identity when first opened,
    which names lazy variables in dask graphs."""

    __slots__ = ("_manager", "ident", "path", "verify")

    def __init__(self, path: str, verify: bool = False) -> None:
        self.path = path
        self.verify = verify
        self._manager = CachingFileManager(_OpenedReader, path, mode="r", kwargs={"verify": verify})
        self.ident = self._manager.acquire().ident

    def __getstate__(self):
        return (self.path, self.verify, self.ident, self._manager)

    def __setstate__(self, state) -> None:
        self.path, self.verify, self.ident, self._manager = state

    def acquire(self) -> Reader:
        opened = self._manager.acquire()
        if opened.ident != file_identity(self.path):
            self._manager.close()
            opened = self._manager.acquire()
        return opened.reader

    def close(self) -> None:
        self._manager.close()


def outer_index(array, key: tuple) -> np.ndarray:
    """Apply an outer (orthogonal) key of slices, ints and int arrays to a numpy array.

    Slices of a raw tensor stay zero-copy, read-only views of the file map (which lives
    as long as they do); array keys copy."""
    basic = tuple(k if isinstance(k, slice | int | np.integer) else slice(None) for k in key)
    out = array[basic]
    axis = 0
    for k in key:
        if isinstance(k, int | np.integer):
            continue
        if not isinstance(k, slice):
            out = np.take(out, np.asarray(k), axis=axis)
        axis += 1
    return out


def _sparse_select(matrix, key: tuple, shape) -> np.ndarray:
    """An outer selection of a scipy.sparse matrix as a dense array (2-D: rows, then
    columns are cut before densifying; other ranks densify whole)."""
    if len(shape) != 2 or not hasattr(matrix, "tocsr"):
        dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return np.asarray(outer_index(dense.reshape(shape), key))
    as_range = [slice(int(k), int(k) + 1) if isinstance(k, int | np.integer) else k for k in key]
    part = matrix.tocsr()[as_range[0], :][:, as_range[1]]
    out = np.asarray(part.toarray())
    drop = tuple(i for i, k in enumerate(key) if isinstance(k, int | np.integer))
    return out.squeeze(axis=drop) if drop else out


class ZTensorBackendArray(BackendArray):
    """A lazy variable: the file's handle + object name; reads only what is indexed
    (chunks, or a zero-copy slice of a raw tensor). Pickles without an open handle."""

    __slots__ = ("char", "dtype", "files", "name", "shape")

    def __init__(self, files: ReaderFiles, name: str, shape, dtype, char: bool) -> None:
        self.files = files
        self.name = name
        self.shape = tuple(shape)
        self.dtype = np.dtype("S1") if char else np.dtype(dtype)
        self.char = char

    def __reduce__(self):
        return type(self), (self.files, self.name, self.shape, self.dtype.str, self.char)

    def __dask_tokenize__(self):
        return ("ztensor", self.files.ident, self.name)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        if isinstance(key, indexing.VectorizedIndexer):  # point-wise: only chunks with points
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.VECTORIZED, self._points
            )
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem
        )

    async def async_getitem(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return await asyncio.to_thread(self.__getitem__, key)

    def _current(self):
        """The open reader and the variable's object, refusing one that changed shape."""
        reader = self.files.acquire()
        obj = reader.manifest.objects.get(self.name)
        if obj is None or tuple(obj.shape) != self.shape:
            raise ZTensorError(
                "variable changed or vanished since the file was opened (reopen it)",
                path=self.files.path,
                obj=self.name,
            )
        return reader, obj

    def _points(self, key: tuple) -> np.ndarray:
        reader, _ = self._current()
        out = reader.read_points(self.name, key)
        return out.view("S1") if self.char else out

    def _getitem(self, key: tuple) -> np.ndarray:
        reader, obj = self._current()
        if obj.format == "chunked":  # only the chunks holding selected elements are decoded
            out = reader.read_slice(self.name, key)
        elif obj.format == "dense" and not self.files.verify:
            # zero-copy and still writable: each read gets its own copy-on-write map, so
            # in-place edits (``ds["v"] += 1``) never reach the file or other reads
            value = dense.read(obj, lambda role: reader.private_view(self.name, role))
            out = np.asarray(outer_index(value, key))
        else:
            value = reader.read_tensor(self.name)
            if not isinstance(value, np.ndarray):  # sparse: only the selection is densified
                return _sparse_select(value, key, self.shape)
            out = outer_index(value, key)
            if not out.flags.writeable:  # a view of the file map: hand out an owned copy
                out = np.array(out)
        if self.char:
            out = out.view("S1")
        return out
