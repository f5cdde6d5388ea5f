"""The manifest data model (frozen dataclasses) and CBOR to and from it, with the footer.

Encoding reproduces the reference writer's CBOR byte for byte (definite lengths, shortest
integers, keys in its field order, object and component names sorted bytewise). Decoding
accepts any valid CBOR spelling of the same map and type-checks every field it turns into a
dataclass. What the fields must agree on (offsets, sizes, each format's rules) is checked by
``validation`` and the ``layouts``.
"""

from __future__ import annotations

import bisect
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
import numpy as np

from . import constants, dtypes
from .codecs import ENCODINGS, RAW
from .constants import FOOTER_SIZE, MAGIC, MAX_MANIFEST_SIZE, WRITE_VERSION
from .errors import FormatError, TornFileError, UnsupportedError, ZTensorError

Path = str | os.PathLike


@dataclass(frozen=True, slots=True)
class Component:
    """One stored blob: where it is, its storage dtype, encoding and optional digest."""

    dtype: str
    offset: int
    length: int
    encoding: str = RAW
    digest: str | None = None
    uncompressed_length: int | None = None  # written by v1.2 writers; we read it
    type: str | None = None  # v1.2 logical type over the storage dtype (f8, complex)
    byte_order: str = "little"  # only legacy v0.1 files can say "big"; never written

    def moved(self, offset: int) -> Component:
        return replace(self, offset=offset)


@dataclass(frozen=True, slots=True)
class Object:
    """One named tensor: logical shape, layout `format`, its components and attributes."""

    shape: tuple[int, ...]
    format: str
    components: Mapping[str, Component]
    attributes: Mapping[str, Any] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class Manifest:
    objects: Mapping[str, Object] = field(default_factory=dict)
    attributes: Mapping[str, Any] | None = None
    version: str = WRITE_VERSION
    extra: Mapping[str, Any] | None = None  # root keys this version does not know: kept

    def blob_end(self) -> int:
        """First byte after the last component (where the manifest goes)."""
        ends = [c.offset + c.length for o in self.objects.values() for c in o.components.values()]
        return max(ends, default=len(MAGIC))


PlainDense = tuple[tuple[int, ...], str, int, int]  # shape, dtype, raw offset (-1), length


