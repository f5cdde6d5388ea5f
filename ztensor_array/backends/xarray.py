"""xarray backend: ``xr.open_dataset(path, engine="ztensor")`` and ``to_ztensor`` for Datasets.

One zTensor object per variable (coordinates included). xarray's own CF machinery does all
the encoding work (times, fill values, scale/offset, strings as CF character arrays); this
module only maps encoded variables onto objects and back. See SPEC.md, "xarray mapping".

Reading is lazy: each variable is a ``ZTensorBackendArray`` that remembers only the path,
the object name and the file's identity, and opens a (per-process, cached) ``Reader`` when
indexed, so it pickles cleanly and works on distributed workers. Writing goes through
``ZTensorStore`` (an ``AbstractWritableDataStore``) and the core ``Writer``; a failed write
never leaves a half-written file behind.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
from xarray.backends.common import (
    AbstractDataStore,
    BackendArray,
    BackendEntrypoint,
    WritableCFDataStore,
    _normalize_path,
)
from xarray.backends.store import StoreBackendEntrypoint
from xarray.coding import strings
from xarray.core import indexing
from xarray.core.utils import FrozenDict, close_on_error
from xarray.core.variable import Variable

from .. import dtypes
from ..attributes import private_copy
from ..codecs.policy import normalize_checksum, normalize_compress
from ..constants import MAGICS
from ..errors import FileExistsZTError, MissingFileError, ZTensorError
from ..layouts.base import require_known_types
from ..reader import Reader
from ..writer import Writer

# Reserved object attribute keys (see SPEC.md, "xarray mapping").
DIMS_KEY = "_ARRAY_DIMENSIONS"  # list of dimension names, one per axis
ATTR_DTYPES_KEY = "_xarray_attr_dtypes"  # attr name -> numpy dtype of numpy-typed attrs
CHAR_KEY = "_xarray_char"  # true: u8 storage holds CF character (S1) data
# Reserved global attribute: {group path: {"attrs": {...}, "dtypes": {...}}} for subgroups.
GROUPS_KEY = "_xarray_groups"
CHUNK_GRID_KEY = "chunk_grid"  # the chunked layout's own attribute (layouts.chunked.CHUNK_GRID_KEY)
_RESERVED_OBJ = frozenset({DIMS_KEY, ATTR_DTYPES_KEY, CHAR_KEY, CHUNK_GRID_KEY})
_RESERVED_ROOT = frozenset({GROUPS_KEY, ATTR_DTYPES_KEY})

_WRITE_MODES = ("w", "w-", "a", "a-", "r+")

# encoding keys the writer understands; others that xarray or other backends leave behind
# are ignored unless the user passed them explicitly
_VALID_ENCODING = frozenset({"compress", "level", "chunks", "checksum", "preferred_chunks"})
_IGNORED_ENCODING = frozenset(
    {
        "source",
        "original_shape",
        "dtype",
        "coordinates",
        "zlib",
        "complevel",
        "compression",
        "compression_opts",
        "shuffle",
        "fletcher32",
        "contiguous",
        "chunksizes",
        "compressor",
        "compressors",
        "filters",
        "serializer",
        "endian",
        "least_significant_digit",
        "write_empty_chunks",
        "shards",
        "fill_value",
        "szip_coding",
        "szip_pixels_per_block",
        "quantize_mode",
        "significant_digits",
        "blosc_shuffle",
        "_FillValue",
        "missing_value",
    }
)


# --------------------------------------------------------------------------- attributes


def _plain(value: Any, where: str) -> Any:
    """Nested attr value with numpy scalars/arrays replaced by Python values (no dtypes)."""
    if isinstance(value, np.ndarray | np.generic):
        return _plain(value.tolist(), where)
    if isinstance(value, Mapping):
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, str | bytes | bool | int | float):
        return value
    raise ZTensorError(
        f"attribute {where!r} has a value of type {type(value).__name__} that cannot be "
        "stored (use bool, int, float, str, bytes, lists, dicts or numpy values)"
    )


def encode_attrs(attrs: Mapping[Hashable, Any], where: str) -> tuple[dict, dict]:
    """(CBOR-ready attrs, {name: numpy dtype string}) for numpy-typed top-level values."""
    out: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise ZTensorError(f"attribute names must be text, got {key!r} on {where!r}")
        if isinstance(value, np.ndarray | np.generic):
            arr = np.asarray(value)
            if arr.dtype.kind in "Mm":
                out[key] = arr.view("i8").tolist()
            elif arr.dtype.kind in "biuf":
                out[key] = arr.tolist()
            else:
                out[key] = _plain(arr.tolist(), f"{where}.{key}")
                if arr.dtype.kind not in "US":
                    continue
            types[key] = arr.dtype.str
        else:
            out[key] = _plain(value, f"{where}.{key}")
    return out, types


def decode_attrs(stored: Mapping[str, Any], types: Mapping[str, str] | None) -> dict:
    out = dict(stored)
    for key, dt in (types or {}).items():
        if key not in out:
            continue
        try:
            dtype = np.dtype(dt)
            if dtype.kind in "Mm":
                arr = np.asarray(out[key], dtype="i8").view(dtype)
            else:
                arr = np.asarray(out[key], dtype=dtype)
        except (TypeError, ValueError):
            continue  # a foreign writer's attribute: keep it as stored
        out[key] = arr[()] if arr.ndim == 0 else arr
    return out


# --------------------------------------------------------------------------- reading


class _ReaderCache:
    """Per-process Readers keyed by the file's identity, so a rewritten file is reopened
    and concurrent threads share one mmap. Evicted readers close when unreferenced.

    A reader is dropped as soon as its path names another file, and when the dataset that
    opened it closes: a cached reader keeps its file open, so a deleted or replaced file
    would otherwise keep its disk space and page cache until 64 other files were opened."""

    def __init__(self, size: int = 64) -> None:
        self._lock = threading.Lock()
        self._readers: OrderedDict[tuple, Reader] = OrderedDict()
        self._size = size

    def get(self, path: str, verify: bool = False) -> tuple[Reader, tuple]:
        ident = _identity(path)
        key = (ident, verify)
        with self._lock:
            reader = self._readers.get(key)
            if reader is not None:
                self._readers.move_to_end(key)
                return reader, ident
        reader = Reader(path, verify=verify)
        with self._lock:
            for stale in [k for k in self._readers if k[0][0] == path and k[0] != ident]:
                del self._readers[stale]
            self._readers[key] = reader
            while len(self._readers) > self._size:
                self._readers.popitem(last=False)
        return reader, ident

    def forget(self, ident: tuple) -> None:
        """Drop the readers of one file (lazy variables still open reopen it when read)."""
        with self._lock:
            for key in [k for k in self._readers if k[0] == ident]:
                del self._readers[key]


_READERS = _ReaderCache()


def _identity(path: str) -> tuple:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError("no such file", path=path) from None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _outer_index(array, key: tuple) -> np.ndarray:
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


def _read_chunked(reader: Reader, obj, name: str, key: tuple) -> np.ndarray:
    """Outer selection of a chunked object, decoding only the chunks it touches: array
    keys are first covered by a slice, then picked from the (smaller) result."""
    from ..layouts import chunked

    covering = []
    picks = []
    for k in key:
        if isinstance(k, slice | int | np.integer):
            covering.append(k)
            if isinstance(k, slice):
                picks.append(slice(None))
        else:
            k = np.asarray(k)
            lo = int(k.min()) if k.size else 0
            hi = int(k.max()) + 1 if k.size else 0
            covering.append(slice(lo, hi))
            picks.append(k - lo)
    out = chunked.read_region(
        obj,
        lambda role: reader.read_component(name, role),
        tuple(covering),
        path=reader.path,
        name=name,
    )
    if any(not isinstance(p, slice) for p in picks):
        out = _outer_index(out, tuple(picks))
    return out


def _sparse_select(matrix, key: tuple, shape) -> np.ndarray:
    """An outer selection of a scipy.sparse matrix as a dense array (2-D: rows, then
    columns are cut before densifying; other ranks densify whole)."""
    if len(shape) != 2 or not hasattr(matrix, "tocsr"):
        dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return np.asarray(_outer_index(dense.reshape(shape), key))
    as_range = [slice(int(k), int(k) + 1) if isinstance(k, int | np.integer) else k for k in key]
    part = matrix.tocsr()[as_range[0], :][:, as_range[1]]
    out = np.asarray(part.toarray())
    drop = tuple(i for i, k in enumerate(key) if isinstance(k, int | np.integer))
    return out.squeeze(axis=drop) if drop else out


class ZTensorBackendArray(BackendArray):
    """A lazy variable: path + object name; reads only what is indexed (chunks, or a
    zero-copy slice of a raw tensor). Holds no open handle in its pickled state."""

    __slots__ = ("char", "dtype", "ident", "name", "path", "shape", "verify")

    def __init__(
        self,
        path: str,
        name: str,
        shape,
        dtype,
        ident: tuple,
        char: bool,
        verify: bool = False,
    ) -> None:
        self.verify = verify
        self.path = path
        self.name = name
        self.shape = tuple(shape)
        self.dtype = np.dtype("S1") if char else np.dtype(dtype)
        self.ident = ident
        self.char = char

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __dask_tokenize__(self):
        return ("ztensor", self.ident, self.name)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem
        )

    async def async_getitem(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        import asyncio

        return await asyncio.to_thread(self.__getitem__, key)

    def _getitem(self, key: tuple) -> np.ndarray:
        reader, _ = _READERS.get(self.path, self.verify)
        obj = reader.manifest.objects.get(self.name)
        if obj is None or tuple(obj.shape) != self.shape:
            raise ZTensorError(
                "variable changed or vanished since the file was opened (reopen it)",
                path=self.path,
                obj=self.name,
            )
        if obj.format == "chunked":
            out = _read_chunked(reader, obj, self.name, key)
        elif obj.format == "dense" and not self.verify:
            # zero-copy and still writable: each read gets its own copy-on-write map, so
            # in-place edits (``ds["v"] += 1``) never reach the file or other reads
            from ..layouts import dense

            value = dense.read(obj, lambda role: reader.private_view(self.name, role))
            out = np.asarray(_outer_index(value, key))
        else:
            value = reader.read_tensor(self.name)
            if not isinstance(value, np.ndarray):  # sparse: only the selection is densified
                return _sparse_select(value, key, self.shape)
            out = _outer_index(value, key)
            if not out.flags.writeable:  # a view of the file map: hand out an owned copy
                out = np.array(out)
        if self.char:
            out = out.view("S1")
        return out


class ZTensorStore(WritableCFDataStore):
    """xarray data store over one .zt file (one group of it, groups being name prefixes).

    Read with mode "r"; write with "w" (replace), "w-" (create, fail if it exists), "a"
    (add/overwrite variables, append along ``append_dim``; creates the file if missing),
    "a-" (like "a" but never rewrites variables lacking ``append_dim``) or "r+" (only
    existing variables, e.g. region writes). Writes become visible on ``close()``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "r",
        *,
        group: str | None = None,
        append_dim: Hashable | None = None,
        write_region: Mapping[Hashable, slice] | None = None,
        root: ZTensorStore | None = None,
        verify: bool = False,
    ) -> None:
        if mode != "r" and mode not in _WRITE_MODES:
            raise ValueError(f"mode must be 'r' or one of {_WRITE_MODES}, got {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        self.group = _norm_group(group)
        self._append_dim = append_dim
        self._write_region = write_region
        self._root = root
        self.verify = verify
        # names open_dataset(drop_variables=...) will drop: never built, so a variable this
        # version cannot read (a logical type of a newer writer) can be left out
        self.skip: frozenset[str] = frozenset()
        if root is not None:  # a child store shares the root's file state
            self._existing = root._existing
            self._ident = root._ident
            self._writer = root._writer
            self._written = root._written
            self._global = root._global
            self._reader = root._reader
            return
        self._existing: dict = {}
        self._ident: tuple | None = None
        self._writer: Writer | None = None
        self._written: dict[str, Variable] = {}
        self._global: dict[str, Any] = {}  # decoded root attrs as stored
        self._reader: Reader | None = None
        exists = os.path.exists(self.path)
        if mode == "r" or (mode in ("a", "a-", "r+") and exists):
            reader, self._ident = _READERS.get(self.path)
            self._reader = reader
            self._existing = dict(reader.manifest.objects)
            self._global = reader.attributes
        elif mode == "r+":
            raise MissingFileError("no such file (mode='r+' needs an existing file)", path=path)
        if mode == "w-" and exists:
            raise FileExistsZTError("path exists (mode='w-')", path=self.path)

    def __getstate__(self):
        if self.mode != "r":
            raise TypeError("a ZTensorStore open for writing cannot be pickled")
        return {"path": self.path, "group": self.group, "verify": self.verify}

    def __setstate__(self, state) -> None:
        self.__init__(state["path"], "r", group=state["group"], verify=state["verify"])

    @classmethod
    def open(
        cls, path: str | os.PathLike, mode: str = "r", *, group: str | None = None, **kwargs
    ) -> ZTensorStore:
        return cls(path, mode, group=group, **kwargs)

    def get_child_store(self, group: str) -> ZTensorStore:
        child = _join_group(self.group, group)
        return type(self)(
            self.path,
            self.mode,
            group=child,
            append_dim=self._append_dim,
            write_region=self._write_region,
            root=self._root or self,
            verify=self.verify,
        )

    # ------------------------------------------------------------------ reading

    def _names(self) -> dict[str, str]:
        """variable name -> object name for this group (written ones included)."""
        prefix = "" if self.group == "/" else self.group.strip("/") + "/"
        out = {}
        for full in list(self._existing) + list(self._written):
            if prefix and not full.startswith(prefix):
                continue
            rest = full[len(prefix) :]
            if "/" in rest:
                continue
            out[rest] = full
        return out

    def _object_dims(self, name: str, obj) -> tuple[str, ...]:
        attrs = obj.attributes or {}
        dims = attrs.get(DIMS_KEY)
        if isinstance(dims, list) and len(dims) == len(obj.shape):
            return tuple(str(d) for d in dims)
        return tuple(f"dim_{i}" for i in range(len(obj.shape)))

    def open_store_variable(self, name: str, full: str) -> Variable:
        if full in self._written:
            return self._written[full]
        obj = self._existing[full]
        # a deep copy: the parsed manifest is shared by every reader of the same file
        stored = private_copy(dict(obj.attributes or {}))
        char = bool(stored.get(CHAR_KEY))
        dims = self._object_dims(name, obj)
        attrs = decode_attrs(
            {k: v for k, v in stored.items() if k not in _RESERVED_OBJ},
            stored.get(ATTR_DTYPES_KEY),
        )
        require_known_types(obj, self.path, full)
        dtype = _object_dtype(obj)
        array = ZTensorBackendArray(
            self.path, full, obj.shape, dtype, self._ident, char, self.verify
        )
        encoding: dict[str, Any] = {"dtype": array.dtype}
        comps = list(obj.components.values())
        if comps and all(c.encoding == "zstd" for c in comps):
            encoding["compress"] = True
        digests = {c.digest.split(":")[0] for c in comps if c.digest}
        if len(digests) == 1:
            encoding["checksum"] = digests.pop()
        chunk_shape = _chunk_shape(obj)
        if chunk_shape is not None:
            encoding["chunks"] = chunk_shape
            encoding["preferred_chunks"] = dict(zip(dims, chunk_shape))
        return Variable(dims, indexing.LazilyIndexedArray(array), attrs, encoding)

    def get_variables(self):
        names = self._names()
        out = {}
        for name, full in names.items():
            if name not in self.skip:
                out[name] = self.open_store_variable(name, full)
        skipped = [
            dict(zip(self._object_dims(n, self._existing[f]), self._existing[f].shape))
            for n, f in names.items()
            if n in self.skip and f not in self._written and f in self._existing
        ]
        _fix_default_dims(out, self._existing, names, skipped)
        return FrozenDict(out)

    def get_attrs(self):
        if self.group == "/":
            stored = {k: v for k, v in self._global.items() if k not in _RESERVED_ROOT}
            return FrozenDict(decode_attrs(stored, self._global.get(ATTR_DTYPES_KEY)))
        entry = (self._global.get(GROUPS_KEY) or {}).get(self.group) or {}
        return FrozenDict(decode_attrs(entry.get("attrs") or {}, entry.get("dtypes")))

    def get_dimensions(self):
        dims: dict[str, int] = {}
        for v in self.get_variables().values():
            for d, n in v.sizes.items():
                dims.setdefault(d, n)
        return FrozenDict(dims)

    def get_encoding(self):
        return {}

    def groups(self) -> list[str]:
        """Every group path in the file ("/" first), from object names and group attrs."""
        found = {"/"}
        for full in list(self._existing) + list(self._written):
            parts = full.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                found.add("/" + "/".join(parts[:i]))
        found.update((self._global.get(GROUPS_KEY) or {}).keys())
        return sorted(found, key=lambda g: (g.count("/") if g != "/" else 0, g))

    # ------------------------------------------------------------------ writing

    def _ensure_writer(self) -> Writer:
        root = self._root or self
        if root._writer is None:
            if self.mode == "r":
                raise ZTensorError("store is open read-only", path=self.path)
            if self.mode in ("a", "a-", "r+") and root._ident is not None:
                root._writer = Writer(self.path, "a")
            else:
                root._writer = Writer(self.path, "x" if self.mode == "w-" else "w")
                if root._global:
                    root._writer.attributes = dict(root._global)
            self._writer = root._writer
        self._writer = root._writer
        return root._writer

    def encode_variable(self, variable, name=None):
        for coder in (
            strings.EncodedStringCoder(allows_unicode=False),
            strings.CharacterArrayCoder(),
        ):
            variable = coder.encode(variable, name=name)
        return variable

    def encode_attribute(self, a):
        return a

    def set_dimension(self, dim, length, is_unlimited):
        pass  # dimensions live in each object's attributes

    def set_attributes(self, attributes):
        root = self._root or self
        writer = self._ensure_writer()
        values, types = encode_attrs(attributes, self.group)
        if self.group == "/":
            keep = {k: v for k, v in writer.attributes.items() if k in _RESERVED_ROOT}
            merged = (
                dict(values)
                if self.mode in ("w", "w-")
                else {
                    **{k: v for k, v in writer.attributes.items() if k not in _RESERVED_ROOT},
                    **values,
                }
            )
            old_types = {} if self.mode in ("w", "w-") else dict(keep.get(ATTR_DTYPES_KEY) or {})
            old_types.update(types)
            merged.update({k: v for k, v in keep.items() if k == GROUPS_KEY})
            if old_types:
                merged[ATTR_DTYPES_KEY] = old_types
            writer.attributes = merged
        else:
            groups = dict(writer.attributes.get(GROUPS_KEY) or {})
            groups[self.group] = {"attrs": values, "dtypes": types}
            writer.attributes = {**writer.attributes, GROUPS_KEY: groups}
        root._global = writer.attributes

    def store(
        self,
        variables,
        attributes,
        check_encoding_set=frozenset(),
        writer=None,
        unlimited_dims=None,
    ):
        """Encode and write variables, validating appends/regions before any byte moves."""
        if writer is None:
            from xarray.backends.common import ArrayWriter

            writer = ArrayWriter()
        encoded, attributes, _ = self._prepare(variables, attributes)
        if self.mode not in ("r", "r+"):
            self.set_attributes(attributes)
        self.set_variables(encoded, check_encoding_set, writer, unlimited_dims=unlimited_dims)

    def _prepare(self, variables, attributes):
        """(encoded variables, encoded attrs, names of existing ones): CF-encodes new
        variables, and existing ones with their stored encoding, refusing mismatches."""
        from xarray import conventions

        names = self._names()
        existing = {vn for vn in variables if _var_name(vn) in names and self.mode != "w"}
        if self.mode == "r+":
            new = [k for k in variables if _var_name(k) not in names]
            if new:
                raise ValueError(
                    f"dataset contains non-pre-existing variables {new!r}, which is not "
                    "allowed with mode='r+'. To allow writing new variables, use mode='a'."
                )
        if self._append_dim is not None:
            dims = set(self.get_dimensions())
            if self._append_dim not in dims:
                raise ValueError(
                    f"append_dim={self._append_dim!r} does not match any existing dataset "
                    f"dimensions {dict(self.get_dimensions())}"
                )
        if self.mode != "w":
            self._check_dimension_sizes(variables)
        encoded, attributes = self.encode(
            {vn: variables[vn] for vn in variables if vn not in existing}, attributes
        )
        if existing:
            stored, _, _ = conventions.decode_cf_variables(
                {
                    vn: self.open_store_variable(_var_name(vn), names[_var_name(vn)])
                    for vn in existing
                },
                {},
            )
            with_enc = {}
            for vn in existing:
                _check_append_dtype(vn, stored[vn], variables[vn])
                v = variables[vn].copy(deep=False)
                v.encoding = {
                    k: val for k, val in stored[vn].encoding.items() if k != "preferred_chunks"
                }
                with_enc[vn] = v
            enc_existing, _ = self.encode(with_enc, {})
            for vn in existing:
                encoded[vn] = _check_existing_dims(
                    vn,
                    enc_existing[vn],
                    self.open_store_variable(_var_name(vn), names[_var_name(vn)]),
                    self._write_region,
                    self._append_dim,
                )
        if self.mode == "a-" and self._append_dim is not None:
            encoded = {
                k: v for k, v in encoded.items() if k not in existing or self._append_dim in v.dims
            }
        return encoded, attributes, existing

    def _check_dimension_sizes(self, variables) -> None:
        """Refuse, before writing anything, data whose sizes clash with the file's."""
        stored = self.get_dimensions()
        region = self._write_region or {}
        for v in variables.values():
            for d, n in v.sizes.items():
                if d == self._append_dim or d in region or d not in stored:
                    continue
                if stored[d] != n:
                    raise ValueError(
                        f"Unable to update size for existing dimension {d!r} "
                        f"({n} != {stored[d]}); only append_dim can grow"
                    )

    def set_variables(self, variables, check_encoding_set, writer, unlimited_dims=None):
        w = self._ensure_writer()
        names = self._names()
        prefix = "" if self.group == "/" else self.group.strip("/") + "/"
        for vn, v in variables.items():
            name = _var_name(vn)
            if "/" in name:
                raise ValueError(
                    f"variable name {name!r} contains '/', which zTensor uses for groups"
                )
            full = prefix + name
            enc = _extract_encoding(v, raise_on_invalid=vn in check_encoding_set, name=name)
            attrs = self._object_attributes(name, v)
            existing = self.mode != "w" and name in names and full in self._existing
            region = _region_for(v.dims, self._write_region)
            if existing and self._append_dim is not None and self._append_dim in v.dims:
                target = _AppendTarget(self, w, full, v, attrs, enc)
                region = None
            elif existing and self._write_region:
                target = _RegionTarget(self, w, full, v)
            else:
                if existing or full in w._objects:
                    w.remove(full)
                target = _NewTarget(self, w, full, v, attrs, enc)
                region = None
            self._written[full] = v
            writer.add(v.data, target, region)

    def _object_attributes(self, name: str, v: Variable) -> dict:
        clash = _RESERVED_OBJ.intersection(v.attrs)
        if clash:
            raise ValueError(f"variable {name!r} uses reserved attribute names {sorted(clash)}")
        attrs = dict(v.attrs)
        for key in ("_FillValue", "missing_value"):
            # like netCDF, fill values take the variable's own dtype
            if key in attrs and v.dtype.kind in "biuf" and not isinstance(attrs[key], np.ndarray):
                try:
                    attrs[key] = np.array(attrs[key], dtype=v.dtype)[()]
                except (OverflowError, TypeError, ValueError):
                    pass
        values, types = encode_attrs(attrs, name)
        values[DIMS_KEY] = [str(d) for d in v.dims]
        if types:
            values[ATTR_DTYPES_KEY] = types
        if v.dtype == np.dtype("S1"):
            values[CHAR_KEY] = True
        return values

    def sync(self) -> None:
        pass

    def close(self) -> None:
        """Finalize pending writes (making them visible) or abort them on failure."""
        if self._root is not None:
            return
        writer, self._writer = self._writer, None
        if writer is not None and not writer._done:
            writer.finalize()
        if self.mode == "r" and self._ident is not None:
            _READERS.forget(self._ident)

    def abort(self) -> None:
        root = self._root or self
        writer, root._writer = root._writer, None
        if writer is not None:
            writer.abort()


# --------------------------------------------------------------------------- write targets


def _storage_array(name: str, data: np.ndarray) -> np.ndarray:
    """The array as zTensor can store it: CF char data as u8, anything else must map."""
    data = np.asarray(data)
    if data.dtype.kind == "S" and data.dtype.itemsize == 1:
        return data.view(np.uint8)
    if data.dtype.kind in "OUSTV":
        raise ZTensorError(
            f"variable {name!r} has dtype {data.dtype}, which has no zTensor representation "
            "(strings are stored as CF character arrays; convert objects to a fixed dtype)"
        )
    try:
        dtypes.from_numpy(data.dtype)
    except ZTensorError as exc:
        raise ZTensorError(f"variable {name!r}: {exc.reason}") from None
    return data


class _NewTarget:
    """A variable written whole; numpy data at once, dask data block by block."""

    def __init__(self, store, writer: Writer, full: str, v: Variable, attrs, enc) -> None:
        self.store = store
        self.writer = writer
        self.full = full
        self.shape = v.shape
        self.dtype = v.dtype
        self.attrs = attrs
        self.enc = enc

    def __setitem__(self, key, value) -> None:
        data = _storage_array(self.full, value)
        self.writer.add_tensor(
            self.full,
            data,
            compress=self.enc["compress"],
            checksum=self.enc["checksum"],
            attributes=self.attrs,
        )

    def write_blocks(self, source) -> None:
        """Stream a dask array slab by slab along axis 0 (never holding it whole)."""
        dtype = np.dtype("u1") if self.dtype == np.dtype("S1") else self.dtype
        _storage_array(self.full, np.empty(0, self.dtype))
        with self.writer.stream_tensor(
            self.full,
            self.shape,
            dtype,
            compress=self.enc["compress"],
            checksum=self.enc["checksum"],
            attributes=self.attrs,
        ) as stream:
            for slab in _slabs(source):
                stream.write(_storage_array(self.full, slab))


class _AppendTarget:
    """Grow an existing variable along ``append_dim`` in memory bounded by a block rather
    than the variable. A chunked object gets new blobs for the chunks past its old end
    along that axis (and for the partial edge chunk it merges into); every other chunk
    keeps its blob. A dense object is streamed into a new blob: stored row blocks
    followed by the new rows (first axis), or each stored row block joined with the
    matching rows of the new part (another axis). Old bytes are read with their digests
    checked and are never overwritten; replaced blobs stay until compact."""

    def __init__(self, store, writer: Writer, full: str, v: Variable, attrs, enc) -> None:
        self.store = store
        self.writer = writer
        self.full = full
        self.axis = v.dims.index(store._append_dim)
        self.attrs = attrs
        self.enc = enc

    def __setitem__(self, key, value) -> None:
        self._write(value)

    def write_blocks(self, source) -> None:
        self._write(source)

    def _write(self, source) -> None:
        obj = self.store._existing[self.full]
        compress, checksum = _stored_encoding(obj)
        if obj.format == "chunked" and obj.shape and _chunk_shape(obj) is not None:
            self._grow_chunks(obj, source, compress, checksum)
        elif obj.format == "dense" and obj.shape:
            self._stream_dense(obj, source, compress, checksum)
        else:  # exotic layouts (sparse): merge in memory
            old = _read_stored(self.store, self.full)
            new = _source_part(self.full, source, (), old.dtype)
            data = np.concatenate([old, new], axis=self.axis)
            self.writer.remove(self.full)
            _rewrite(self.writer, self.full, obj, data, compress, checksum, dict(obj.attributes))

    def _grow_chunks(self, obj, source, compress, checksum) -> None:
        """New blobs for the chunks from the old edge on along the axis only; a dask
        source is computed one chunk band (all chunks at one index along the axis) at a
        time when that fits the block budget, else chunk by chunk."""
        from ..layouts import chunked
        from ..layouts.chunked import chunk_grid, chunk_role
        from ..manifest import Object

        reader = (self.store._root or self.store)._reader
        ax = self.axis
        old_grid = chunk_grid(obj, reader.path, self.full)
        dt = dtypes.to_numpy(old_grid.dtype)
        old_n = obj.shape[ax]
        shape = list(obj.shape)
        shape[ax] += int(source.shape[ax])
        new_obj = Object(tuple(shape), obj.format, obj.components, obj.attributes)
        grid = chunk_grid(new_obj, reader.path, self.full)
        c = grid.chunk_shape[ax]
        first = old_n // c  # chunks before this index along the axis are untouched

        def get(role: str) -> np.ndarray:
            return reader.read_component(self.full, role, verify=True)

        others = [range(g) for i, g in enumerate(grid.grid) if i != ax]
        band_bytes = dt.itemsize * c * math.prod(n for i, n in enumerate(shape) if i != ax)

        def at_axis(value, rest):
            return (*rest[:ax], value, *rest[ax:])

        def updates():
            for j in range(first, grid.grid[ax]):
                lo, hi = max(j * c, old_n), min((j + 1) * c, shape[ax])
                band, at = source, old_n  # ``band`` starts at row ``at`` along the axis
                if _is_dask(source) and band_bytes <= _REGION_BLOCK_BYTES:
                    sel = (slice(None),) * ax + (slice(lo - old_n, hi - old_n),)
                    band, at = _source_part(self.full, source, sel, dt), lo
                for rest in itertools.product(*others):
                    index = at_axis(j, rest)
                    origin = [i * n for i, n in zip(index, grid.chunk_shape)]
                    extent = grid.extent(index)
                    sel = [slice(o, o + e) for o, e in zip(origin, extent)]
                    sel[ax] = slice(lo - at, hi - at)
                    part = _source_part(self.full, band, tuple(sel), dt)
                    if j * c < old_n:  # the old partial edge chunk: stored rows first
                        old = chunked.read_chunk(obj, get, index, path=reader.path, name=self.full)
                        part = np.concatenate([np.asarray(old, dtype=dt), part], axis=ax)
                    yield chunk_role(index), np.ascontiguousarray(part).reshape(-1)

        self.writer.update_components(
            self.full, new_obj, updates(), compress=compress, checksum=checksum
        )

    def _stream_dense(self, obj, source, compress, checksum) -> None:
        """Stored row blocks followed by the new rows (first axis), or each stored row block
        joined with the matching rows of the new part (another axis)."""
        ax = self.axis
        shape = list(obj.shape)
        shape[ax] += int(source.shape[ax])

        def blocks(old_rows, rows: int, dt: np.dtype):
            if ax == 0:
                yield from old_rows
                for r0 in range(0, shape[0] - obj.shape[0], rows):
                    yield _source_part(self.full, source, (slice(r0, r0 + rows),), dt)
                return
            r0 = 0
            for old in old_rows:
                r1 = r0 + old.shape[0]
                new = _source_part(self.full, source, (slice(r0, r1),), dt)
                yield np.concatenate([old, new], axis=ax)
                r0 = r1

        _restream_dense(self, obj, tuple(shape), compress, checksum, blocks, align_to=source)


class _RegionTarget:
    """Overwrite a region of an existing variable, in memory bounded by a block rather than
    the variable: a chunked object gets new blobs for the chunks the region touches only
    (the others keep their blobs); a dense object is streamed into a new blob row block by
    row block. Old bytes are never overwritten; they stay until compact."""

    def __init__(self, store, writer: Writer, full: str, v: Variable) -> None:
        self.store = store
        self.writer = writer
        self.full = full

    def __setitem__(self, key, value) -> None:
        self._write(key, value)

    def write_blocks(self, source, region=None) -> None:
        self._write(region or (), source)

    def _write(self, key, source) -> None:
        obj = self.store._existing[self.full]
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[-1] is Ellipsis:
            key = key[:-1]
        key = key + (slice(None),) * (len(obj.shape) - len(key))
        box = tuple(k.indices(n)[:2] for k, n in zip(key, obj.shape))
        box = tuple((a, max(a, b)) for a, b in box)
        compress, checksum = _stored_encoding(obj)
        if obj.format == "chunked" and obj.shape and _chunk_shape(obj) is not None:
            self._write_chunks(obj, box, source, compress, checksum)
        elif obj.format == "dense" and obj.shape:
            self._stream_dense(obj, box, source, compress, checksum)
        else:  # small or exotic layouts (scalars, sparse): merge in memory
            data = _read_stored(self.store, self.full)
            data[key] = _source_part(self.full, source, (), data.dtype)
            self.writer.remove(self.full)
            _rewrite(self.writer, self.full, obj, data, compress, checksum, dict(obj.attributes))

    def _write_chunks(self, obj, box, source, compress, checksum) -> None:
        """New blobs for the touched chunks only: a chunk the region covers whole is taken
        from the source, a partly covered one is read, patched and written back."""
        from ..layouts.chunked import chunk_grid

        reader = (self.store._root or self.store)._reader
        grid = chunk_grid(obj, reader.path, self.full)
        dt = dtypes.to_numpy(grid.dtype)
        spans = [
            range(a // c, -(-b // c)) if b > a else range(0)
            for (a, b), c in zip(box, grid.chunk_shape)
        ]

        def get(role: str) -> np.ndarray:
            return reader.read_component(self.full, role, verify=True)

        band_bytes = dt.itemsize * math.prod(b - a for a, b in box[1:])
        c0, (a0, b0) = grid.chunk_shape[0], box[0]

        def updates():
            for i0 in spans[0]:
                # a dask source is computed one chunk row of the region at a time when
                # that fits the block budget (one compute instead of one per chunk)
                lo0, hi0 = max(a0, i0 * c0), min(b0, (i0 + 1) * c0)
                band, at = source, a0
                if _is_dask(source) and (hi0 - lo0) * band_bytes <= _REGION_BLOCK_BYTES:
                    band = _source_part(self.full, source, (slice(lo0 - a0, hi0 - a0),), dt)
                    at = lo0
                for rest in itertools.product(*spans[1:]):
                    yield self._patched_chunk(obj, grid, get, (i0, *rest), box, band, at, dt)

        self.writer.update_components(
            self.full, obj, updates(), compress=compress, checksum=checksum
        )

    def _patched_chunk(self, obj, grid, get, index, box, source, at: int, dt):
        """(role, flat data) of one touched chunk; ``source`` starts at row ``at``."""
        from ..layouts import chunked
        from ..layouts.chunked import chunk_role

        reader = (self.store._root or self.store)._reader
        origin = [i * c for i, c in zip(index, grid.chunk_shape)]
        extent = grid.extent(index)
        src, dst = [], []
        for axis, ((a, b), o, e) in enumerate(zip(box, origin, extent)):
            lo, hi = max(a, o), min(b, o + e)
            start = at if axis == 0 else a
            src.append(slice(lo - start, hi - start))
            dst.append(slice(lo - o, hi - o))
        part = _source_part(self.full, source, tuple(src), dt)
        if part.shape == tuple(extent):
            block = part
        else:
            block = np.array(chunked.read_chunk(obj, get, index, path=reader.path, name=self.full))
            block[tuple(dst)] = part
        return chunk_role(index), np.ascontiguousarray(block).reshape(-1)

    def _stream_dense(self, obj, box, source, compress, checksum) -> None:
        """Stored rows (zero-copy views of raw data, or decoded piece by piece) with the
        region patched in."""
        (a0, b0), rest = box[0], tuple(slice(a, b) for a, b in box[1:])

        def blocks(old_rows, rows: int, dt: np.dtype):
            r0 = 0
            for old in old_rows:
                r1 = r0 + old.shape[0]
                lo, hi = max(a0, r0), min(b0, r1)
                if lo < hi:
                    old = np.array(old)
                    part = _source_part(self.full, source, (slice(lo - a0, hi - a0),), dt)
                    old[(slice(lo - r0, hi - r0), *rest)] = part
                yield old
                r0 = r1

        _restream_dense(self, obj, obj.shape, compress, checksum, blocks)


def _restream_dense(target, obj, shape, compress, checksum, blocks, align_to=None) -> None:
    """Replace ``target``'s dense object (an append or region target) by a new blob of
    ``shape`` streamed row block by row block, in memory bounded by a block:
    ``blocks(old_rows, rows, dtype)`` yields the new blob's blocks from the stored ones
    (``rows`` high, digest checked before the object is dropped). ``align_to``: a dask
    source whose axis-0 chunks the block height follows."""
    from ..layouts import dense

    store, writer, full = target.store, target.writer, target.full
    reader = (store._root or store)._reader
    dt = dense.logical_dtype(obj.components["data"])
    row = dt.itemsize * math.prod(shape[1:])
    rows = max(1, _REGION_BLOCK_BYTES // max(row, 1))
    if align_to is not None:
        rows = _aligned_rows(align_to, rows)
    old_rows = _verified_rows(reader, full, rows)
    writer.remove(full)
    with writer.stream_tensor(
        full, tuple(shape), dt, compress=compress, checksum=checksum, attributes=obj.attributes
    ) as stream:
        for block in blocks(old_rows, rows, dt):
            stream.write(block)


def _aligned_rows(source, rows: int) -> int:
    """A block height of at most ``rows`` that is a whole number of a dask source's
    (regular) axis-0 chunks where one fits, so no source chunk is computed twice."""
    if not _is_dask(source) or not source.ndim or len(source.chunks[0]) < 1:
        return rows
    size = source.chunks[0][0]
    if size < 1 or size > rows or any(c != size for c in source.chunks[0][:-1]):
        return rows
    return size * (rows // size)


def _verified_rows(reader: Reader, name: str, rows: int):
    """``reader.iter_dense_rows`` with the stored digest checked before this returns, so a
    corrupt blob raises ChecksumError before the caller has changed anything."""
    it = reader.iter_dense_rows(name, rows, verify=True)
    head = next(it, None)
    return it if head is None else itertools.chain([head], it)


# Row blocks of a dense region rewrite: peak memory is a few of these, whatever the size.
_REGION_BLOCK_BYTES = 8 << 20


def _source_part(name: str, source, sel: tuple, dtype: np.dtype) -> np.ndarray:
    """``source[sel]`` as a numpy array of the stored dtype; a dask source computes only
    the blocks that part needs."""
    part = source[sel] if sel else source
    part = np.asarray(part.compute()) if _is_dask(part) else np.asarray(part)
    part = _storage_array(name, part)
    return part.astype(dtype, copy=False)


def _stored_encoding(obj) -> tuple[bool, str | None]:
    """(compressed?, digest algorithm) of a stored object, which its rewrite keeps."""
    comps = obj.components.values()
    digest = next((c.digest for c in comps if c.digest), None)
    return any(c.encoding == "zstd" for c in comps), digest.split(":")[0] if digest else None


def _rewrite(writer: Writer, full: str, obj, data, compress, checksum, attrs) -> None:
    """Write ``data`` as a new blob for ``full`` in the same layout as ``obj``."""
    if obj.format != "chunked":
        writer.add_tensor(full, data, compress=compress, checksum=checksum, attributes=attrs)
        return
    from ..layouts import chunked
    from ..layouts.chunked import chunk_role

    grid = attrs[CHUNK_GRID_KEY]
    chunk_shape = tuple(grid["chunk_shape"])
    comps = {}
    bounds = [np.cumsum((0,) + c) for c in chunked.regular_chunks(data.shape, chunk_shape)]
    for index in np.ndindex(*[len(b) - 1 for b in bounds]):
        sl = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index))
        block = data[sl]
        if block.size:
            comps[chunk_role(index)] = np.ascontiguousarray(block).reshape(-1)
    writer.add_object(
        full, "chunked", data.shape, comps, compress=compress, checksum=checksum, attributes=attrs
    )


def _read_stored(store: ZTensorStore, full: str) -> np.ndarray:
    """An object's values as stored when the store opened, as an owned array (u8 for char
    data); the store's own reader still sees the file from before this write began."""
    reader = (store._root or store)._reader
    value = reader.read_tensor(full, copy=True, verify_checksum=True)
    if not isinstance(value, np.ndarray):
        value = value.toarray()
    return value


def _slabs(source):
    """Compute a dask array one axis-0 block row at a time, in C order."""
    if source.ndim == 0 or source.size == 0:
        yield np.asarray(source.compute())
        return
    start = 0
    for size in source.chunks[0]:
        yield np.asarray(source[start : start + size].compute())
        start += size


# --------------------------------------------------------------------------- helpers


def _var_name(vn) -> str:
    from xarray.backends.common import _encode_variable_name

    return _encode_variable_name(vn)


def _norm_group(group: str | None) -> str:
    if group is None or group in ("", "/"):
        return "/"
    parts = [p for p in str(group).split("/") if p]
    return "/" + "/".join(parts)


def _join_group(parent: str, child: str) -> str:
    if child.startswith("/"):
        return _norm_group(child)
    return _norm_group(parent.rstrip("/") + "/" + child)


def _object_dtype(obj) -> np.dtype:
    grid = (obj.attributes or {}).get("chunk_grid") if obj.format == "chunked" else None
    if isinstance(grid, Mapping) and isinstance(grid.get("dtype"), str):
        return dtypes.to_numpy(grid["dtype"])
    comp = obj.components.get("data") or obj.components.get("values")
    if comp is None:
        comp = next(iter(obj.components.values()))
    return dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))


