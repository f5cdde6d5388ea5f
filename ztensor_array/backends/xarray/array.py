"""Lazy reading: a variable is a ``ZTensorBackendArray`` that reads only what is indexed.

File handles go through xarray's ``CachingFileManager`` (the contract the netCDF4 and
h5netcdf backends use): one ``Reader`` per opened dataset and process, kept in xarray's LRU
file cache, reopened on demand after eviction, and a manager that pickles as a few names,
so lazy variables travel to distributed workers and open the file there. Every read checks
the file against the ``TensorRef`` the variable was opened with (the rule ``from_ztensor``
follows too): a file that only grew by appends of other objects keeps being read; a path
that now names another file, a file modified in place, or a variable replaced raises.
"""

from __future__ import annotations

import asyncio

import numpy as np
from xarray.backends import BackendArray, CachingFileManager
from xarray.core import indexing

from ... import files as zfiles
from ... import sources
from ...layouts import dense, select
from ...reader import Reader, TensorRef


class _OpenedReader:
    """What the file manager caches: a Reader.

    Closing lets go of the Reader, which closes its file as soon as no read in flight still
    holds it: the cache may drop an entry while another thread reads through it."""

    def __init__(self, path: str, mode: str = "r", verify: bool = False) -> None:
        self.reader = Reader(path, verify=verify)

    def close(self) -> None:
        pass  # the manager forgets this entry; the Reader closes when unreferenced


class ReaderFiles:
    """The per-process Reader of one opened .zt file.

    ``acquire`` reopens when the path now names another file, or the file in another state
    (replaced, rewritten or appended to), so a stale reader never keeps a deleted file's
    space and pages; ``close`` drops the cached reader (the dataset closed), and lazy
    variables still in use reopen the file when next read."""

    __slots__ = ("_manager", "path", "verify")

    def __init__(self, path: str | sources.Target, verify: bool = False) -> None:
        self.path = path  # a local path, or a sources.Target (a URL...): pickles by value
        self.verify = verify
        self._manager = CachingFileManager(_OpenedReader, path, mode="r", kwargs={"verify": verify})

    def __getstate__(self):
        return (self.path, self.verify, self._manager)

    def __setstate__(self, state) -> None:
        self.path, self.verify, self._manager = state

    def acquire(self) -> Reader:
        reader = self._manager.acquire().reader
        if isinstance(self.path, sources.Target):
            # asking a server for the state on every read would cost a request each: a
            # changed object is caught by the reads themselves (ObjectChangedError)
            return reader
        if reader.identity != zfiles.identity(self.path):
            self._manager.close()
            reader = self._manager.acquire().reader
        return reader

    def ref(self, name: str) -> TensorRef:
        """The object as the file holds it now, which the variable's reads will check."""
        return TensorRef.of(self.acquire(), name)

    def close(self) -> None:
        self._manager.close()


def _rebuild_array(files: ReaderFiles, name, file, digest, shape, dtype, char):
    if isinstance(files.path, sources.Target):
        target = files.path
        ref = TensorRef(target.name, name, sources.Version(*file), digest, target)
    else:
        ref = TensorRef(files.path, name, zfiles.FileIdentity(*file), digest)
    return ZTensorBackendArray(files, ref, shape, dtype, char)


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
    """A lazy variable: the file's handle + the object as opened (a ``TensorRef``); reads
    only what is indexed (chunks, or a zero-copy slice of a raw tensor). Pickles without an
    open handle. ``dtype`` may be a compound that the stored complex values are viewed as."""

    __slots__ = ("char", "dtype", "files", "ref", "shape")

    def __init__(self, files: ReaderFiles, ref: TensorRef, shape, dtype, char: bool) -> None:
        self.files = files
        self.ref = ref
        self.shape = tuple(shape)
        self.dtype = np.dtype("S1") if char else np.dtype(dtype)
        self.char = char

    @property
    def name(self) -> str:
        return self.ref.name

    def __reduce__(self):  # small: the ref's path is the handle's, dtypes as text if plain
        ref = self.ref
        dtype = self.dtype if self.dtype.names is not None else self.dtype.str
        state = (ref.name, tuple(ref.file), ref.digest, self.shape, dtype, self.char)
        return _rebuild_array, (self.files, *state)

    def __dask_tokenize__(self):
        # what fixes the data, as for from_ztensor's arrays: the same object of the same file
        # gives the same key, also after the file grew by appends of other objects
        return ("ztensor", *self.ref.token)

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
        """The open reader (checked to still hold the object as opened) and the object."""
        reader = self.ref.check(self.files.acquire())
        return reader, reader.manifest.objects[self.ref.name]

    def _points(self, key: tuple) -> np.ndarray:
        reader, _ = self._current()
        return self._as_dtype(reader.read_points(self.ref.name, key))

    def _as_dtype(self, out: np.ndarray) -> np.ndarray:
        if self.char or self.dtype.names is not None:  # u8 as S1, complex as a compound
            return out.view(self.dtype)
        return out

    def _getitem(self, key: tuple) -> np.ndarray:
        reader, obj = self._current()
        name = self.ref.name
        if obj.format == "chunked":  # only the chunks holding selected elements are decoded
            out = reader.read_slice(name, key)
        elif obj.format == "dense" and reader.target is not None:
            out = reader.read_slice(name, key)  # a remote file: only the selection's bytes
        elif obj.format == "dense" and not self.files.verify:
            # zero-copy and still writable: each read gets its own copy-on-write map, so
            # in-place edits (``ds["v"] += 1``) never reach the file or other reads
            # a small window of a large tensor: only the pages it touches are read
            axes, _ = select.normalize(key, self.shape)
            few = select.scattered(axes, self.shape, self.dtype.itemsize)
            value = dense.read(obj, lambda role: reader.private_view(name, role, scattered=few))
            out = np.asarray(outer_index(value, key))
        else:
            value = reader.read_tensor(name)
            if not isinstance(value, np.ndarray):  # sparse: only the selection is densified
                return _sparse_select(value, key, self.shape)
            out = outer_index(value, key)
            if not out.flags.writeable:  # a view of the file map: hand out an owned copy
                out = np.array(out)
        return self._as_dtype(out)