class PlainColumns:
    """Plain dense objects (one ``data`` component, no attributes, no v1.2 fields) as
    columns: a file of 100,000 tensors is kept as a few arrays, not 100,000 Python maps,
    and a name is found by binary search in its sorted UTF-8 names."""

    __slots__ = (
        "digests",
        "dims",
        "dtypes",
        "encodings",
        "lengths",
        "names",
        "ndims",
        "offsets",
        "starts",
    )

    def __init__(
        self,
        names: list[str],
        dtypes: np.ndarray,
        encodings: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        ndims: np.ndarray,
        dims: np.ndarray,
        digests: list[str | None] | None,
    ) -> None:
        encoded = np.array(list(map(str.encode, names)), dtype=bytes)
        order = None
        if len(encoded) > 1 and not bool(np.all(encoded[:-1] < encoded[1:])):
            order = np.argsort(encoded, kind="stable")
            encoded = encoded[order]
        starts = np.zeros(len(ndims) + 1, dtype=np.int64)
        np.cumsum(ndims, out=starts[1:])
        if order is not None:  # rows follow the sorted names; dims are regrouped
            counts = ndims[order]
            first = np.zeros(len(order) + 1, dtype=np.int64)
            np.cumsum(counts, out=first[1:])
            within = np.arange(int(first[-1]), dtype=np.int64) - np.repeat(first[:-1], counts)
            dims = dims[np.repeat(starts[:-1][order], counts) + within]
            ndims, dtypes, encodings = ndims[order], dtypes[order], encodings[order]
            offsets, lengths = offsets[order], lengths[order]
            digests = None if digests is None else [digests[i] for i in order]
            np.cumsum(ndims, out=starts[1:])
        self.names = encoded
        self.dtypes, self.encodings, self.offsets, self.lengths = (
            dtypes,
            encodings,
            offsets,
            lengths,
        )
        self.ndims, self.dims, self.starts = ndims, dims, starts
        self.digests = (
            None
            if digests is None or not any(digests)
            else np.array([(d or "").encode("ascii") for d in digests], dtype=bytes)
        )

    def __len__(self) -> int:
        return len(self.names)

    def row(self, name: str) -> int:
        """The row of ``name``, or -1."""
        key = name.encode("utf-8", "surrogatepass")
        i = int(np.searchsorted(self.names, key))
        return i if i < len(self.names) and self.names[i] == key else -1

    def name(self, i: int) -> str:
        return self.names[i].decode("utf-8")

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.dims[self.starts[i] : self.starts[i + 1]].tolist())

    def summary(self, i: int) -> PlainDense:
        offset = int(self.offsets[i]) if self.encodings[i] == 0 else -1
        return self.shape(i), DTYPE_NAMES[self.dtypes[i]], offset, int(self.lengths[i])

    def component(self, i: int) -> Component:
        digest = None
        if self.digests is not None and self.digests[i]:
            digest = self.digests[i].decode("ascii")
        return Component(
            DTYPE_NAMES[self.dtypes[i]],
            int(self.offsets[i]),
            int(self.lengths[i]),
            ENCODING_NAMES[self.encodings[i]],
            digest,
        )

    def subset(self, keep: np.ndarray) -> PlainColumns:
        """The rows where ``keep`` is True (names stay sorted)."""
        out = PlainColumns.__new__(PlainColumns)
        row = np.repeat(np.arange(len(self.ndims)), self.ndims)
        out.names = self.names[keep]
        out.dtypes, out.encodings = self.dtypes[keep], self.encodings[keep]
        out.offsets, out.lengths = self.offsets[keep], self.lengths[keep]
        out.ndims = self.ndims[keep]
        out.dims = self.dims[keep[row]] if len(row) else self.dims
        out.starts = np.zeros(len(out.ndims) + 1, dtype=np.int64)
        np.cumsum(out.ndims, out=out.starts[1:])
        out.digests = None if self.digests is None else self.digests[keep]
        return out

    def nbytes(self) -> int:
        """Memory the columns hold (the memo's bound counts it)."""
        parts = (
            self.names,
            self.dtypes,
            self.encodings,
            self.offsets,
            self.lengths,
            self.ndims,
            self.dims,
            self.starts,
            self.digests,
        )
        return sum(p.nbytes for p in parts if p is not None)


# codes of the columns: a dtype or encoding name by its index here
DTYPE_NAMES: tuple[str, ...] = tuple(dtypes.BY_NAME)
ENCODING_NAMES: tuple[str, ...] = (RAW, *sorted(ENCODINGS - {RAW}))