def _chunk_shape(obj) -> tuple[int, ...] | None:
    if obj.format != "chunked":
        return None
    grid = (obj.attributes or {}).get("chunk_grid") or {}
    chunks = grid.get("chunk_shape") if isinstance(grid, Mapping) else None
    if isinstance(chunks, list) and len(chunks) == len(obj.shape):
        return tuple(int(c) for c in chunks)
    return None


def _names_of(drop_variables: str | Iterable[str] | None) -> frozenset[str]:
    if drop_variables is None:
        return frozenset()
    if isinstance(drop_variables, str):
        return frozenset((drop_variables,))
    return frozenset(str(n) for n in drop_variables)


def _fix_default_dims(
    variables: dict, objects: Mapping, names: Mapping, skipped: Iterable[Mapping] = ()
) -> None:
    """Default dims dim_i clash when sizes differ: rename those axes var_dim_i. ``skipped``:
    the sizes of variables left out (drop_variables), which count as if they were there,
    so dropping a variable never renames the dims of the others."""
    sizes: dict[str, set] = {}
    for dim_sizes in [v.sizes for v in variables.values()] + list(skipped):
        for d, n in dim_sizes.items():
            sizes.setdefault(d, set()).add(n)
    for name, v in list(variables.items()):
        obj = objects.get(names[name])
        if obj is None or DIMS_KEY in (obj.attributes or {}):
            continue
        new = tuple(f"{name}_{d}" if len(sizes.get(d, ())) > 1 else d for d in v.dims)
        if new != v.dims:
            variables[name] = Variable(new, v._data, v.attrs, v.encoding, fastpath=True)


