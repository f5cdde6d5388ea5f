"""``ZTensorStore``: xarray's writable data store over one .zt file (one group of it).

Reading builds lazy variables over the file's objects; writing CF-encodes variables with
xarray's own machinery and hands each one's data to a target (targets.py) that writes it
through the core ``Writer``. Appends and region writes are validated before any byte moves.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
from xarray import Variable, conventions
from xarray.core import indexing

from ... import sources
from ...attributes import private_copy
from ...errors import (
    ArgumentTypeError,
    FileExistsZTError,
    InvalidArgumentError,
    MissingFileError,
    ZTensorError,
)
from ...layouts.base import require_known_types
from ...reader import Reader, TensorRef
from ...writer import Writer
from .array import ReaderFiles, ZTensorBackendArray
from .attrs import (
    ATTR_DTYPES_KEY,
    CHAR_KEY,
    GROUPS_KEY,
    RESERVED_ROOT_KEYS,
    compound_dtype,
    encode_attrs,
    group_attrs,
    has_stored_dims,
    object_attributes,
    stored_dims,
    variable_attrs,
)
from .internals import CharacterArrayCoder, EncodedStringCoder, WritableCFDataStore
from .targets import AppendTarget, BlockWrites, NewTarget, RegionTarget
from .variables import (
    before_cf,
    check_object_name,
    encoding_failure,
    extract_encoding,
    reported_encoding,
    stored_dtype,
    variable_name,
)

WRITE_MODES = ("w", "w-", "a", "a-", "r+")


@dataclass
class _FileState:
    """What every group store of one file shares: the file as opened, and the write."""

    files: ReaderFiles | None = None  # lazy variables' handle (None: a new file)
    reader: Reader | None = None  # writing: the file as opened, which appends/regions read
    objects: dict = field(default_factory=dict)  # object name -> Object, as opened
    refs: dict = field(default_factory=dict)  # object name -> TensorRef, as opened
    attributes: dict = field(default_factory=dict)  # global attributes, as being written
    writer: Writer | None = None
    written: dict[str, Variable] = field(default_factory=dict)


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
        if mode != "r" and mode not in WRITE_MODES:
            raise InvalidArgumentError(f"mode must be 'r' or one of {WRITE_MODES}, got {mode!r}")
        # a URL, contents or a file object (reading only): what lazy variables reopen
        self.target = path if isinstance(path, sources.Target) else None
        if self.target is not None and mode != "r":
            raise InvalidArgumentError(
                f"mode {mode!r} needs a local file: a remote object cannot be modified in "
                "place (write it whole with mode 'w' or 'w-')",
                path=self.target.name,
            )
        self.path = self.target.name if self.target is not None else os.fspath(path)
        self.mode = mode
        self.group = norm_group(group)
        self.append_dim = append_dim
        self.write_region = write_region
        self.verify = verify
        # names open_dataset(drop_variables=...) will drop: never built, so a variable this
        # version cannot read (a logical type of a newer writer) can be left out
        self.skip: frozenset[str] = frozenset()
        self._root = root
        if root is not None:  # a group store shares the root's file state
            self._state = root._state
            return
        self._state = _FileState()
        exists = self.target is not None or os.path.exists(self.path)
        if mode == "r" or (mode in ("a", "a-", "r+") and exists):
            files = ReaderFiles(self.target or self.path, verify)
            reader = files.acquire()
            # reading needs no reader of its own: lazy variables go through ``files``
            kept = None if mode == "r" else reader
            objects = dict(reader.manifest.objects)
            if self.target is not None:  # a remote file: what xarray loads at once (1-D
                # coordinates, small variables) fetched now in one round of merged requests
                reader.prefetch(n for n, o in objects.items() if len(o.shape) <= 1)
            refs = {name: TensorRef.of(reader, name) for name in objects}
            self._state = _FileState(files, kept, objects, refs, reader.attributes)
        elif mode == "r+":
            raise MissingFileError("no such file (mode='r+' needs an existing file)", path=path)
        if mode == "w-" and exists:
            raise FileExistsZTError("path exists (mode='w-')", path=self.path)

    def __getstate__(self):
        if self.mode != "r":
            raise ArgumentTypeError("a ZTensorStore open for writing cannot be pickled")
        path = self.path if self.target is None else self.target
        return {"path": path, "group": self.group, "verify": self.verify}

    def __setstate__(self, state) -> None:
        self.__init__(state["path"], "r", group=state["group"], verify=state["verify"])

    @classmethod
    def open(
        cls, path: str | os.PathLike, mode: str = "r", *, group: str | None = None, **kwargs
    ) -> ZTensorStore:
        return cls(path, mode, group=group, **kwargs)

    def get_child_store(self, group: str) -> ZTensorStore:
        return type(self)(
            self.target or self.path,
            self.mode,
            group=join_group(self.group, group),
            append_dim=self.append_dim,
            write_region=self.write_region,
            root=self._root or self,
            verify=self.verify,
        )

    # ------------------------------------------------------------------ the file as opened

    @property
    def objects(self) -> dict:
        """Object name -> Object, as the file was when the store opened."""
        return self._state.objects

    @property
    def reader(self) -> Reader | None:
        """Writing: a Reader of the file as it was when the store opened (None for a new
        file, and when reading)."""
        return self._state.reader

    @property
    def global_attributes(self) -> dict:
        """The file's global attributes as stored (or as this write sets them)."""
        return self._state.attributes

    def variable_names(self) -> dict[str, str]:
        """Variable name -> object name for this group (written ones included)."""
        prefix = "" if self.group == "/" else self.group.strip("/") + "/"
        out = {}
        for full in list(self._state.objects) + list(self._state.written):
            if prefix and not full.startswith(prefix):
                continue
            rest = full[len(prefix) :]
            if "/" in rest:
                continue
            out[rest] = full
        return out

    def groups(self) -> list[str]:
        """Every group path in the file ("/" first), from object names and group attrs."""
        found = {"/"}
        for full in list(self._state.objects) + list(self._state.written):
            parts = full.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                found.add("/" + "/".join(parts[:i]))
        found.update((self._state.attributes.get(GROUPS_KEY) or {}).keys())
        return sorted(found, key=lambda g: (g.count("/") if g != "/" else 0, g))

    # ------------------------------------------------------------------ reading

    def open_store_variable(self, name: str, full: str, dims=None) -> Variable:
        """The (encoded, lazy) variable of object ``full``; ``dims`` overrides stored ones."""
        if full in self._state.written:
            return self._state.written[full]
        obj = self._state.objects[full]
        # a deep copy: the parsed manifest is shared by every reader of the same file
        stored = private_copy(dict(obj.attributes or {}))
        char = bool(stored.get(CHAR_KEY))
        dims = stored_dims(obj) if dims is None else dims
        require_known_types(obj, self.path, full)
        dtype = compound_dtype(stored)
        dtype = stored_dtype(obj) if dtype is None else dtype
        array = ZTensorBackendArray(
            self._state.files, self._state.refs[full], obj.shape, dtype, char
        )
        encoding = reported_encoding(obj, dims, array.dtype, remote=self.target is not None)
        return Variable(dims, indexing.LazilyIndexedArray(array), variable_attrs(stored), encoding)

    def get_variables(self) -> dict[str, Variable]:
        names = self.variable_names()
        dims = {name: self._variable_dims(full) for name, full in names.items()}
        # default dims dim_i clash when sizes differ: those axes become <var>_dim_i. The
        # sizes of dropped variables count too, so dropping one never renames the others'.
        sizes: dict[str, set] = {}
        for name, full in names.items():
            for d, n in zip(dims[name], self._variable_shape(full)):
                sizes.setdefault(d, set()).add(n)
        out = {}
        for name, full in names.items():
            if name in self.skip:
                continue
            obj = self._state.objects.get(full)
            if full not in self._state.written and not has_stored_dims(obj):
                dims[name] = tuple(f"{name}_{d}" if len(sizes[d]) > 1 else d for d in dims[name])
            out[name] = self.open_store_variable(name, full, dims[name])
        return out

    def _variable_dims(self, full: str) -> tuple:
        written = self._state.written.get(full)
        return written.dims if written is not None else stored_dims(self._state.objects[full])

    def _variable_shape(self, full: str) -> tuple:
        written = self._state.written.get(full)
        return written.shape if written is not None else self._state.objects[full].shape

    def get_attrs(self) -> dict:
        return group_attrs(self._state.attributes, self.group)

    def get_dimensions(self) -> dict[str, int]:
        dims: dict[str, int] = {}
        for v in self.get_variables().values():
            for d, n in v.sizes.items():
                dims.setdefault(d, n)
        return dims

    def get_encoding(self) -> dict:
        return {}

    # ------------------------------------------------------------------ writing

    def _ensure_writer(self) -> Writer:
        state = self._state
        if state.writer is None:
            if self.mode == "r":
                raise ZTensorError("store is open read-only", path=self.path)
            if self.mode in ("a", "a-", "r+") and state.files is not None:  # the file existed
                state.writer = Writer(self.path, "a")
            else:
                state.writer = Writer(self.path, "x" if self.mode == "w-" else "w")
                if state.attributes:
                    state.writer.attributes = dict(state.attributes)
        return state.writer

    def encode(self, variables, attributes):
        """xarray's CF encoding of variables made ready for it (``before_cf``); a variable
        xarray cannot encode raises ZTensorError naming it."""
        variables = {k: before_cf(v) for k, v in variables.items()}
        try:
            return super().encode(variables, attributes)
        except ZTensorError:
            raise
        except (ValueError, TypeError, OverflowError, NotImplementedError) as exc:
            raise encoding_failure(variables, exc, self._encode_one) from None

    def _encode_one(self, name, variable):
        return self.encode_variable(conventions.encode_cf_variable(variable, name=name), name)

    def encode_variable(self, variable, name=None):
        for coder in (EncodedStringCoder(allows_unicode=False), CharacterArrayCoder()):
            variable = coder.encode(variable, name=name)
        return variable

    def encode_attribute(self, a):
        return a

    def set_dimension(self, dim, length, is_unlimited):
        pass  # dimensions live in each object's attributes

    def set_attributes(self, attributes):
        writer = self._ensure_writer()
        values, types = encode_attrs(attributes, self.group)
        if self.group == "/":
            keep = {k: v for k, v in writer.attributes.items() if k in RESERVED_ROOT_KEYS}
            merged = (
                dict(values)
                if self.mode in ("w", "w-")
                else {
                    **{k: v for k, v in writer.attributes.items() if k not in RESERVED_ROOT_KEYS},
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
        self._state.attributes = writer.attributes

    def store(
        self,
        variables,
        attributes,
        check_encoding_set=frozenset(),
        writer=None,
        unlimited_dims=None,
    ):
        """Encode and write variables, validating appends/regions before any byte moves.
        Without a ``writer``, dask data is written here, block by block."""
        writes = BlockWrites() if writer is None else writer
        encoded, attributes, _ = self.prepare(variables, attributes)
        if self.mode not in ("r", "r+"):
            self.set_attributes(attributes)
        self.set_variables(encoded, check_encoding_set, writes, unlimited_dims=unlimited_dims)
        if writer is None:
            writes.run()

    def refuse_encoding_of_existing(self, encoding: Mapping) -> None:
        """An explicit encoding cannot change how a stored variable is stored."""
        if self.mode not in ("a", "a-", "r+"):
            return
        existing = self.variable_names()
        for name in encoding:
            if name in existing:
                raise InvalidArgumentError(
                    f"variable {name!r} already exists, but encoding was provided"
                )

    def prepare(self, variables, attributes):
        """(encoded variables, encoded attrs, names of existing ones): CF-encodes new
        variables, and existing ones with their stored encoding, refusing mismatches."""
        names = self.variable_names()
        existing = {vn for vn in variables if variable_name(vn) in names and self.mode != "w"}
        if self.mode == "r+":
            new = [k for k in variables if variable_name(k) not in names]
            if new:
                raise InvalidArgumentError(
                    f"dataset contains non-pre-existing variables {new!r}, which is not "
                    "allowed with mode='r+'. To allow writing new variables, use mode='a'."
                )
        if self.append_dim is not None:
            dims = set(self.get_dimensions())
            if self.append_dim not in dims:
                raise InvalidArgumentError(
                    f"append_dim={self.append_dim!r} does not match any existing dataset "
                    f"dimensions {dict(self.get_dimensions())}"
                )
        if self.mode != "w":
            self._check_dimension_sizes(variables)
        encoded, attributes = self.encode(
            {vn: variables[vn] for vn in variables if vn not in existing}, attributes
        )
        if existing:
            opened = {
                vn: self.open_store_variable(variable_name(vn), names[variable_name(vn)])
                for vn in existing
            }
            stored, _, _ = conventions.decode_cf_variables(opened, {})
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
                    vn, enc_existing[vn], opened[vn], self.write_region, self.append_dim
                )
        if self.mode == "a-" and self.append_dim is not None:
            encoded = {
                k: v for k, v in encoded.items() if k not in existing or self.append_dim in v.dims
            }
        return encoded, attributes, existing

    def _check_dimension_sizes(self, variables) -> None:
        """Refuse, before writing anything, data whose sizes clash with the file's."""
        stored = self.get_dimensions()
        region = self.write_region or {}
        for v in variables.values():
            for d, n in v.sizes.items():
                if d == self.append_dim or d in region or d not in stored:
                    continue
                if stored[d] != n:
                    raise InvalidArgumentError(
                        f"Unable to update size for existing dimension {d!r} "
                        f"({n} != {stored[d]}); only append_dim can grow"
                    )

    def set_variables(self, variables, check_encoding_set, writer, unlimited_dims=None):
        w = self._ensure_writer()
        state = self._state
        names = self.variable_names()
        prefix = "" if self.group == "/" else self.group.strip("/") + "/"
        for vn, v in variables.items():
            name = variable_name(vn)
            check_object_name(name)
            full = prefix + name
            enc = extract_encoding(v, raise_on_invalid=vn in check_encoding_set, name=name)
            attrs = object_attributes(name, v)
            existing = self.mode != "w" and name in names and full in state.objects
            region = _region_for(v.dims, self.write_region)
            if existing and self.append_dim is not None and self.append_dim in v.dims:
                obj = state.objects[full]
                target = AppendTarget(w, state.reader, full, obj, v.dims.index(self.append_dim))
                region = None
            elif existing and self.write_region:
                target = RegionTarget(w, state.reader, full, state.objects[full])
            else:
                if existing or full in w:
                    w.remove(full)
                target = NewTarget(w, full, v, attrs, enc)
                region = None
            state.written[full] = v
            writer.add(v.data, target, region)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        """Finalize pending writes (making them visible), and let go of the file."""
        if self._root is not None:
            return
        writer, self._state.writer = self._state.writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            self._release()

    def abort(self) -> None:
        """Discard pending writes: the file at the path is left as it was."""
        writer, self._state.writer = self._state.writer, None
        if writer is not None:
            writer.abort()
        self._release()

    def _release(self) -> None:
        """Drop the file as opened (lazy variables reopen it when read)."""
        self._state.reader = None
        if self._state.files is not None:
            self._state.files.close()


# --------------------------------------------------------------------------- helpers


def local_path(path: str | os.PathLike) -> str:
    """A path as text, absolute, with ``~`` expanded (as xarray's backends take paths)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def read_target(obj, storage_options: dict | None = None) -> str | sources.Target:
    """What a read opens: a local path (as ``local_path``), or a ``sources.Target`` for an
    fsspec URL (with ``storage_options``), bytes-like contents or a binary file object."""
    where = sources.target(obj, storage_options)
    return local_path(where) if isinstance(where, str) else where


def norm_group(group: str | None) -> str:
    """A group path as "/" or "/a/b"."""
    if group is None or group in ("", "/"):
        return "/"
    parts = [p for p in str(group).split("/") if p]
    return "/" + "/".join(parts)


def join_group(parent: str, child: str) -> str:
    if child.startswith("/"):
        return norm_group(child)
    return norm_group(parent.rstrip("/") + "/" + child)


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
            raise InvalidArgumentError(
                f"Mismatched dtypes for variable {vn!r} between the stored variable ({a}) "
                f"and the new one ({b}); cast the new data first"
            )


def _check_existing_dims(vn, new: Variable, stored: Variable, region, append_dim) -> Variable:
    if set(new.dims) != set(stored.dims):
        raise InvalidArgumentError(
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
                raise InvalidArgumentError(
                    f"variable {vn!r}: region {sl} of dimension {d!r} has size "
                    f"{stop - start}, but the new data has size {n}"
                )
            continue
        if stored.sizes[d] != n:
            raise InvalidArgumentError(
                f"variable {vn!r} already exists with different dimension sizes: "
                f"{dict(stored.sizes)} != {dict(new.sizes)}; to_ztensor only supports "
                "changing the size of the append dimension"
            )
    return new


__all__ = ["ZTensorStore"]