class ObjectTable(Mapping):
    """The objects of a manifest, turned into ``Object``s when first looked up.

    After validation (``validation.validate``) the plain dense objects are columns
    (``plain``) and only the others keep their decoded CBOR maps, so opening a file with
    100,000 tensors costs one CBOR decode plus one vectorised pass of checks, and a kept
    (memoized) manifest costs a few arrays, not a Python object per tensor.
    """

    def __init__(self, raw: Mapping[str, Any], path: Path | None = None) -> None:
        self._raw = raw  # name -> decoded CBOR map (after validation: the non-plain ones)
        self._parsed: dict[str, Object] = {}
        self._path = path
        self.plain: PlainColumns | None = None  # set by validation
        # Also filled by validation.validate(): the byte spans of every component, sorted
        # (n, 2), and where the blob area ends; blobs a chunk index locates are checked
        # against them when read.
        self.spans = None
        self.blob_end = 0
        self._sorted: list[str] | None = None

    def entry(self, name: str) -> Mapping[str, Any]:
        """What a full re-encoding writes for an object it keeps: its decoded CBOR map
        (unknown keys and all), or for a plain dense object the map its columns make."""
        raw = self._raw.get(name)
        if raw is not None:
            return raw
        i = self.plain.row(name)
        return _object_to_cbor(
            Object(self.plain.shape(i), "dense", {"data": self.plain.component(i)})
        )

    def derived(self, added: Mapping[str, Object], removed) -> ObjectTable:
        """The table of the manifest an append wrote: this one's objects less ``removed``
        and those ``added`` replace, plus ``added``; work in proportion to what changed
        (dict and array copies aside). Not validated: ``validation.validate_appended``
        checks the added objects."""
        gone = set(removed) | set(added)
        out = ObjectTable(dict(self._raw), self._path)
        out._parsed = dict(self._parsed)
        for n in gone:
            out._raw.pop(n, None)
            out._parsed.pop(n, None)
        out._raw.update((n, _object_to_cbor(obj)) for n, obj in added.items())
        out._parsed.update(added)
        plain = self.plain
        if plain is not None:
            rows = [i for i in map(plain.row, gone) if i >= 0]
            if rows:
                keep = np.ones(len(plain), dtype=bool)
                keep[rows] = False
                plain = plain.subset(keep)
        out.plain = plain
        if self._sorted is not None:
            names = list(self._sorted)
            for n in gone:
                i = bisect.bisect_left(names, n)
                if i < len(names) and names[i] == n:
                    del names[i]
            for n in added:
                bisect.insort(names, n)
            out._sorted = names
        return out

    def raw_items(self):
        """(name, undecoded CBOR map) pairs of the objects not held as columns."""
        return self._raw.items()

    def keep_plain(self, plain: PlainColumns, rest: list[str]) -> None:
        """After validation: ``plain`` holds the plain dense objects, the CBOR maps of the
        others (``rest``) are kept, those of the plain ones dropped."""
        raw = self._raw
        self._raw = {name: raw[name] for name in rest}
        self.plain = plain

    def plain_of(self, name: str) -> PlainDense | None:
        """(shape, dtype, raw offset or -1, length) of a plain dense object, else None."""
        plain = self.plain
        if plain is None or type(name) is not str:
            return None
        i = plain.row(name)
        return None if i < 0 else plain.summary(i)

    def plain_items(self):
        """(name, PlainDense) of every plain dense object, in name order."""
        plain = self.plain
        for i in range(len(plain) if plain is not None else 0):
            yield plain.name(i), plain.summary(i)

    def sorted_names(self) -> list[str]:
        """Names in sorted order, computed once (a memoized manifest serves many readers);
        callers must not modify the list."""
        if self._sorted is None:
            names = list(self._raw)
            if self.plain is not None:
                names += [n.decode("utf-8") for n in self.plain.names.tolist()]
            self._sorted = sorted(names)
        return self._sorted

    def __getitem__(self, name: str) -> Object:
        obj = self._parsed.get(name)
        if obj is not None:
            return obj
        raw = self._raw.get(name) if type(name) is str else None
        if raw is not None:
            obj = _parse_object(raw, self._path, name)
        else:
            i = self.plain.row(name) if self.plain is not None and type(name) is str else -1
            if i < 0:
                raise KeyError(name)
            plain = self.plain
            obj = Object(plain.shape(i), "dense", {"data": plain.component(i)}, None)
        self._parsed[name] = obj
        return obj

    def __iter__(self):
        return iter(self.sorted_names())

    def __len__(self) -> int:
        return len(self._raw) + (len(self.plain) if self.plain is not None else 0)

    def __contains__(self, name: object) -> bool:
        if type(name) is not str:
            return False
        if name in self._raw:
            return True
        return self.plain is not None and self.plain.row(name) >= 0


# --------------------------------------------------------------------------- encoding


def _sorted_bytewise(names) -> list[str]:
    return sorted(names, key=lambda s: s.encode("utf-8"))