def _extract_encoding(v: Variable, *, raise_on_invalid: bool, name: str) -> dict:
    enc = dict(v.encoding)
    if raise_on_invalid:
        invalid = [k for k in enc if k not in _VALID_ENCODING and k not in _IGNORED_ENCODING]
        if invalid:
            raise ValueError(
                f"unexpected encoding parameters for ztensor backend: {invalid!r}. "
                f"Valid encodings are: {sorted(_VALID_ENCODING)!r}"
            )
    compress = enc.get("compress", False)
    if "level" in enc and enc["level"] is not None and compress in (False, None):
        compress = int(enc["level"])
    elif "level" in enc and compress is True:
        compress = int(enc["level"])
    try:
        compress = normalize_compress(compress)
        checksum = normalize_checksum(enc.get("checksum"))
    except ValueError as exc:
        raise ValueError(f"variable {name!r}: {exc}") from None
    chunks = enc.get("chunks")
    if isinstance(chunks, Mapping):
        chunks = tuple(chunks.get(d, s) for d, s in zip(v.dims, v.shape))
    return {"compress": compress, "checksum": checksum, "chunks": chunks}


def _region_for(dims, region):
    if not region:
        return None
    return tuple(region.get(d, slice(None)) for d in dims)


def _check_append_dtype(vn, existing: Variable, new: Variable) -> None:
    a, b = existing.dtype, new.dtype
    if a.kind in "SUO" and b.kind in "SUO":
        return
    if a != b and not (a.kind == b.kind and a.kind in "iuf" and np.can_cast(b, a)):
        if not (a.kind in "Mm" and b.kind == a.kind):
            raise ValueError(
                f"Mismatched dtypes for variable {vn!r} between the stored variable ({a}) "
                f"and the new one ({b}); cast the new data first"
            )


