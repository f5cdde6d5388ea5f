"""Reader: the one place (with writer.py) that maps files and knows offsets.

Opening reads only the footer and the manifest, and validates every offset before any data
is touched. Dense raw tensors come back as read-only zero-copy views of a memory map; the map
lives as long as any view of it, so views stay valid after ``close()``.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from . import attributes as attrs_codec
from . import codecs, constants, dtypes, files, layouts, manifest, sources, validation
from .errors import (
    ArgumentTypeError,
    ChecksumError,
    DecodeError,
    FormatError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectChangedError,
    ObjectIndexError,
    TensorNotFoundError,
    TornFileError,
    UnsupportedError,
    ZTensorError,
)
from .interop import to_torch
from .layouts import dense, select
from .layouts.base import primary_component, require_known_types
from .manifest import Component, Manifest, Object

_TO = ("numpy", "torch")
_TAIL_READ = 1 << 16  # bytes read from the end of a file opened for the first time


class TensorMetadata:
    """What the reference 1.1.1 reports per tensor, plus the full manifest object.

    Fields are derived from the object when asked for; a plain dense tensor's shape and dtype
    come from the validation pass, so listing thousands of tensors parses no object.
    """

    __slots__ = ("name", "_obj", "_table", "_plain")

    def __init__(self, name: str, obj: Object | None = None, table=None) -> None:
        self.name = name
        self._obj = obj
        self._table = table  # a manifest.ObjectTable to parse the object from when needed
        self._plain = table.plain_of(name) if table is not None else None

    @property
    def object(self) -> Object:
        if self._obj is None:
            self._obj = self._table[self.name]
        return self._obj

    @property
    def shape(self) -> tuple[int, ...]:
        plain = self._plain
        return plain[0] if plain is not None else self.object.shape

    @property
    def layout(self) -> str:
        return "dense" if self._plain is not None else self.object.format

    format = layout

    @property
    def components(self):
        return self.object.components

    @property
    def attributes(self) -> dict[str, Any]:
        # a deep copy: the parsed manifest is shared by every reader of the same file
        attrs = self.object.attributes
        return attrs_codec.private_copy(dict(attrs)) if attrs else {}

    @property
    def _primary(self) -> Component | None:
        return primary_component(self.object)

    @property
    def _value_dtype(self) -> str | None:
        """The dtype read_tensor returns: quantized layouts dequantize to their scales' dtype
        (quantized_group) or to float32 (ggml_quantized), not to their packed storage.
        None when there is none, or it is a logical `type` this version does not know."""
        if self._plain is not None:
            return self._plain[1]
        return layouts.value_dtype(self.object)

    @property
    def dtype(self) -> np.dtype | None:
        name = self._value_dtype
        return None if name is None else dtypes.to_numpy(name)

    @property
    def dtype_str(self) -> str:
        name = self._value_dtype
        return "" if name is None else dtypes.to_legacy(name)

    @property
    def encoding(self) -> str | None:
        encodings = {c.encoding for c in self.object.components.values()}
        return encodings.pop() if len(encodings) == 1 else None

    @property
    def offset(self) -> int:
        return min((c.offset for c in self.object.components.values()), default=0)

    @property
    def size(self) -> int:
        return sum(c.length for c in self.object.components.values())

    @property
    def checksum(self) -> str | None:
        comp = self._primary
        return None if comp is None else comp.digest

    @property
    def endianness(self) -> str | None:
        comp = self._primary
        return None if comp is None else comp.byte_order

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TensorMetadata)
            and self.name == other.name
            and self.object == other.object
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return (
            f"<TensorMetadata name={self.name!r} shape={self.shape} "
            f"dtype={self.dtype_str!r} layout={self.layout!r}>"
        )


class Reader:
    """Read a .zt file (v1.x, and legacy v0.1). Use as a context manager.

    ``path``: a local path (mapped), or anything ``sources.target`` takes: an fsspec URL
    (with ``storage_options``), bytes-like file contents, an open binary file object; those
    give a ``SourceReader``, the same surface over fetched bytes. ``verify=True`` makes every
    read check component digests by default. ``end`` (local files): read the state of the
    file that ended at that byte (a finalized state that later appends grew past; appends
    never change the bytes before it) instead of its current end.
    """

    target: sources.Target | None = None  # how a SourceReader reaches its file

    def __new__(cls, path=None, *args, storage_options=None, **kwargs):
        # a plain local path (no ":", as every URL has) skips the dispatch: opens stay fast
        if cls is Reader and (type(path) is not str or storage_options or ":" in path):
            if not isinstance(sources.target(path, storage_options), str):
                cls = SourceReader
        return object.__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        verify: bool = False,
        end: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if type(path) is not str or storage_options or ":" in path:
            path = sources.target(path, storage_options)  # a local path: file:// stripped
        self.path = files.fspath(path)
        self.verify = verify
        self._lock = threading.Lock()
        self._map_read: mmap.mmap | None = None
        self._fd, self.identity = files.open_read_identity(self.path)
        self.size = self.identity.size
        self._digests: dict[str, str] = {}
        try:
            if end is not None:
                if not 0 <= end <= self.size:
                    raise FormatError(
                        f"no state ends at byte {end} of a file of {self.size} bytes",
                        path=self.path,
                    )
                self.size = end
                self.manifest, self.manifest_offset = self._load_manifest()
            else:
                self.manifest, self.manifest_offset = self._load_last_complete()
        except OSError as exc:  # e.g. EIO while reading the footer
            os.close(self._fd)
            self._fd = -1
            if isinstance(exc, ZTensorError):
                raise
            raise ZTensorError(f"cannot read: {exc.strerror}", path=self.path) from None
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._attributes = attrs_codec.decode_root(self.manifest.attributes, self.path)

    @property
    def _names(self) -> list[str]:
        """Every object name, sorted; built when first asked (a file of 100,000 tensors
        opened for one of them never makes 100,000 name strings). Shared: never modified."""
        objects = self.manifest.objects
        if isinstance(objects, manifest.ObjectTable):
            return objects.sorted_names()
        return sorted(objects)

    # ------------------------------------------------------------------ opening

    def _pread(self, n: int, offset: int) -> bytes:
        data = files.read_at(self._fd, n, offset)
        if len(data) != n:
            raise FormatError(
                f"unexpected end of file at byte {offset + len(data)}", path=self.path
            )
        return data

    def _load_last_complete(self) -> tuple[Manifest, int]:
        """The manifest of the file's last complete state (SPEC §9.3): while an append
        marker names the file, that is the state the marker's append started from, unless
        the manifest at the end is the one that append wrote (it carries the marker's
        token): a tail that merely looks complete (a stored .zt file as the last blob of a
        killed append) is never taken for a state. A torn end without a marker is looked
        at again if the file grew or a marker appeared meanwhile (an append that began, or
        ended, while we looked)."""
        for attempt in range(3):
            marker = files.read_marker(self.path, self.identity)
            if marker is not None and marker.base <= self.size:
                try:
                    found = self._load_manifest()
                except ZTensorError:
                    found = None
                if found is not None and found[0].extra is not None:
                    if found[0].extra.get(files.APPEND_KEY) == marker.token:
                        return found
                self.size = marker.base
                return self._load_manifest()
            try:
                return self._load_manifest()
            except TornFileError:
                now = files.identity(self.path)
                grew = now is not None and now.ino == self.identity.ino
                grew = grew and now.size > self.size
                if attempt == 2 or not (grew or files.read_marker(self.path, self.identity)):
                    raise
                if grew:
                    self.identity = files.FileIdentity.of(os.fstat(self._fd))
                    self.size = self.identity.size
        raise AssertionError("unreachable")

    def _load_manifest(self) -> tuple[Manifest, int]:
        head = files.read_at(self._fd, 8, 0)
        if head == constants.LEGACY_MAGIC:
            from . import legacy  # v0.1 only: its parser and layouts (~4 ms) load when met

            return legacy.read_manifest(self._pread, self.size, self.path)
        if head != constants.MAGIC:
            raise FormatError(f"not a zTensor file (magic {head[:8]!r})", path=self.path)
        # One read of the file's end usually brings the footer and the whole manifest; a
        # reopen reads exactly the manifest and footer it kept, and reuses them if unchanged.
        kept = validation.memo_entry(self.path, self.size)
        span = min(self.size, len(kept[0]) if kept is not None else _TAIL_READ)
        tail = self._pread(span, self.size - span) if self.size >= constants.FOOTER_SIZE else b""
        if kept is not None and tail == kept[0]:
            return kept[1], self.size - span
        start, length = manifest.locate(self.size, tail[-constants.FOOTER_SIZE :], self.path)
        if self.size - start <= span:
            first = span - (self.size - start)
            data = tail[first : first + length]
        else:
            data = self._pread(length, start)
        return validation.load(data, start, path=self.path), start

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the file. Arrays already returned stay valid (they keep the map alive)."""
        with self._lock:
            # Dropping the map unmaps it now, or when its last view goes
            self._map_read = None
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ZTensorError("reader is closed", path=self.path)

    def _map(self) -> mmap.mmap:
        """The shared read-only map of the whole file (made on first use)."""
        mm = self._map_read
        if mm is None:
            with self._lock:
                self._check_open()
                mm = self._map_read
                if mm is None:
                    mm = self._map_read = files.map_read(self._fd)
        return mm

    # ------------------------------------------------------------------ listing

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def attributes(self) -> dict[str, Any]:
        """Global attributes (text ones as stored, others decoded from their reserved key).
        A deep copy: the parsed manifest is shared by every reader of the same file."""
        return attrs_codec.private_copy(self._attributes)

    @property
    def tensor_names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self.manifest.objects)

    def __contains__(self, name: object) -> bool:
        return name in self.manifest.objects

    def __iter__(self) -> Iterator[TensorMetadata]:
        objects = self.manifest.objects
        if isinstance(objects, manifest.ObjectTable):  # every name is known to be there
            return (TensorMetadata(n, None, objects) for n in self._names)
        return (self.metadata(n) for n in self._names)

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            return self.read_tensor(key)
        if isinstance(key, int):
            try:
                name = self._names[key]
            except IndexError:
                raise ObjectIndexError(
                    f"index {key} is out of range for {len(self._names)} objects", path=self.path
                ) from None
            return self.metadata(name)
        raise ArgumentTypeError(
            f"reader indices must be str or int, not {type(key).__name__}", path=self.path
        )

    def _object(self, name: str) -> Object:
        try:
            return self.manifest.objects[name]
        except (KeyError, TypeError):
            if not isinstance(name, str):
                raise TensorNotFoundError(
                    f"no such object {name!r} (object names are text)", path=self.path
                ) from None
            raise TensorNotFoundError("no such object", path=self.path, obj=name) from None

    def names_in_file_order(self) -> list[str]:
        """Object names by the offset of their first blob: the order to copy them in so a
        rewritten file keeps its original layout."""
        objects = self.manifest.objects
        return sorted(
            objects,
            key=lambda n: min((c.offset for c in objects[n].components.values()), default=0),
        )

    def metadata(self, name: str) -> TensorMetadata:
        objects = self.manifest.objects
        if isinstance(objects, manifest.ObjectTable) and isinstance(name, str):
            if name not in objects:
                raise TensorNotFoundError("no such object", path=self.path, obj=name)
            return TensorMetadata(name, table=objects)
        return TensorMetadata(name, self._object(name))

    @property
    def tensors(self) -> list[TensorMetadata]:
        return list(self)

    # aliases from the reference's surface
    def list_tensors(self) -> list[TensorMetadata]:
        return self.tensors

    def get_tensor_names(self) -> list[str]:
        return self.tensor_names

    def get_metadata(self, name: str) -> TensorMetadata:
        return self.metadata(name)

    def keys(self) -> list[str]:
        return self.tensor_names

    # ------------------------------------------------------------------ components

    def _stored(
        self, comp: Component, private: bool = False, scattered: bool = False
    ) -> memoryview:
        """Zero-copy view of a component's stored bytes.

        ``private``: a writable copy-on-write map of its own, so writes through the view
        (torch tensors are always writable) reach neither the file nor any other view.
        ``scattered`` (with ``private``): that map reads only the pages touched (no
        read-ahead), for a few scattered elements of a large component.
        """
        if private and comp.length:
            try:
                return files.map_private(self._fd, comp.offset, comp.length, scattered=scattered)
            except (OSError, ValueError):
                raise ZTensorError("reader is closed", path=self.path) from None
        # close() only drops its map, so a map in hand is never closed under us
        return memoryview(self._map())[comp.offset : comp.offset + comp.length]

    def _drop_pages(self, comp: Component) -> None:
        """Compressed bytes are needed once: left mapped they would count in the resident
        set until the Reader closes (reading tensor by tensor would grow it to the file)."""
        mm = self._map_read
        if mm is not None:
            files.drop_pages(mm, comp.offset, comp.length)

    def stored_bytes(self, name: str, role: str) -> memoryview:
        """The stored (possibly compressed) bytes of a component, zero-copy."""
        self._check_open()
        comp = self._object(name).components.get(role)
        if comp is None:
            raise TensorNotFoundError("no such component", path=self.path, obj=name, component=role)
        return self._stored(comp)

    def _verify(self, name: str, role: str, comp: Component, stored) -> None:
        if comp.digest is None:
            return
        from .codecs import digests  # hashlib + google_crc32c (~4 ms): only when verifying

        ok = digests.matches(comp.digest, stored)
        if ok is False:
            raise ChecksumError(
                f"digest mismatch (expected {comp.digest})",
                path=self.path,
                obj=name,
                component=role,
            )

    def read_component(
        self,
        name: str,
        role: str,
        *,
        verify: bool | None = None,
        copy: bool = False,
        writable_view: bool = False,
        scattered: bool = False,
        stored: memoryview | None = None,
    ) -> np.ndarray:
        """A component decoded to a 1-D array of its storage dtype (little-endian, native).

        Raw components are zero-copy read-only views unless ``copy`` is set;
        ``writable_view`` gives a writable zero-copy view over a private copy-on-write map,
        which reads only the pages touched when ``scattered``. ``stored``: its stored bytes,
        already fetched (``fetch``).
        """
        self._check_open()
        obj = self._object(name)
        try:
            comp = obj.components[role]
        except KeyError:
            raise TensorNotFoundError(
                "no such component", path=self.path, obj=name, component=role
            ) from None
        verify = self.verify if verify is None else verify
        stored_dt = _stored_dtype(comp)
        if comp.encoding == codecs.RAW:  # mapped, not decoded
            if copy and not verify and stored is None:
                out = np.empty(comp.length // stored_dt.itemsize, dtype=stored_dt)
                self._readinto(out, comp.offset, name, role)
            else:
                if stored is None:
                    stored = self._stored(comp, private=writable_view, scattered=scattered)
                elif writable_view:
                    stored = memoryview(bytearray(stored))
                if verify:
                    self._verify(name, role, comp, stored)
                out = np.frombuffer(stored, dtype=stored_dt)
                if copy:
                    out = out.copy()
        else:
            if stored is None:
                stored = self._stored(comp)
            if verify:
                self._verify(name, role, comp, stored)
            out = self._decode(name, role, obj, comp, stored).view(stored_dt)
            self._drop_pages(comp)
        return _native(out, comp)

    def read_component_prefix(
        self, name: str, role: str, nbytes: int, *, verify: bool | None = None
    ) -> np.ndarray:
        """The first ``nbytes`` of a component's decoded bytes, in its storage dtype: a view
        of a raw component, a streaming decode of a compressed one that stops there (its
        digest, when checked, still covers all its stored bytes)."""
        self._check_open()
        obj = self._object(name)
        comp = obj.components[role]
        stored_dt = _stored_dtype(comp)
        if comp.encoding == codecs.RAW:
            out = self.read_component(name, role, verify=verify)
            return out[: nbytes // stored_dt.itemsize]
        stored = self._stored(comp)
        if self.verify if verify is None else verify:
            self._verify(name, role, comp, stored)
        total = validation.expected_nbytes(obj, role)
        if total is None or nbytes > total:
            return self.read_component(name, role, verify=False)[: nbytes // stored_dt.itemsize]
        try:
            data = codecs.get(comp.encoding).decode_prefix(stored, nbytes, total)
        except codecs.CodecError as exc:
            raise DecodeError(str(exc), path=self.path, obj=name, component=role) from None
        return _native(data.view(stored_dt), comp)

    def read_located(
        self,
        name: str,
        comp: Component,
        label: str,
        nbytes: int,
        *,
        verify: bool | None = None,
        copy: bool = False,
        stored: memoryview | None = None,
    ) -> np.ndarray:
        """A blob of object ``name`` that the manifest does not name itself (a chunk an
        index segment locates), after the container's checks (``validation.check_blob``),
        decoded to exactly ``nbytes``: a 1-D array of its storage dtype, a zero-copy view
        of a raw blob unless ``copy``. ``stored``: its bytes, already fetched (``fetch``)."""
        self._check_open()
        objects = self.manifest.objects
        if not isinstance(objects, manifest.ObjectTable) or objects.spans is None:
            raise FormatError("located blobs need a validated v1 manifest", path=self.path)
        validation.check_blob(objects, comp, self.path, name, label, nbytes)
        if stored is None:
            stored = self._stored(comp)
        if self.verify if verify is None else verify:
            self._verify(name, label, comp, stored)
        stored_dt = _stored_dtype(comp)
        if comp.encoding == codecs.RAW:
            out = np.frombuffer(stored, dtype=stored_dt)
            return out.copy() if copy else out
        try:
            data = codecs.get(comp.encoding).decode_exact(stored, nbytes)
        except codecs.CodecError as exc:
            raise DecodeError(str(exc), path=self.path, obj=name, component=label) from None
        self._drop_pages(comp)
        return data.view(stored_dt)

    def private_view(self, name: str, role: str = "data", *, scattered: bool = False) -> np.ndarray:
        """A component as a writable array whose writes stay private to it (zero-copy for
        raw little-endian components, an owned decoded copy otherwise). ``scattered``: it
        will be read in a few scattered places, so only the pages touched are read."""
        return self.read_component(name, role, writable_view=True, scattered=scattered)

    def _readinto(self, out: np.ndarray, offset: int, name: str, role: str) -> None:
        buf = memoryview(out.reshape(-1).view(np.uint8))
        if files.readinto_at(self._fd, buf, offset) != buf.nbytes:
            raise FormatError(
                "file ended inside the component", path=self.path, obj=name, component=role
            )

    def _decode(self, name: str, role: str, obj: Object, comp: Component, stored) -> np.ndarray:
        codec = codecs.get(comp.encoding)
        nbytes = validation.expected_nbytes(obj, role)
        try:
            if nbytes is not None:
                return codec.decode_exact(stored, nbytes)
            limit = validation.decoded_limit(obj, role)
            data = codec.decode_limited(stored, limit)
        except codecs.CodecError as exc:
            raise DecodeError(str(exc), path=self.path, obj=name, component=role) from None
        except MemoryError:
            need = nbytes if nbytes is not None else "up to " + str(limit)
            raise DecodeError(
                f"not enough memory to decode {need} bytes",
                path=self.path,
                obj=name,
                component=role,
            ) from None
        if data.size % dtypes.itemsize(comp.dtype):
            raise DecodeError(
                f"decoded size {data.size} is not a multiple of the item size",
                path=self.path,
                obj=name,
                component=role,
            )
        return data

    # ------------------------------------------------------------------ tensors

    def read_tensor(
        self,
        name: str,
        to: str = "numpy",
        verify_checksum: bool | None = None,
        *,
        copy: bool = False,
    ):
        """The tensor as a numpy array (zero-copy and read-only when raw), a torch tensor,
        or a scipy.sparse matrix for sparse layouts."""
        if (
            to == "numpy"
            and not copy
            and not (self.verify if verify_checksum is None else verify_checksum)
        ):
            view = self._plain_view(name)
            if view is not None:
                return view
        _check_to(to)
        self._check_open()
        obj = self._object(name)
        require_known_types(obj, self.path, name)
        get = Parts(self, name, verify_checksum, copy=copy, writable=to == "torch" and not copy)
        if self.target is not None and len(obj.components) > 1 and obj.format != "chunked":
            get.prefetch(obj.components)  # a remote file: all parts in one round of requests
        if obj.format == "dense":  # the hot path skips the registry
            value = dense.read(obj, get)
        else:
            value = layouts.read(obj, get, path=self.path, name=name)
        if to == "torch":
            return to_torch(value)
        return value

    def _plain_view(self, name: str) -> np.ndarray | None:
        """The zero-copy view of a plain raw dense tensor, straight from the validation
        pass's summary (the common case of opening a file for one tensor); None for
        anything else, which takes the general path."""
        objects = self.manifest.objects
        if type(name) is not str or not isinstance(objects, manifest.ObjectTable):
            return None
        plain = objects.plain_of(name)
        if plain is None or plain[2] < 0 or not plain[3]:
            return None
        shape, dtype_name, offset, length = plain
        dt = dtypes.to_numpy(dtype_name)
        mm = self._map()
        return np.frombuffer(mm, dt, length // dt.itemsize, offset).reshape(shape)

    def iter_dense_rows(
        self, name: str, rows: int, *, verify: bool | None = None
    ) -> Iterator[np.ndarray]:
        """A dense tensor in consecutive blocks of up to ``rows`` along axis 0 (logical
        dtype): read-only views of raw data, streamed decoding of zstd data, so memory
        stays at one block however large the tensor (region rewrites of huge tensors).
        ``verify`` checks the stored digest first (one pass over the mapped bytes), so
        corrupt data raises ChecksumError before any block is handed out."""
        self._check_open()
        obj = self._object(name)
        if obj.format != "dense" or not obj.shape:
            raise UnsupportedError("needs a dense tensor of rank >= 1", path=self.path, obj=name)
        require_known_types(obj, self.path, name)
        comp = obj.components["data"]
        if self.verify if verify is None else verify:
            self._verify(name, "data", comp, self._stored(comp))
        n = obj.shape[0]
        row = dense.logical_dtype(comp).itemsize
        for s in obj.shape[1:]:
            row *= s
        rows = max(1, int(rows))
        stored_dt = _stored_dtype(comp)
        starts = range(0, n, rows)
        if comp.encoding == codecs.RAW:  # views of the map
            data = np.frombuffer(self._stored(comp), dtype=np.uint8)
            pieces = (data[s * row : min(s + rows, n) * row] for s in starts)
        else:
            sizes = [(min(s + rows, n) - s) * row for s in starts]
            pieces = codecs.get(comp.encoding).decode_pieces(self._stored(comp), sizes)
        try:
            for piece in pieces:
                out = dense.as_logical(_native(piece.view(stored_dt), comp), comp)
                yield out.reshape((-1,) + tuple(obj.shape[1:]))
        except codecs.CodecError as exc:
            raise DecodeError(str(exc), path=self.path, obj=name, component="data") from None

    def read_slice(
        self,
        name: str,
        index: Any = (),
        verify_checksum: bool | None = None,
        *,
        copy: bool = True,
        to: str = "numpy",
    ):
        """``read_tensor(name)[index]``, reading only what the selection needs: a chunked
        tensor decodes only the chunks holding selected elements (in parallel; integer arrays
        pick orthogonally), a block of whole rows of a CSR matrix reads only those rows. An
        owned array, unless ``copy`` is False: then raw data may come back as a read-only
        view of the file (numpy basic indexing of a dense tensor, one whole chunk).
        ``to="torch"``: a torch tensor (sharing the owned array's memory; a read-only view
        is copied, torch having no read-only tensors)."""
        _check_to(to)
        if not copy and not (self.verify if verify_checksum is None else verify_checksum):
            view = self._plain_view(name)
            if view is not None and select.is_basic(index):
                try:
                    picked = view[index]
                except IndexError as exc:
                    raise InvalidIndexError(str(exc), path=self.path, obj=name) from None
                return picked if to == "numpy" else _as_torch(picked)
        self._check_open()
        obj = self._object(name)
        require_known_types(obj, self.path, name)
        get = Parts(self, name, verify_checksum)
        try:
            value = layouts.read_selection(obj, get, index, path=self.path, name=name, copy=copy)
        except IndexError as exc:
            if isinstance(exc, ZTensorError):
                raise
            raise InvalidIndexError(str(exc), path=self.path, obj=name) from None
        return value if to == "numpy" else _as_torch(value)

    def read_points(self, name: str, index: Any, verify_checksum: bool | None = None):
        """The elements at a point-wise selection, as zarr's ``vindex`` and xarray's
        vectorised indexing pick them: integer arrays (one per axis, or slices) broadcast
        together and pick one element per position; the result has their broadcast shape,
        then the axes selected by slices. A chunked tensor decodes only the chunks that
        hold a selected point. An owned array."""
        self._check_open()
        obj = self._object(name)
        require_known_types(obj, self.path, name)
        get = Parts(self, name, verify_checksum)
        try:
            return layouts.read_points(obj, get, index, path=self.path, name=name)
        except IndexError as exc:
            raise InvalidIndexError(str(exc), path=self.path, obj=name) from None

    def chunks(self, name: str) -> dict[tuple[int, ...], Component]:
        """Where every stored chunk of a ``chunked`` object is: grid index -> component
        (from its index segments, or its one-component-per-chunk roles in older files).
        Chunks never written are absent (they read as the fill value)."""
        from .layouts import chunked  # concurrent.futures comes with it: chunked files only

        obj = self._object(name)
        if obj.format != chunked.FORMAT:
            raise UnsupportedError(
                f"{obj.format!r} objects have no chunks", path=self.path, obj=name
            )
        table = chunked.ChunkTable(obj, Parts(self, name, None))
        return {
            index: obj.components[where] if isinstance(where, str) else where
            for index, where in table.stored()
        }

    def chunk_blobs(self, name: str) -> dict[tuple[int, ...], tuple[Component, memoryview]]:
        """Every stored chunk of a ``chunked`` object as (component, stored bytes), zero-copy,
        each blob checked against the file first (what compact and merge copy)."""
        from .layouts import chunked  # concurrent.futures comes with it: chunked files only

        grid = chunked.chunk_grid(self._object(name), self.path, name)
        chunks = self.chunks(name)
        fetched = self.fetch(name, chunks.values()) or {}
        out = {}
        for index, comp in chunks.items():
            if comp not in self._object(name).components.values():
                label = chunked.chunk_role(index)
                validation.check_blob(
                    self.manifest.objects, comp, self.path, name, label, grid.nbytes(index)
                )
            stored = fetched.get((comp.offset, comp.length))
            out[index] = (comp, self._stored(comp) if stored is None else stored)
        return out

    def read_window(self, name: str, role: str, start: int, stop: int) -> np.ndarray | None:
        """Bytes ``[start, stop)`` of a raw component fetched alone (``Getter.window``); a
        mapped file has the whole component at hand: None."""
        return None

    def fetch(self, name: str, parts: Iterable[str | Component]) -> dict | None:
        """The stored bytes of parts of object ``name`` about to be read (roles, or blobs an
        index locates), keyed by role or by (offset, length): a file read through a byte
        source fetches them in few merged, concurrent requests. A mapped file needs none:
        None."""
        return None

    def object_digest(self, name: str) -> str:
        """A digest of the object's manifest entry: two readers see the same tensor (same
        bytes at the same place) exactly when they give the same digest, so a reader in
        another process can check it still reads what a lazy array was built from."""
        digest = self._digests.get(name)
        if digest is None:
            import hashlib  # ~1 ms: only for lazy arrays that check their source

            entry = manifest.encode_object(self._object(name))
            digest = self._digests[name] = hashlib.blake2b(entry, digest_size=16).hexdigest()
        return digest

    def read_components(
        self, name: str, verify_checksum: bool | None = None, *, copy: bool = False
    ) -> dict[str, np.ndarray]:
        """Every stored part of an object as it is in the file: role -> 1-D array in the
        component's logical dtype (f8 and complex as such). For `quantized_group` this is
        the packed weights, scales and zero points; for `ggml_quantized` the raw blocks."""
        self._check_open()
        obj = self._object(name)
        require_known_types(obj, self.path, name)
        return {
            role: dense.as_logical(
                self.read_component(name, role, verify=verify_checksum, copy=copy), comp
            )
            for role, comp in obj.components.items()
        }

    def read_tensors(
        self,
        names: Iterable[str],
        to: str = "numpy",
        verify_checksum: bool | None = None,
        *,
        copy: bool = False,
        workers: int | None = None,
    ) -> list:
        """Several tensors; compressed ones are decoded in parallel (zstd releases the GIL)."""
        names = list(names)
        for n in names:
            self._object(n)
        if workers == 1 or len(names) < 2:
            return [self.read_tensor(n, to, verify_checksum, copy=copy) for n in names]
        from concurrent.futures import ThreadPoolExecutor  # ~15 ms to import: only when used

        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            return list(
                pool.map(lambda n: self.read_tensor(n, to, verify_checksum, copy=copy), names)
            )

    def to_dict(self, *, copy: bool = True, verify_checksum: bool | None = None) -> dict:
        """Every tensor as an owned numpy array (or scipy.sparse), read in parallel."""
        names = self.tensor_names
        return dict(
            zip(names, self.read_tensors(names, verify_checksum=verify_checksum, copy=copy))
        )


class SourceReader(Reader):
    """A Reader over a byte source (``sources.py``): a URL, bytes-like file contents, or an
    open binary file object. The same surface and checks as a Reader of a local file; bytes
    are fetched instead of mapped. Opening costs the source's tail read (footer, manifest and
    what precedes them within ``_TAIL_READ`` bytes; HTTP and S3 sources ask for the header
    magic in the same round trip), plus one more round trip only for a manifest larger than
    the tail (with the magic, when it did not come along). Small stored
    parts (up to ``KEEP_ONE`` bytes, ``KEEP_ALL`` in all) are kept once fetched: coordinates
    and chunk index segments are read once per reader. Views are read-only, as a map's."""

    KEEP_ONE = 1 << 20
    KEEP_ALL = 16 << 20

    def __init__(
        self,
        path,
        *,
        verify: bool = False,
        end: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        where = sources.target(path, storage_options)
        if isinstance(where, str):
            raise ArgumentTypeError("a SourceReader needs a URL, contents or a file object")
        if end is not None:
            raise InvalidArgumentError("end= needs a local file", path=where.name)
        self.target = where
        self.path = where.name
        self.verify = verify
        self._lock = threading.Lock()
        self._map_read = None
        self._fd = -1
        self._digests: dict[str, str] = {}
        self._kept: OrderedDict[tuple[int, int], memoryview] = OrderedDict()
        self._inflight: dict[tuple[int, int], threading.Event] = {}  # small spans being fetched
        self._kept_bytes = 0
        self._src = where.open(_TAIL_READ)
        self.identity = self._src.version
        self.size = self._src.size
        try:
            self.manifest, self.manifest_offset = self._load_manifest()
        except BaseException:
            self._src.close()
            raise
        self._attributes = attrs_codec.decode_root(self.manifest.attributes, self.path)

    def _pread(self, n: int, offset: int) -> bytes:
        return bytes(self._src.read(offset, n))

    def _load_manifest(self) -> tuple[Manifest, int]:
        src, size = self._src, self.size
        tail = src.tail
        # the header magic: in the tail of a small file, else fetched with the tail by an
        # HTTP or S3 source (same object), else with the next request
        head = bytes(tail[:8]) if src.tail_start == 0 else src.head
        try:
            start, length = manifest.locate(size, bytes(tail[-constants.FOOTER_SIZE :]), self.path)
        except ZTensorError:  # first say what the file is, if it is no v1 file
            if self._is_legacy(head if head is not None else self._pread(8, 0)):
                return self._legacy()
            raise
        spans = [] if head is not None else [(0, 8)]
        if start < src.tail_start:  # a manifest larger than the tail: its first part too
            spans.append((start, src.tail_start - start))
        got = src.read_many(spans)  # one round trip, concurrent requests
        if head is None:
            head = bytes(got.pop(0))
        if self._is_legacy(head):
            return self._legacy()
        first = bytes(got[0]) if got else b""
        data = first + bytes(tail[max(0, start - src.tail_start) : size - src.tail_start])
        data = data[:length]
        return validation.load(data, start, path=self.path), start

    def _is_legacy(self, head: bytes) -> bool:
        """Whether the header magic is v0.1's (False: v1's); FormatError for neither."""
        if head == constants.LEGACY_MAGIC:
            return True
        if head != constants.MAGIC:
            raise FormatError(f"not a zTensor file (magic {head[:8]!r})", path=self.path)
        return False

    def _legacy(self) -> tuple[Manifest, None]:
        from . import legacy  # v0.1 only: its parser and layouts load when met

        return legacy.read_manifest(self._pread, self.size, self.path)

    def close(self) -> None:
        self._src.close()
        self._kept.clear()

    @property
    def closed(self) -> bool:
        return self._src.closed

    def __del__(self) -> None:
        pass  # nothing of the system's to release

    def _check_open(self) -> None:
        if self._src.closed:
            raise ZTensorError("reader is closed", path=self.path)

    def _map(self):
        buffer = self._src.buffer
        if buffer is None:
            raise UnsupportedError("the file is not in memory", path=self.path)
        return buffer

    def _plain_view(self, name: str) -> np.ndarray | None:
        return None if self._src.buffer is None else super()._plain_view(name)

    def _span(self, offset: int, length: int) -> memoryview:
        """Stored bytes: a view of a file in memory, or kept, or fetched (and kept if small)."""
        self._check_open()
        buffer = self._src.buffer
        if buffer is not None:
            return buffer[offset : offset + length]
        key = (offset, length)
        keep = 0 < length <= self.KEEP_ONE and not self._src.held(offset, length)
        while True:
            with self._lock:
                kept = self._kept.get(key)
                if kept is not None:
                    self._kept.move_to_end(key)
                    return kept
                busy = self._inflight.get(key) if keep else None
                if busy is None:
                    if keep:  # threads asking for it meanwhile wait for this fetch
                        self._inflight[key] = threading.Event()
                    break
            busy.wait()  # kept when that fetch succeeded; else fetched here
        try:
            data = self._src.read(offset, length)
            if keep:
                self._keep([(key, data)])
        finally:
            if keep:
                with self._lock:
                    self._inflight.pop(key).set()
        return data

    def _keep(self, items) -> None:
        """Keep fetched (span, bytes), the least recently used leaving past KEEP_ALL."""
        with self._lock:
            for key, data in items:
                if key not in self._kept:
                    self._kept[key] = data
                    self._kept_bytes += key[1]
            while self._kept_bytes > self.KEEP_ALL:
                self._kept_bytes -= self._kept.popitem(last=False)[0][1]

    def _stored(
        self, comp: Component, private: bool = False, scattered: bool = False
    ) -> memoryview:
        data = self._span(comp.offset, comp.length)
        return memoryview(bytearray(data)) if private else data

    def _drop_pages(self, comp: Component) -> None:
        pass  # nothing mapped

    def _readinto(self, out: np.ndarray, offset: int, name: str, role: str) -> None:
        buf = memoryview(out.reshape(-1).view(np.uint8))
        buf[:] = self._span(offset, buf.nbytes)

    def read_window(self, name: str, role: str, start: int, stop: int) -> np.ndarray | None:
        if self._src.buffer is not None:
            return None
        self._check_open()
        comp = self._object(name).components[role]
        if comp.encoding != codecs.RAW or comp.byte_order != "little":
            return None
        if not 0 <= start <= stop <= comp.length:
            return None
        return np.frombuffer(self._span(comp.offset + start, stop - start), dtype=np.uint8)

    def fetch(self, name: str, parts: Iterable[str | Component]) -> dict | None:
        if self._src.buffer is not None:
            return None
        self._check_open()
        comps = self._object(name).components
        keys, spans = [], []
        for part in parts:
            comp = comps.get(part) if isinstance(part, str) else part
            if comp is None or not comp.length:
                continue
            span = (comp.offset, comp.length)
            # only what lies in the blob area: a read's own checks refuse the rest
            if comp.offset < 8 or comp.offset + comp.length > (self.manifest_offset or 0):
                continue
            if span in self._kept or self._src.held(comp.offset, comp.length):
                continue
            keys.append(part if isinstance(part, str) else span)
            spans.append(span)
        return dict(zip(keys, self._src.read_many(spans))) if spans else None

    def prefetch(self, names: Iterable[str]) -> None:
        """Fetch and keep the stored parts of these objects now, in few merged concurrent
        requests (parts larger than ``KEEP_ONE`` are skipped): what is read next is then
        served from memory. xarray opens fetch their index coordinates this way."""
        if self._src.buffer is not None:
            return
        spans = []
        for name in names:
            for comp in self._object(name).components.values():
                if 0 < comp.length <= self.KEEP_ONE and not self._src.held(
                    comp.offset, comp.length
                ):
                    spans.append((comp.offset, comp.length))
        spans = [s for s in dict.fromkeys(spans) if s not in self._kept]
        if spans:
            self._keep(zip(spans, self._src.read_many(spans)))


class Parts:
    """The stored parts of one object as a layout reads them (``layouts.base.Getter``)."""

    __slots__ = ("copy", "fetched", "fetches", "name", "reader", "verify", "writable")

    def __init__(
        self, reader: Reader, name: str, verify: bool | None, *, copy=False, writable=False
    ) -> None:
        self.reader, self.name, self.verify = reader, name, verify
        self.copy, self.writable = copy, writable
        self.fetched: dict | None = None  # bytes fetched ahead by ``prefetch``
        self.fetches = reader.target is not None  # a byte source, not a mapped file

    def __call__(self, role: str) -> np.ndarray:
        if self.fetched:  # bytes fetched ahead (a remote file)
            return self.reader.read_component(
                self.name,
                role,
                verify=self.verify,
                copy=self.copy,
                writable_view=self.writable,
                stored=self.fetched.pop(role, None),
            )
        return self.reader.read_component(
            self.name, role, verify=self.verify, copy=self.copy, writable_view=self.writable
        )

    def prefetch(self, parts: Iterable[str | Component]) -> None:
        """Fetch these parts ahead of reading them (``Reader.fetch``); nothing to do for a
        mapped file."""
        fetched = self.reader.fetch(self.name, parts)
        if fetched:
            self.fetched = {**self.fetched, **fetched} if self.fetched else fetched

    def prefix(self, role: str, nbytes: int) -> np.ndarray:
        return self.reader.read_component_prefix(self.name, role, nbytes, verify=self.verify)

    def located(self, comp: Component, label: str, nbytes: int) -> np.ndarray:
        stored = self.fetched.get((comp.offset, comp.length)) if self.fetched else None
        return self.reader.read_located(
            self.name, comp, label, nbytes, verify=self.verify, copy=self.copy, stored=stored
        )

    def window(self, role: str, start: int, stop: int) -> np.ndarray | None:
        reader = self.reader
        verify = reader.verify if self.verify is None else self.verify
        return None if verify else reader.read_window(self.name, role, start, stop)

    def scattered(self, role: str) -> np.ndarray:
        return self.reader.read_component(
            self.name, role, verify=self.verify, writable_view=True, scattered=True
        )


def _check_to(to: str) -> None:
    if to not in _TO:
        raise InvalidArgumentError(f"to= must be one of {_TO}, not {to!r}")


def _as_torch(value):
    """A selection as torch: a numpy scalar (every axis picked by an integer) as 0-d."""
    return to_torch(np.asarray(value) if isinstance(value, np.generic) else value)


def _stored_dtype(comp: Component) -> np.dtype:
    """The numpy dtype of a component's bytes as stored (legacy files may be big-endian)."""
    dt = dtypes.to_numpy(comp.dtype)
    return dt.newbyteorder(">") if comp.byte_order == "big" else dt


def _native(values: np.ndarray, comp: Component) -> np.ndarray:
    """Values viewed in ``_stored_dtype(comp)`` as the storage dtype every reader hands out:
    big-endian ones are swapped into a copy, others are returned as they are."""
    return values.astype(dtypes.to_numpy(comp.dtype)) if comp.byte_order == "big" else values


# ------------------------------------------------------------------ shared readers

_SHARED_MAX = 64
_shared: OrderedDict[tuple[str | sources.Target, bool], Reader] = OrderedDict()
_shared_lock = threading.Lock()


def shared_reader(path: str | os.PathLike | sources.Target, *, verify: bool = False) -> Reader:
    """This process's open Reader of ``path`` (at most 64 are kept, least recently used
    first out), reopened when the path no longer names the file in the state it was opened
    in (replaced, appended to or cut). Lazy arrays (Dask tasks, xarray variables) read
    through it, so a process maps each file once however many blocks it reads. Never close
    it: it is shared. A ``sources.Target`` (a URL...) is opened once and kept as it is:
    asking a server for its state on every block would cost a request each; a read of an
    object that changed since raises ``ObjectChangedError``, and ``TensorRef.open`` opens
    it anew."""
    if isinstance(path, sources.Target):
        key, now = (path, verify), None
    else:
        path = os.fspath(path)
        key = (path, verify)
        now = files.identity(path)
    with _shared_lock:
        reader = _shared.get(key)
        if reader is not None and (now is None or reader.identity == now):
            _shared.move_to_end(key)
            return reader
    reader = Reader(path, verify=verify)
    with _shared_lock:
        _shared[key] = reader
        _shared.move_to_end(key)
        while len(_shared) > _SHARED_MAX:
            _shared.popitem(last=False)  # closes when its last user lets go
    return reader


def share(reader: Reader) -> None:
    """Make ``reader`` (of a ``sources.Target``, just opened) this process's shared reader of
    its file, so lazy arrays built from it read without opening the file again."""
    if reader.target is None:
        raise ArgumentTypeError("only readers of URLs, contents or file objects are shared")
    key = (reader.target, reader.verify)
    with _shared_lock:
        _shared[key] = reader
        _shared.move_to_end(key)
        while len(_shared) > _SHARED_MAX:
            _shared.popitem(last=False)


def forget_shared(path: str | os.PathLike | sources.Target | None = None) -> None:
    """Drop the shared Readers of ``path`` (of every file when None): their files close once
    no array uses them any more."""
    if path is not None and not isinstance(path, sources.Target):
        path = os.fspath(path)
    with _shared_lock:
        for key in [k for k in _shared if path is None or k[0] == path]:
            del _shared[key]


class TensorRef(NamedTuple):
    """A tensor as a lazy array saw it when it was created: its file's path (or URL) and
    identity (``files.FileIdentity``; ``sources.Version`` for a target), the digest of its
    manifest entry, and for a file that is no local path the ``sources.Target`` to reach it
    (a URL with its storage options). Small and picklable (a file object's is not)."""

    path: str
    name: str
    file: files.FileIdentity | sources.Version
    digest: str
    target: sources.Target | None = None

    @classmethod
    def of(cls, reader: Reader, name: str) -> TensorRef:
        return cls(reader.path, name, reader.identity, reader.object_digest(name), reader.target)

    @property
    def token(self) -> tuple:
        """What fixes the tensor's data, for dask keys: the same tensor of the same file
        gives the same token, also after the file grew by appends."""
        if self.target is None:
            return (self.path, self.file.dev, self.file.ino, self.name, self.digest)
        return (*self.target.token, *self.file, self.name, self.digest)

    def open(self, *, verify: bool = False) -> Reader:
        """This process's shared Reader of the file, after checking that it still holds the
        tensor: the file may have grown by appends (the tensor unchanged), but a path that
        names another file, a file modified other than by appending, or a tensor replaced
        or removed raises ZTensorError. Lazy arrays read through this, so every process
        (Dask workers included) sees the data the array was made from, or an error. A
        target's reader is opened once per process (its manifest fetched once), and anew
        when it saw another state of the object than the ref."""
        if self.target is None:
            return self.check(shared_reader(self.path, verify=verify))
        reader = shared_reader(self.target, verify=verify)
        if reader.identity != self.file:
            forget_shared(self.target)
            reader = shared_reader(self.target, verify=verify)
        return self.check(reader)

    def check(self, reader: Reader) -> Reader:
        """``reader`` (a Reader of this path, opened after the ref was made) if it still
        holds the tensor as the ref saw it, by the rule of ``open``; ZTensorError if not."""
        now = reader.identity
        if now == self.file:
            return reader
        if self.target is not None:
            raise ObjectChangedError(
                "the object changed since the array was created; open it again",
                path=self.path,
                obj=self.name,
            )
        if _appended_to(self, now):
            return reader
        if now[:2] != self.file[:2]:
            why = "the file was replaced since the array was created"
        elif now.size <= self.file.size:
            why = "the file was modified since the array was created"
        else:
            why = "the tensor changed since the array was created"
        raise ZTensorError(f"{why}; open it again", path=self.path, obj=self.name)


_appends_seen: dict[tuple, bool] = {}  # (ref, identity now) -> only appended to since


def _appended_to(ref: TensorRef, now: files.FileIdentity) -> bool:
    """Whether the file ``ref`` was made from has only grown by appends that left the tensor
    as it was: the same inode, larger, the old state still intact at its old end, and the
    tensor's manifest entry the same now. Decided once per file state and process."""
    key = (ref, now)
    seen = _appends_seen.get(key)
    if seen is None:
        seen = False
        if now[:2] == ref.file[:2] and now.size > ref.file.size:
            try:
                with Reader(ref.path, end=ref.file.size) as old:
                    same_then = ref.name in old and old.object_digest(ref.name) == ref.digest
                current = shared_reader(ref.path)
                seen = (
                    same_then
                    and ref.name in current
                    and (current.object_digest(ref.name) == ref.digest)
                )
            except ZTensorError:
                seen = False
        if len(_appends_seen) > 4096:
            _appends_seen.clear()
        _appends_seen[key] = seen
    return seen


def refuse_marker(held: files.FileLock) -> None:
    """For a writer holding ``held``: refuse the file while an append marker names it (a
    parallel append in progress, or a dead appender's torn tail), except the marker of an
    append that died after its footer was complete (its manifest carries the token, so the
    file is whole): that marker is removed and the file is free (SPEC §9.3)."""
    marker = held.marker()
    if marker is None:
        return
    if marker.kind == "append":
        with Reader(held.path) as r:
            complete = (r.identity.dev, r.identity.ino) == held.ident and r.size == held.size
        if complete:
            held.end_append(marker)
            return
    raise files.marker_error(marker, held.path)