def _component_to_cbor(c: Component) -> dict[str, Any]:
    # Key order of the reference writers: 1.1.1's fields, with v1.2's `type` right after
    # `dtype` and `uncompressed_length` right after `length`, as ztensor 1.2.3 writes them.
    out: dict[str, Any] = {"dtype": c.dtype}
    if c.type is not None:
        out["type"] = c.type
    out["offset"] = c.offset
    out["length"] = c.length
    if c.uncompressed_length is not None:
        out["uncompressed_length"] = c.uncompressed_length
    if c.encoding != RAW:
        out["encoding"] = c.encoding
    if c.digest is not None:
        out["digest"] = c.digest
    return out


def _object_to_cbor(obj: Object) -> dict[str, Any]:
    o: dict[str, Any] = {"shape": list(obj.shape), "format": obj.format}
    if obj.attributes:
        o["attributes"] = dict(obj.attributes)
    o["components"] = {
        role: _component_to_cbor(obj.components[role]) for role in _sorted_bytewise(obj.components)
    }
    return o


def encode_object(obj: Object) -> bytes:
    """CBOR bytes of one object's manifest entry, as ``encode`` writes it."""
    return _dumps(_object_to_cbor(obj))


def _dumps(value: Any) -> bytes:
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ZTensorError(f"attributes cannot be encoded as CBOR: {exc}") from None


def encode(manifest: Manifest) -> bytes:
    """CBOR bytes of the manifest, in the reference writer's exact shape."""
    names = _sorted_bytewise(manifest.objects)
    return encode_entries(
        manifest.version,
        manifest.attributes,
        manifest.extra,
        len(names),
        ((name, manifest.objects[name]) for name in names),
    )


Entry = Object | Mapping[str, Any]  # a parsed object, or a CBOR map as decoded


def encode_entries(
    version: str,
    attributes: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
    count: int,
    entries,
) -> bytes:
    """CBOR bytes of a manifest whose ``count`` objects come as (name, entry) pairs in the
    order to write (sorted bytewise, as the reference writes them)."""
    out = io.BytesIO()
    out.write(_root_head(version, attributes, extra, count))
    enc = cbor2.CBOREncoder(out)
    written = 0
    try:
        for name, entry in entries:
            enc.encode(name)
            enc.encode(_object_to_cbor(entry) if isinstance(entry, Object) else entry)
            written += 1
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ZTensorError(f"attributes cannot be encoded as CBOR: {exc}") from None
    if written != count:
        raise ValueError(f"{written} objects given for a manifest of {count}")
    return out.getvalue()


def _root_head(
    version: str, attributes: Mapping[str, Any] | None, extra: Mapping[str, Any] | None, count: int
) -> bytes:
    """The bytes before the first object entry: the root map's header, its keys other
    than ``objects`` with their values, then ``objects`` (always the last key) and the
    header of its map of ``count`` entries."""
    out = io.BytesIO()
    enc = cbor2.CBOREncoder(out)
    root: dict[str, Any] = {"version": version}
    if attributes:
        root["attributes"] = dict(attributes)
    for key, value in (extra or {}).items():
        root.setdefault(key, value)
    try:
        enc.encode_length(5, len(root) + 1)
        for key, value in root.items():
            enc.encode(key)
            enc.encode(value)
        enc.encode("objects")
        enc.encode_length(5, count)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ZTensorError(f"attributes cannot be encoded as CBOR: {exc}") from None
    return out.getvalue()