def _check_existing_dims(vn, new: Variable, stored: Variable, region, append_dim) -> Variable:
    if set(new.dims) != set(stored.dims):
        raise ValueError(
            f"variable {vn!r} already exists with different dimension names "
            f"{stored.dims} != {new.dims}, but changing variable dimensions is not supported"
        )
    new = new.transpose(*stored.dims)
    for d, n in new.sizes.items():
        if d == append_dim:
            continue
        if region and d in region:
            sl = region[d]
            start, stop, _ = sl.indices(stored.sizes[d])
            if stop - start != n:
                raise ValueError(
                    f"variable {vn!r}: region {sl} of dimension {d!r} has size "
                    f"{stop - start}, but the new data has size {n}"
                )
            continue
        if stored.sizes[d] != n:
            raise ValueError(
                f"variable {vn!r} already exists with different dimension sizes: "
                f"{dict(stored.sizes)} != {dict(new.sizes)}; to_ztensor only supports "
                "changing the size of the append dimension"
            )
    return new


# --------------------------------------------------------------------------- to_ztensor


class _Writes:
    """Collects (source, target) pairs like xarray's ArrayWriter, but writes dask sources
    block by block through our own targets."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Any, Any]] = []

    def add(self, source, target, region=None) -> None:
        if hasattr(source, "__dask_graph__") and source.__dask_graph__() is not None:
            self.pending.append((source, target, region))
        elif region:
            target[region] = np.asarray(source)
        else:
            target[...] = np.asarray(source)

    def run(self) -> None:
        for source, target, region in self.pending:
            if region:  # region targets compute the source part by part
                target.write_blocks(source, region)
            else:
                target.write_blocks(source)
        self.pending = []


def _choose_mode(mode, append_dim, region) -> str:
    if mode is None:
        if append_dim is not None:
            return "a"
        return "r+" if region is not None else "w-"
    if mode == "w-" and append_dim is not None:
        return "a"  # "w-" is to_ztensor's default: appending implies mode "a"
    if mode == "w-" and region is not None:
        return "r+"
    if append_dim is not None and mode not in ("a", "a-"):
        raise ValueError(
            f"append_dim was set along with mode={mode!r}; set mode='a' or 'a-' or leave mode unset"
        )
    if region is not None and mode not in ("a", "a-", "r+"):
        raise ValueError(f"region requires mode 'r+', 'a' or 'a-', got mode={mode!r}")
    return mode


def _prepare_region(store: ZTensorStore, ds, region):
    if region is None:
        return ds, None
    if region == "auto":
        region = dict.fromkeys(ds.dims, "auto")
    if not isinstance(region, Mapping):
        raise TypeError(f"``region`` must be a dict, got {type(region).__name__}")
    region = dict(region)
    for dim, val in list(region.items()):
        if val != "auto":
            continue
        if dim not in ds._variables:
            region[dim] = slice(0, ds.sizes[dim])
            continue
        import pandas as pd
        from xarray import conventions

        names = store._names()
        if dim not in names:
            raise KeyError(f"cannot auto-detect the region of {dim!r}: not in the file")
        stored = conventions.decode_cf_variable(
            dim, store.open_store_variable(dim, names[dim]).compute()
        )
        idxs = pd.Index(stored.data).get_indexer(ds[dim].data)
        if (idxs == -1).any():
            raise KeyError(f"not all values of coordinate {dim!r} were found in the file")
        if (np.diff(idxs) != 1).any():
            raise ValueError(f"the auto-detected region of {dim!r} is not contiguous")
        region[dim] = slice(int(idxs[0]), int(idxs[-1]) + 1)
    for k, v in region.items():
        if k not in ds.dims:
            raise ValueError(
                f"all keys in ``region`` are not in Dataset dimensions, got {list(region)} "
                f"and {list(ds.dims)}"
            )
        if not isinstance(v, slice):
            raise TypeError(f"all values in ``region`` must be slice objects, got {region}")
        if v.step not in (1, None):
            raise ValueError(f"step on all slices in ``region`` must be 1 or None: {region}")
    bad = [k for k, v in ds.variables.items() if not set(region).intersection(v.dims)]
    if region and bad:
        raise ValueError(
            "when setting `region`, every variable must share a dimension with the region; "
            f"drop these first: .drop_vars({bad!r})"
        )
    return ds.drop_vars(ds.indexes), region


def to_ztensor_dataset(
    obj,
    path: str | os.PathLike,
    *,
    mode: str | None = None,
    encoding: Mapping | None = None,
    compute: bool = True,
    append_dim: Hashable | None = None,
    region=None,
    group: str | None = None,
    compress: bool | int | None = None,
    checksum: str | None = None,
    chunks=None,
    **kwargs,
):
    """Write an xarray Dataset or DataArray (or a DataTree) to a .zt file, with to_zarr's
    semantics for ``mode``, ``encoding``, ``append_dim``, ``region`` and ``compute``.

    mode: "w-" (default; fail if the file exists), "w" (replace), "a" (add or overwrite
    variables, append along ``append_dim``), "a-", "r+" (existing variables only).
    ``compress``/``checksum``/``chunks`` are defaults for every variable's encoding.
    ``compute=False`` returns a dask Delayed that writes and finalizes the file.
    """
    import xarray as xr

    if kwargs:
        raise TypeError(f"to_ztensor got unexpected keyword arguments {sorted(kwargs)}")
    if isinstance(obj, xr.DataTree):
        return _write_datatree(
            obj,
            path,
            mode=mode or "w-",
            encoding=encoding,
            compute=compute,
            compress=compress,
            checksum=checksum,
        )
    if isinstance(obj, xr.DataArray):
        obj = obj._to_temp_dataset() if obj.name is None else obj.to_dataset()
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"expected an xarray Dataset or DataArray, got {type(obj).__name__}")
    path = os.fspath(_normalize_path(path))
    mode = _choose_mode(mode, append_dim, region)
    return _write(
        obj, path, mode, encoding, append_dim, region, group, compress, checksum, chunks, compute
    )


class _Opaque:
    """Hides a Dataset from dask.delayed so its dask arrays are written block by block
    inside the task instead of being materialized as its inputs."""

    def __init__(self, payload) -> None:
        self.payload = payload


def _write_task(box: _Opaque) -> None:
    import dask

    with dask.config.set(scheduler="threads"):
        _write(*box.payload)


def _write(
    ds, path, mode, encoding, append_dim, region, group, compress, checksum, chunks, compute=True
):
    from xarray.backends.writers import _validate_dataset_names, dump_to_store

    _validate_dataset_names(ds)
    encoding = dict(encoding or {})
    if compress is not None or checksum is not None or chunks is not None:
        defaults = {}
        if compress is not None:
            defaults["compress"] = compress
        if checksum is not None:
            defaults["checksum"] = checksum
        if chunks is not None:
            defaults["chunks"] = chunks
        ds = ds.copy(deep=False)
        for v in ds.variables.values():
            v.encoding = {**defaults, **v.encoding}
        encoding = {  # an explicit encoding replaces a variable's: keep the defaults in it
            k: ({**defaults, **e} if isinstance(e, Mapping) else e) for k, e in encoding.items()
        }
    if mode in ("w", "w-") and group is None and region is None:
        return _write_new(ds, path, mode, encoding, compute)
    if region is not None and group is None and os.path.exists(path):
        done = _region_chunked(ds, path, mode, region, compute)
        if done is not _INELIGIBLE:
            return done
    if append_dim is not None and group is None and region is None and os.path.exists(path):
        done = _append_parallel(ds, path, mode, encoding, append_dim, compute)
        if done is not _INELIGIBLE:
            return done
    if not compute:
        import dask

        return dask.delayed(_write_task, pure=False)(
            _Opaque((ds, path, mode, encoding, append_dim, region, group, None, None, None))
        )
    store = ZTensorStore(path, mode, group=group, append_dim=append_dim)
    try:
        if mode in ("a", "a-", "r+") and encoding:
            existing = store._names()
            for name in encoding:
                if name in existing:
                    raise ValueError(f"variable {name!r} already exists, but encoding was provided")
        ds, region = _prepare_region(store, ds, region)
        store._write_region = region
        writes = _Writes()
        dump_to_store(ds, store, writes, encoding=encoding)
        writes.run()
        store.close()
    except BaseException:
        store.abort()
        raise


def _is_dask(data) -> bool:
    return hasattr(data, "__dask_graph__") and data.__dask_graph__() is not None


def _storage_data(name: str, v: Variable):
    """The variable's data (numpy or dask) in a storable dtype (char data as u8)."""
    data = v.data
    if _is_dask(data):
        _storage_array(name, np.empty(0, v.dtype))
        return data.view(np.uint8) if v.dtype == np.dtype("S1") else data
    return _storage_array(name, data)


