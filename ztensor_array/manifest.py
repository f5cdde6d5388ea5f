"""The manifest data model (frozen dataclasses) and CBOR to and from it, with the footer.

Encoding reproduces the reference writer's CBOR byte for byte (definite lengths, shortest
integers, keys in its field order, object and component names sorted bytewise). Decoding
accepts any valid CBOR spelling of the same map and type-checks every field it turns into a
dataclass. What the fields must agree on (offsets, sizes, each format's rules) is checked by
``validation`` and the ``layouts``.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2

from . import dtypes
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

    def blob_end(self) -> int:
        """First byte after the last component (where the manifest goes)."""
        ends = [c.offset + c.length for o in self.objects.values() for c in o.components.values()]
        return max(ends, default=len(MAGIC))


PlainDense = tuple[tuple[int, ...], str, int, int]


class ObjectTable(Mapping):
    """The objects of a decoded manifest, turned into ``Object``s when first looked up.

    Opening a file with thousands of tensors then costs one CBOR decode plus one quick pass
    of checks (``validation.validate``), not thousands of dataclass constructions.
    """

    def __init__(self, raw: Mapping[str, Any], path: Path | None = None) -> None:
        self._raw = raw
        self._parsed: dict[str, Object] = {}
        self._path = path
        # Filled by validation.validate(): each plain dense object (one data component, no
        # v1.2 fields) as (shape, dtype name, offset, length), offset -1 when compressed, so
        # listing and zero-copy reads of them need no parsed ``Object``.
        self.plain: dict[str, PlainDense] = {}
        self._sorted: list[str] | None = None

    def raw_items(self):
        """(name, undecoded CBOR map) pairs, for checks that run before any parsing."""
        return self._raw.items()

    def sorted_names(self) -> list[str]:
        """Names in sorted order, computed once (a memoized manifest serves many readers);
        callers must not modify the list."""
        if self._sorted is None:
            self._sorted = sorted(self._raw)
        return self._sorted

    def __getitem__(self, name: str) -> Object:
        obj = self._parsed.get(name)
        if obj is None:
            obj = self._parsed[name] = _parse_object(self._raw[name], self._path, name)
        return obj

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw


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
    objects = {
        name: _object_to_cbor(manifest.objects[name]) for name in _sorted_bytewise(manifest.objects)
    }
    root: dict[str, Any] = {"version": manifest.version}
    if manifest.attributes:
        root["attributes"] = dict(manifest.attributes)
    root["objects"] = objects
    return _dumps(root)


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
        raise FormatError(f"manifest size {length} exceeds the 1 GiB limit", path=path)
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


def load_cbor(data: bytes, path: Path | None = None) -> Any:
    """Exactly one CBOR item filling ``data`` (also used for the v0.1 index)."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
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


def decode(data: bytes, *, path: Path | None = None) -> Manifest:
    """Manifest from CBOR bytes. Objects are parsed (and type-checked) on first access;
    ``validation.validate`` checks them all, so call it before handing the manifest out."""
    root = load_cbor(data, path)
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
    for name in raw_objects:
        if not isinstance(name, str):
            raise FormatError(f"object name {name!r} is not text", path=path)
    return Manifest(ObjectTable(raw_objects, path), attrs, version)