def splice(
    source: bytes | memoryview,
    before: Manifest,
    attributes: Mapping[str, Any] | None,
    dropped: set[str],
    added: Mapping[str, Object],
    *,
    extra: Mapping[str, Any] | None = None,
) -> bytes | None:
    """The manifest of an append, made from the bytes of the one before (``source``,
    which decoded to ``before``) without encoding its objects again: the root head is
    written anew (new attributes, ``extra`` root keys if given, and count), the old
    entries are copied as they are (less those ``dropped``: removed or replaced), the
    ``added`` entries follow them. Object order in the map carries no meaning (SPEC §3),
    so the bytes of the kept entries stay one block. None when ``source`` is not laid out
    as ``encode`` lays a manifest out (the caller then encodes every object), or a dropped
    entry cannot be located."""
    count = len(before.objects)
    head = _root_head(before.version, before.attributes, before.extra, count)
    view = memoryview(source)
    if view[: len(head)] != head:
        return None
    spans = _entry_spans(source, len(head), count, dropped) if dropped else []
    if spans is None:
        return None
    pieces, pos = [], len(head)
    for start, end in spans:  # the kept runs between the dropped entries
        pieces.append(view[pos:start])
        pos = end
    pieces.append(view[pos:])
    new_count = count - len(dropped) + len(added)
    extra = before.extra if extra is None else extra
    out = [_root_head(before.version, attributes, extra, new_count), *pieces]
    out += [_dumps(name) + _dumps(_object_to_cbor(added[name])) for name in sorted(added)]
    return b"".join(out)


def _entry_spans(
    source: bytes | memoryview, first: int, count: int, names: set[str]
) -> list | None:
    """Byte spans (key and value) of the entries named ``names`` in the objects map whose
    ``count`` entries start at ``first`` and run to the end of ``source``; None unless
    exactly those entries are found and the map ends where ``source`` does. Decodes every
    entry (cbor2, item by item) to learn where each ends: for removals and replacements
    only."""
    stream = io.BytesIO(source)
    stream.seek(first)
    dec = cbor2.CBORDecoder(stream)
    spans = []
    try:
        for _ in range(count):
            start = stream.tell()
            key = dec.decode()
            dec.decode()
            if key in names:
                spans.append((start, stream.tell()))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError):
        return None
    if stream.tell() != len(source) or len(spans) != len(names):
        return None
    return spans


def footer(manifest_bytes: bytes) -> bytes:
    return len(manifest_bytes).to_bytes(8, "little") + MAGIC


# --------------------------------------------------------------------------- decoding


def locate(size: int, tail: bytes, path: Path | None) -> tuple[int, int]:
    """(offset, length) of the manifest from the file size and its last 16 bytes."""
    if size < len(MAGIC) + FOOTER_SIZE:
        raise TornFileError(
            f"file of {size} bytes is too short to be a zTensor file "
            "(torn write? see ztensor_array.repair)",
            path=path,
        )
    if tail[8:16] != MAGIC:
        raise TornFileError(
            "footer magic is missing: the file is truncated or its last write was torn; "
            "ztensor_array.repair(path) restores the last complete state",
            path=path,
        )
    length = int.from_bytes(tail[:8], "little")
    if length > MAX_MANIFEST_SIZE:
        raise FormatError(
            f"manifest size {length} exceeds the {MAX_MANIFEST_SIZE >> 20} MiB limit (SPEC §8)",
            path=path,
        )
    start = size - FOOTER_SIZE - length
    if start < len(MAGIC):
        raise FormatError(
            f"manifest size {length} does not fit in a file of {size} bytes", path=path
        )
    return start, length


def expect(cond: bool, message: str, path, obj=None, component=None) -> None:
    """FormatError naming the file, object and component unless ``cond`` holds."""
    if not cond:
        raise FormatError(message, path=path, obj=obj, component=component)


def is_uint(v: Any) -> bool:
    """Whether a decoded CBOR value is an unsigned integer (bool is not)."""
    return type(v) is int and v >= 0


def _parse_component(raw: Any, path, obj: str, role: str) -> Component:
    # Fast path for the common, well-formed case; anything unusual takes the checked path
    # below, which finds and names the exact problem.
    if type(raw) is dict and "type" not in raw and "uncompressed_length" not in raw:
        dtype = raw.get("dtype")
        offset = raw.get("offset")
        length = raw.get("length")
        encoding = raw.get("encoding", RAW)
        digest = raw.get("digest")
        if (
            type(dtype) is str
            and dtype in dtypes.BY_NAME
            and type(offset) is int
            and offset >= 0
            and type(length) is int
            and length >= 0
            and type(encoding) is str
            and encoding in ENCODINGS
            and (digest is None or type(digest) is str)
        ):
            return Component(dtype, offset, length, encoding, digest)
    return _parse_component_checked(raw, path, obj, role)