def _new_array(store: ZTensorStore, name: str, v: Variable, explicit: bool):
    """(data, write_arrays encoding) of a variable that becomes a new object."""
    if "/" in name:
        raise ValueError(f"variable name {name!r} contains '/', which zTensor uses for groups")
    enc = _extract_encoding(v, raise_on_invalid=explicit, name=name)
    obj_attrs = store._object_attributes(name, v)
    data = _storage_data(name, v)
    layout = "chunked" if (enc["compress"] or enc["chunks"] is not None) else "dense"
    fill = obj_attrs.get("_FillValue", 0)
    if not isinstance(fill, bool | int | float) or layout == "dense":
        fill = 0
    return data, {
        "compress": enc["compress"],
        "checksum": enc["checksum"],
        "chunks": enc["chunks"],
        "layout": layout,
        "fill_value": fill,
        "attributes": obj_attrs,
    }


_INELIGIBLE = object()


def _append_parallel(ds, path: str, mode: str, encoding: Mapping, append_dim, compute):
    """Grow chunked variables along their first axis by writing only new chunks (and the
    manifest), in parallel; ``_INELIGIBLE`` when some variable needs a rewrite instead."""
    from xarray import conventions

    from .dask import write_arrays

    store = ZTensorStore(path, mode, append_dim=append_dim)
    names = store._names()
    for name in encoding:
        if name in names:
            raise ValueError(f"variable {name!r} already exists, but encoding was provided")
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    for k, enc in encoding.items():
        variables[k].encoding = enc
    encoded, attrs, existing = store._prepare(variables, attrs)
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    for vn, v in encoded.items():
        name = _var_name(vn)
        if vn not in existing:
            arrays[name], per_name[name] = _new_array(store, name, v, vn in encoding)
            continue
        full = names[name]
        obj = store._existing[full]
        if append_dim not in v.dims:
            if _same_as_stored(store, full, v):
                continue  # unchanged (e.g. a coordinate along another dimension)
            return _INELIGIBLE
        if obj.format != "chunked" or v.dims.index(append_dim) != 0:
            return _INELIGIBLE
        _verify_edge_chunks(store, full, obj)
        arrays[full] = _storage_data(name, v)
    values, types = encode_attrs(attrs, "/")
    stored_types = dict(store._global.get(ATTR_DTYPES_KEY) or {})
    if types or stored_types:
        values[ATTR_DTYPES_KEY] = {**stored_types, **types}
    return write_arrays(
        arrays,
        path,
        mode="a",
        encoding=per_name,
        append_dim=0,
        attributes=values,
        compute=compute,
    )