def _parse_component_checked(raw: Any, path, obj: str, role: str) -> Component:
    expect(isinstance(raw, Mapping), "component is not a map", path, obj, role)
    dtype = raw.get("dtype")
    offset = raw.get("offset")
    length = raw.get("length")
    encoding = raw.get("encoding", RAW)
    digest = raw.get("digest")
    ulen = raw.get("uncompressed_length")
    ltype = raw.get("type")
    expect(isinstance(dtype, str), f"dtype {dtype!r} is not text", path, obj, role)
    expect(is_uint(offset), f"offset {offset!r} is not an unsigned integer", path, obj, role)
    expect(is_uint(length), f"length {length!r} is not an unsigned integer", path, obj, role)
    expect(isinstance(encoding, str), f"encoding {encoding!r} is not text", path, obj, role)
    expect(digest is None or isinstance(digest, str), "digest is not text", path, obj, role)
    expect(ulen is None or is_uint(ulen), "uncompressed_length is invalid", path, obj, role)
    expect(ltype is None or isinstance(ltype, str), "type is not text", path, obj, role)
    if dtype not in dtypes.BY_NAME:
        raise UnsupportedError(f"unknown dtype {dtype!r}", path=path, obj=obj, component=role)
    # An unknown `type` (a newer writer's logical type) is kept: the object is listed and
    # reading it raises (require_known_types). A known type over the wrong dtype is refused.
    if ltype is not None and dtypes.is_known_type(ltype):
        try:
            dtypes.logical_name(dtype, ltype)
        except UnsupportedError as exc:
            raise UnsupportedError(exc.reason, path=path, obj=obj, component=role) from None
    if encoding not in ENCODINGS:
        raise UnsupportedError(f"unknown encoding {encoding!r}", path=path, obj=obj, component=role)
    return Component(dtype, offset, length, encoding, digest, ulen, ltype)


def _parse_object(raw: Any, path, name: str) -> Object:
    if type(raw) is dict:  # fast path, as for components
        shape = raw.get("shape")
        fmt = raw.get("format")
        comps = raw.get("components")
        attrs = raw.get("attributes")
        if (
            type(shape) is list
            and type(fmt) is str
            and type(comps) is dict
            and (attrs is None or type(attrs) is dict)
            and all(type(d) is int and d >= 0 for d in shape)
        ):
            components = {}
            for role, c in comps.items():
                if type(role) is not str:
                    break
                components[role] = _parse_component(c, path, name, role)
            else:
                return Object(tuple(shape), fmt, components, attrs)
    return _parse_object_checked(raw, path, name)


def _parse_object_checked(raw: Any, path, name: str) -> Object:
    expect(isinstance(raw, Mapping), "object is not a map", path, name)
    shape = raw.get("shape")
    fmt = raw.get("format")
    comps = raw.get("components")
    attrs = raw.get("attributes")
    expect(isinstance(shape, list), f"shape {shape!r} is not an array", path, name)
    expect(all(is_uint(d) for d in shape), f"shape {shape!r} has a non-uint entry", path, name)
    expect(isinstance(fmt, str), f"format {fmt!r} is not text", path, name)
    expect(isinstance(comps, Mapping), "components is not a map", path, name)
    expect(attrs is None or isinstance(attrs, Mapping), "attributes is not a map", path, name)
    components = {}
    for role, c in comps.items():
        expect(isinstance(role, str), f"component name {role!r} is not text", path, name)
        components[role] = _parse_component(c, path, name, role)
    return Object(tuple(shape), fmt, components, attrs)