def _verify_edge_chunks(store: ZTensorStore, full: str, obj) -> None:
    """Check the digests of the partial last chunk row that an append along the first
    axis merges into its new chunks (ChecksumError before anything is written)."""
    from ..layouts.chunked import parse_chunk_role

    chunk_shape = _chunk_shape(obj)
    if chunk_shape is None or not obj.shape:
        return
    edge = obj.shape[0] // chunk_shape[0]
    if obj.shape[0] == edge * chunk_shape[0]:
        return  # whole chunk rows only: no stored data is read
    for role in obj.components:
        index = parse_chunk_role(role, len(obj.shape))
        if index is not None and index[0] == edge:
            store._reader.read_component(full, role, verify=True)


def _region_chunked(ds, path: str, mode: str, region, compute):
    """Region writes into chunked variables whose region is aligned to their chunk grid:
    only the touched chunks are rewritten (in parallel) and the manifest is replaced.
    ``_INELIGIBLE`` for anything else, which then goes through the rewriting path."""
    from xarray import conventions

    from .dask import write_arrays

    store = ZTensorStore(path, mode)
    ds, region = _prepare_region(store, ds, region)
    store._write_region = region
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    encoded, attrs, existing = store._prepare(variables, attrs)
    names = store._names()
    batches: dict[tuple, dict[str, Any]] = {}
    for vn, v in encoded.items():
        if vn not in existing:
            return _INELIGIBLE
        name = _var_name(vn)
        full = names[name]
        obj = store._existing[full]
        chunk_shape = _chunk_shape(obj)
        if obj.format != "chunked" or chunk_shape is None:
            return _INELIGIBLE
        box = []
        for d, n, c in zip(v.dims, obj.shape, chunk_shape):
            start, stop, _ = region.get(d, slice(None)).indices(n)
            if start % c or (stop % c and stop != n):
                return _INELIGIBLE  # partial chunks: merge by rewriting instead
            box.append((start, stop))
        data = _storage_data(name, v)
        dt = _object_dtype(obj)
        batches.setdefault(tuple(box), {})[full] = data if data.dtype == dt else data.astype(dt)
    if len(batches) != 1 and not compute:
        return _INELIGIBLE  # one Delayed commit per box would race for the append lock
    result = None
    for box, arrays in batches.items():
        result = write_arrays(
            arrays,
            path,
            mode="a",
            region=tuple(slice(a, b) for a, b in box),
            compute=compute,
        )
    return result