def load_cbor(data: bytes, path: Path | None = None, *, manifest: bool = False) -> Any:
    """Exactly one CBOR item filling ``data`` (also used for the v0.1 index). For a
    ``manifest``, a root map of a few entries is decoded entry by entry, so that the
    declared size of its ``objects`` map is checked before that map is decoded."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(stream)
        root = _root_entries(data) if manifest else None
        if root is None:
            value = decoder.decode()
        else:
            stream.seek(root[1])
            value = {}
            for _ in range(root[0]):
                key = decoder.decode()
                if not isinstance(key, str):  # decoded as a map key it would differ
                    stream.seek(0)
                    value = decoder.decode()
                    break
                if key == "objects":
                    check_object_count(declared_length(data, stream.tell()), path)
                value[key] = decoder.decode()
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("manifest CBOR is nested too deeply", path=path) from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise FormatError(f"manifest is not valid CBOR ({exc})", path=path) from None
    if stream.tell() != len(data):
        raise FormatError(
            f"manifest has {len(data) - stream.tell()} trailing bytes after its CBOR item",
            path=path,
        )
    return value


_ROOT_ENTRIES_ONE_BY_ONE = 16  # root maps of more entries (none we know of) decode at once


def declared_length(data: bytes, pos: int, major: int = 5) -> int | None:
    """The entry count a definite-length CBOR header of ``major`` type at ``pos`` declares
    (5: map, 4: array); None for anything else (then the decoded value is checked)."""
    if pos >= len(data) or data[pos] >> 5 != major:
        return None
    info = data[pos] & 31
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + 1 + width > len(data):
        return None
    return int.from_bytes(data[pos + 1 : pos + 1 + width], "big")


def _root_entries(data: bytes) -> tuple[int, int] | None:
    """(entries, where they start) of a definite-length root map of a few entries."""
    count = declared_length(data, 0)
    if count is None or count > _ROOT_ENTRIES_ONE_BY_ONE:
        return None
    info = data[0] & 31
    return count, 1 + (0 if info < 24 else {24: 1, 25: 2, 26: 4, 27: 8}[info])


def check_object_count(count: int | None, path) -> None:
    """At most ``MAX_OBJECTS`` objects: decoding costs memory per object (SPEC §8)."""
    if count is not None and count > constants.MAX_OBJECTS:
        raise FormatError(
            f"manifest holds {count} objects, more than the {constants.MAX_OBJECTS} a "
            "file may hold (SPEC §8)",
            path=path,
        )


def decode(data: bytes, *, path: Path | None = None) -> Manifest:
    """Manifest from CBOR bytes. Objects are parsed (and type-checked) on first access;
    ``validation.validate`` checks them all, so call it before handing the manifest out."""
    root = load_cbor(data, path, manifest=True)
    expect(isinstance(root, Mapping), "manifest root is not a map", path)
    # both keys are required, as the reference requires them (an empty file has "objects": {})
    expect("version" in root, "manifest has no version", path)
    version = root["version"]
    expect(isinstance(version, str), f"version {version!r} is not text", path)
    major = version.split(".", 1)[0]
    if major != "1":
        raise UnsupportedError(f"manifest version {version!r} is not 1.x", path=path)
    attrs = root.get("attributes")
    expect(attrs is None or isinstance(attrs, Mapping), "attributes is not a map", path)
    expect("objects" in root, "manifest has no objects map", path)
    raw_objects = root["objects"]
    expect(isinstance(raw_objects, Mapping), "objects is not a map", path)
    check_object_count(len(raw_objects), path)  # an indefinite-length map, or many root entries
    for name in raw_objects:
        if not isinstance(name, str):
            raise FormatError(f"object name {name!r} is not text", path=path)
    extra = {k: v for k, v in root.items() if k not in _ROOT_KEYS} or None
    return Manifest(ObjectTable(raw_objects, path), attrs, version, extra)


_ROOT_KEYS = frozenset({"version", "attributes", "objects"})