def _same_as_stored(store: ZTensorStore, full: str, v: Variable) -> bool:
    old = _read_stored(store, full)
    new = np.asarray(v.values)
    if new.dtype == np.dtype("S1"):
        new = new.view(np.uint8)
    return old.shape == new.shape and old.dtype == new.dtype and old.tobytes() == new.tobytes()


def _write_new(ds, path: str, mode: str, encoding: Mapping, compute: bool):
    """A new file: every variable goes through the parallel Dask writer (raw regions filled
    block by block, compressed or chunked variables as ``chunked`` objects)."""
    from xarray import conventions

    store = ZTensorStore(path, mode)
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    for k, enc in encoding.items():
        variables[k].encoding = enc
    encoded, attrs = store.encode(variables, attrs)
    values, types = encode_attrs(attrs, "/")
    if types:
        values[ATTR_DTYPES_KEY] = types
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    for vn, v in encoded.items():
        name = _var_name(vn)
        arrays[name], per_name[name] = _new_array(store, name, v, vn in encoding)
    return _write_objects(arrays, per_name, path, mode, values, compute)


def _write_objects(arrays, per_name, path: str, mode: str, attributes, compute: bool):
    """Write new objects: in-memory raw tensors straight through the core Writer (one
    pwrite each, nothing to schedule); anything lazy, compressed or chunked through the
    parallel Dask writer."""
    from .dask import write_arrays

    direct = compute and all(
        not _is_dask(a) and e["layout"] == "dense" and not e["compress"]
        for a, e in zip(arrays.values(), per_name.values())
    )
    if not direct:
        return write_arrays(
            arrays, path, mode=mode, encoding=per_name, attributes=attributes, compute=compute
        )
    with Writer(path, "x" if mode in ("w-", "x") else "w") as w:
        w.attributes = dict(attributes)
        for name, data in arrays.items():
            enc = per_name[name]
            w.add_tensor(name, data, checksum=enc["checksum"], attributes=enc["attributes"])
    return None


def _write_datatree(tree, path, *, mode, encoding, compute, compress, checksum):
    """A DataTree as one file: every node's variables become objects named by their group
    path, written in one parallel commit; group attributes (and empty groups) live in the
    reserved global attribute."""
    from xarray import conventions

    path = os.fspath(path)
    if mode not in ("w", "w-"):
        raise ValueError(f"DataTree writes support mode 'w' or 'w-', got {mode!r}")
    root = ZTensorStore(path, mode)
    defaults = {}
    if compress is not None:
        defaults["compress"] = compress
    if checksum is not None:
        defaults["checksum"] = checksum
    encoding = dict(encoding or {})
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    values: dict[str, Any] = {}
    groups: dict[str, dict] = {}
    for node in tree.subtree:
        at = _norm_group(node.path)
        ds = node.to_dataset(inherit=False)
        variables, attrs = conventions.encode_dataset_coordinates(ds)
        explicit = dict(encoding.get(at) or encoding.get(node.path) or {})
        for v in variables.values():
            v.encoding = {**defaults, **v.encoding}
        for k, e in explicit.items():
            variables[k].encoding = {**defaults, **e} if isinstance(e, Mapping) else e
        encoded, attrs = root.encode(variables, attrs)
        prefix = "" if at == "/" else at.strip("/") + "/"
        for vn, v in encoded.items():
            name = _var_name(vn)
            data, enc = _new_array(root, name, v, vn in explicit)
            arrays[prefix + name] = data
            per_name[prefix + name] = enc
        a_values, a_types = encode_attrs(attrs, at)
        if at == "/":
            values.update(a_values)
            if a_types:
                values[ATTR_DTYPES_KEY] = a_types
        else:
            groups[at] = {"attrs": a_values, "dtypes": a_types}
    if groups:
        values[GROUPS_KEY] = groups
    return _write_objects(arrays, per_name, path, mode, values, compute)


# --------------------------------------------------------------------------- engine


def _sniff(filename_or_obj) -> bool:
    try:
        if isinstance(filename_or_obj, str | os.PathLike):
            path = os.fspath(filename_or_obj)
            try:
                with open(path, "rb") as f:
                    head = f.read(8)
                if head in MAGICS:
                    return True
            except OSError:
                pass
            return os.path.splitext(path)[1].lower() == ".zt"
        if isinstance(filename_or_obj, bytes | memoryview):
            return bytes(filename_or_obj[:8]) in MAGICS
        return False
    except Exception:  # guess_can_open must never raise
        return False


class ZTensorBackendEntrypoint(BackendEntrypoint):
    """Open zTensor (.zt) files in xarray: lazy, mmap-backed, picklable variables."""

    description = "Open zTensor (.zt) files in xarray (lazy, mmap-backed, checksummed)"
    url = "https://github.com/zTensor/ztensor"
    supports_groups = True
    open_dataset_parameters = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
        "verify_checksums",
    )

    def guess_can_open(self, filename_or_obj) -> bool:
        return _sniff(filename_or_obj)

    def open_dataset(
        self,
        filename_or_obj,
        *,
        mask_and_scale=True,
        decode_times=True,
        concat_characters=True,
        decode_coords=True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime=None,
        decode_timedelta=None,
        group: str | None = None,
        verify_checksums: bool = False,
    ):
        """``verify_checksums=True`` checks each component's digest when it is read."""
        if isinstance(filename_or_obj, AbstractDataStore):
            store = filename_or_obj
        else:
            path = os.fspath(_normalize_path(filename_or_obj))
            store = ZTensorStore.open(path, "r", group=group, verify=verify_checksums)
            store.skip = _names_of(drop_variables)
        with close_on_error(store):
            return StoreBackendEntrypoint().open_dataset(
                store,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                concat_characters=concat_characters,
                decode_coords=decode_coords,
                drop_variables=drop_variables,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )

    def open_groups_as_dict(
        self,
        filename_or_obj,
        *,
        mask_and_scale=True,
        decode_times=True,
        concat_characters=True,
        decode_coords=True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime=None,
        decode_timedelta=None,
        group: str | None = None,
        verify_checksums: bool = False,
    ) -> dict:
        path = os.fspath(_normalize_path(filename_or_obj))
        root = ZTensorStore.open(path, "r", verify=verify_checksums)
        parent = _norm_group(group)
        out = {}
        for g in root.groups():
            if parent != "/" and not (g == parent or g.startswith(parent + "/")):
                continue
            store = root if g == "/" else root.get_child_store(g)
            store.skip = _names_of(drop_variables)
            ds = StoreBackendEntrypoint().open_dataset(
                store,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                concat_characters=concat_characters,
                decode_coords=decode_coords,
                drop_variables=drop_variables,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )
            key = g if parent == "/" else "/" + g[len(parent) :].lstrip("/")
            out[key] = ds
        return out

    def open_datatree(self, filename_or_obj, **kwargs):
        from xarray.backends.common import datatree_from_dict_with_io_cleanup

        return datatree_from_dict_with_io_cleanup(
            self.open_groups_as_dict(filename_or_obj, **kwargs)
        )


__all__ = [
    "ZTensorBackendArray",
    "ZTensorBackendEntrypoint",
    "ZTensorStore",
    "to_ztensor_dataset",
]
