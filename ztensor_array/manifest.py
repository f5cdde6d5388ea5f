"""The manifest: frozen dataclasses, CBOR to and from them, and every structural validation.

Encoding reproduces the reference writer's CBOR byte for byte (definite lengths, shortest
integers, keys in its field order, object and component names sorted bytewise). Decoding
accepts any valid CBOR spelling of the same map. ``validate`` checks everything that can be
checked without reading tensor data; the layouts check the data itself.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import cbor2

from . import dtypes
from .codecs import ENCODINGS
from .codecs.policy import MAX_DECODE_RATIO as MAX_ZSTD_RATIO
from .constants import (
    ALIGNMENT,
    FOOTER_SIZE,
    MAGIC,
    MAX_MANIFEST_SIZE,
    WRITE_VERSION,
)
from .errors import FormatError, TornFileError, UnsupportedError, ZTensorError

_MAX_NBYTES = (1 << 63) - 1

Path = str | os.PathLike


@dataclass(frozen=True, slots=True)
class Component:
    """One stored blob: where it is, its storage dtype, encoding and optional digest."""

    dtype: str
    offset: int
    length: int
    encoding: str = "raw"
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
    of checks (``validate``), not thousands of dataclass constructions.
    """

    def __init__(self, raw: Mapping[str, Any], path: Path | None = None) -> None:
        self._raw = raw
        self._parsed: dict[str, Object] = {}
        self._path = path
        # Filled by validate(): each plain dense object (one data component, no v1.2 fields)
        # as (shape, dtype name, offset, length), offset -1 when compressed, so listing and
        # zero-copy reads of them need no parsed ``Object``.
        self.plain: dict[str, PlainDense] = {}
        self._sorted: list[str] | None = None

    def raw(self, name: str) -> Any:
        return self._raw[name]

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
    if c.encoding != "raw":
        out["encoding"] = c.encoding
    if c.digest is not None:
        out["digest"] = c.digest
    return out


def encode(manifest: Manifest) -> bytes:
    """CBOR bytes of the manifest, in the reference writer's exact shape."""
    objects = {}
    for name in _sorted_bytewise(manifest.objects):
        obj = manifest.objects[name]
        o: dict[str, Any] = {"shape": list(obj.shape), "format": obj.format}
        if obj.attributes:
            o["attributes"] = dict(obj.attributes)
        o["components"] = {
            role: _component_to_cbor(obj.components[role])
            for role in _sorted_bytewise(obj.components)
        }
        objects[name] = o
    root: dict[str, Any] = {"version": manifest.version}
    if manifest.attributes:
        root["attributes"] = dict(manifest.attributes)
    root["objects"] = objects
    try:
        return cbor2.dumps(root)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ZTensorError(f"attributes cannot be encoded as CBOR: {exc}") from None


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


def _expect(cond: bool, message: str, path, obj=None, component=None) -> None:
    if not cond:
        raise FormatError(message, path=path, obj=obj, component=component)


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def _parse_component(raw: Any, path, obj: str, role: str) -> Component:
    # Fast path for the common, well-formed case; anything unusual takes the checked path
    # below, which finds and names the exact problem.
    if type(raw) is dict and "type" not in raw and "uncompressed_length" not in raw:
        dtype = raw.get("dtype")
        offset = raw.get("offset")
        length = raw.get("length")
        encoding = raw.get("encoding", "raw")
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
    _expect(isinstance(raw, Mapping), "component is not a map", path, obj, role)
    dtype = raw.get("dtype")
    offset = raw.get("offset")
    length = raw.get("length")
    encoding = raw.get("encoding", "raw")
    digest = raw.get("digest")
    ulen = raw.get("uncompressed_length")
    ltype = raw.get("type")
    _expect(isinstance(dtype, str), f"dtype {dtype!r} is not text", path, obj, role)
    _expect(_is_uint(offset), f"offset {offset!r} is not an unsigned integer", path, obj, role)
    _expect(_is_uint(length), f"length {length!r} is not an unsigned integer", path, obj, role)
    _expect(isinstance(encoding, str), f"encoding {encoding!r} is not text", path, obj, role)
    _expect(digest is None or isinstance(digest, str), "digest is not text", path, obj, role)
    _expect(ulen is None or _is_uint(ulen), "uncompressed_length is invalid", path, obj, role)
    _expect(ltype is None or isinstance(ltype, str), "type is not text", path, obj, role)
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
    _expect(isinstance(raw, Mapping), "object is not a map", path, name)
    shape = raw.get("shape")
    fmt = raw.get("format")
    comps = raw.get("components")
    attrs = raw.get("attributes")
    _expect(isinstance(shape, list), f"shape {shape!r} is not an array", path, name)
    _expect(all(_is_uint(d) for d in shape), f"shape {shape!r} has a non-uint entry", path, name)
    _expect(isinstance(fmt, str), f"format {fmt!r} is not text", path, name)
    _expect(isinstance(comps, Mapping), "components is not a map", path, name)
    _expect(attrs is None or isinstance(attrs, Mapping), "attributes is not a map", path, name)
    components = {}
    for role, c in comps.items():
        _expect(isinstance(role, str), f"component name {role!r} is not text", path, name)
        components[role] = _parse_component(c, path, name, role)
    return Object(tuple(shape), fmt, components, attrs)


def _load_cbor(data: bytes, path) -> Any:
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


def load_cbor(data: bytes, path: Path | None = None) -> Any:
    """Exactly one CBOR item filling ``data`` (also used for the v0.1 index)."""
    return _load_cbor(data, path)


def decode(data: bytes, *, path: Path | None = None) -> Manifest:
    """Manifest from CBOR bytes. Objects are parsed (and type-checked) on first access;
    ``validate`` checks them all, so call it before handing the manifest out."""
    root = _load_cbor(data, path)
    _expect(isinstance(root, Mapping), "manifest root is not a map", path)
    version = root.get("version", WRITE_VERSION)
    _expect(isinstance(version, str), f"version {version!r} is not text", path)
    major = version.split(".", 1)[0]
    if major != "1":
        raise UnsupportedError(f"manifest version {version!r} is not 1.x", path=path)
    attrs = root.get("attributes")
    _expect(attrs is None or isinstance(attrs, Mapping), "attributes is not a map", path)
    raw_objects = root.get("objects", {})
    _expect(isinstance(raw_objects, Mapping), "objects is not a map", path)
    for name in raw_objects:
        if not isinstance(name, str):
            raise FormatError(f"object name {name!r} is not text", path=path)
    return Manifest(ObjectTable(raw_objects, path), attrs, version)


# --------------------------------------------------------------------------- validation


def unknown_type(obj: Object, role: str | None = None) -> tuple[str, str] | None:
    """(role, type) of the first component (of ``role`` only, when given) whose `type` this
    version does not know."""
    comps = obj.components if role is None else {role: obj.components[role]}
    for r, comp in comps.items():
        if comp.type is not None and not dtypes.is_known_type(comp.type):
            return r, comp.type
    return None


def require_known_types(obj: Object, path=None, name=None, role: str | None = None) -> None:
    """UnsupportedError naming the component whose logical `type` is unknown (of ``role``
    only, when given). Such objects open and list, but their values cannot be read."""
    unknown = unknown_type(obj, role)
    if unknown is not None:
        r, type_ = unknown
        raise UnsupportedError(
            f"unknown logical type {type_!r} over storage dtype {obj.components[r].dtype!r} "
            "(written by a newer zTensor version?)",
            path=path,
            obj=name,
            component=r,
        )


def expected_nbytes(obj: Object, role: str) -> int | None:
    """Decoded byte size of a component when the manifest alone determines it."""
    comp = obj.components[role]
    if comp.uncompressed_length is not None:
        return comp.uncompressed_length
    sizer = _EXPECTED_SIZES.get(obj.format)
    if sizer is not None:
        try:
            known = sizer(obj).get(role)
        except ZTensorError:
            known = None  # a variant this version cannot read: fall back to the generic rule
        if known is not None:
            return known
    isz = dtypes.itemsize(comp.dtype)
    if obj.format == "dense" and role == "data" and dtypes.is_known_type(comp.type):
        return obj.numel * dtypes.itemsize(dtypes.logical_name(comp.dtype, comp.type))
    if obj.format == "sparse_csr" and role == "indptr":
        return (obj.shape[0] + 1) * isz if obj.shape else None
    if obj.format == "chunked":
        return chunk_nbytes(obj, role)
    if comp.encoding == "raw":
        return comp.length
    return None


# format -> fn(obj, role) giving the most bytes a component of that format can decode to
DECODED_BOUNDS: dict[str, Any] = {}


def register_decoded_bound(fmt: str, bound) -> None:
    """Formats whose components may decode larger than shape x itemsize x ndim say so here."""
    DECODED_BOUNDS[fmt] = bound


def decoded_limit(obj: Object, role: str) -> int:
    """Most bytes a compressed component without a known decoded size may decode to."""
    comp = obj.components[role]
    bound = DECODED_BOUNDS.get(obj.format)
    if not dtypes.is_known_type(comp.type):  # the logical item size is unknown
        most = comp.length * MAX_ZSTD_RATIO
    elif bound is not None:
        most = bound(obj, role)
    else:
        most = max(obj.numel, 1) * dtypes.itemsize(comp.dtype) * max(len(obj.shape), 1)
    return min(comp.length * MAX_ZSTD_RATIO, most)


def _check_dense(name: str, obj: Object, path) -> None:
    comp = obj.components.get("data")
    if (  # fast path: a plain raw tensor of the right size
        comp is not None
        and comp.encoding == "raw"
        and comp.type is None
        and comp.uncompressed_length is None
        and comp.length == math.prod(obj.shape) * _ITEMSIZE[comp.dtype]
    ):
        return
    _expect(comp is not None, "dense object has no 'data' component", path, name)
    nbytes = expected_nbytes(obj, "data")
    if comp.encoding == "raw":
        _expect(
            comp.length == nbytes,
            f"raw length {comp.length} != {nbytes} bytes for shape {list(obj.shape)} "
            f"of {comp.dtype}",
            path,
            name,
            "data",
        )
    else:
        _check_ratio(name, "data", comp, nbytes, path)


def _check_ratio(name: str, role: str, comp: Component, nbytes: int | None, path) -> None:
    if nbytes is None:
        return
    _expect(
        nbytes <= max(comp.length, 1) * MAX_ZSTD_RATIO,
        f"declared decoded size {nbytes} is impossible for {comp.length} compressed bytes",
        path,
        name,
        role,
    )


def _check_sparse_csr(name: str, obj: Object, path) -> None:
    for role in ("values", "indices", "indptr"):
        _expect(role in obj.components, f"sparse_csr object has no {role!r} component", path, name)
    _expect(len(obj.shape) == 2, f"sparse_csr shape {list(obj.shape)} is not 2-D", path, name)
    for role in ("indices", "indptr"):
        dt = obj.components[role].dtype
        _expect(
            dt[0] in "iu" and dt != "bool", f"index dtype {dt} is not an integer", path, name, role
        )
    indptr = obj.components["indptr"]
    want = expected_nbytes(obj, "indptr")
    if indptr.encoding == "raw":
        _expect(
            indptr.length == want,
            f"indptr length {indptr.length} != {want} bytes",
            path,
            name,
            "indptr",
        )
    values, indices = obj.components["values"], obj.components["indices"]
    if values.encoding == "raw" and indices.encoding == "raw" and dtypes.is_known_type(values.type):
        nv = values.length // dtypes.itemsize(_logical(obj, "values"))  # complex: 2 floats
        ni = indices.length // dtypes.itemsize(indices.dtype)
        _expect(nv == ni, f"{nv} values but {ni} indices", path, name)


def _check_sparse_coo(name: str, obj: Object, path) -> None:
    for role in ("values", "coords"):
        _expect(role in obj.components, f"sparse_coo object has no {role!r} component", path, name)
    coords = obj.components["coords"]
    _expect(
        coords.dtype[0] in "iu" and coords.dtype != "bool",
        f"coords dtype {coords.dtype} is not an integer",
        path,
        name,
        "coords",
    )
    values = obj.components["values"]
    if values.encoding == "raw" and coords.encoding == "raw" and dtypes.is_known_type(values.type):
        nnz = values.length // dtypes.itemsize(_logical(obj, "values"))
        want = len(obj.shape) * nnz * dtypes.itemsize(coords.dtype)
        _expect(
            coords.length == want,
            f"coords length {coords.length} != {want} bytes (ndim x nnz)",
            path,
            name,
            "coords",
        )


# ------------------------------------------------------------------ chunked (our extension)

CHUNK_GRID_KEY = "chunk_grid"


class ChunkGrid(NamedTuple):
    """The ``chunk_grid`` object attribute of a ``chunked`` object, parsed (see SPEC.md)."""

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: str  # logical zTensor dtype name of every chunk
    fill_value: Any  # bool, int, float, or [re, im] for complex dtypes

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunk_shape))

    def extent(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """In-bounds shape of the chunk at a grid index (edge chunks are cut)."""
        return tuple(min(c, s - i * c) for s, c, i in zip(self.shape, self.chunk_shape, index))

    def nbytes(self, index: tuple[int, ...]) -> int:
        return math.prod(self.extent(index)) * dtypes.itemsize(self.dtype)


def chunk_role(index) -> str:
    """Component role of the chunk at a grid index: ``c.<i0>.<i1>...`` (``c`` when 0-d)."""
    return ".".join(["c", *(str(int(i)) for i in index)])


def parse_chunk_role(role: str, ndim: int) -> tuple[int, ...] | None:
    """Grid index named by a role, or None when the role is not ``c`` + ndim indices."""
    parts = role.split(".")
    if parts[0] != "c" or len(parts) != ndim + 1:
        return None
    out = []
    for p in parts[1:]:
        if not (p.isascii() and p.isdigit()) or (len(p) > 1 and p[0] == "0"):
            return None
        out.append(int(p))
    return tuple(out)


def _is_fill(v: Any) -> bool:
    if isinstance(v, (bool, int, float)):
        return True
    return isinstance(v, list) and len(v) == 2 and all(_is_fill(x) for x in v)


def chunk_grid(obj: Object, path: Path | None = None, name: str | None = None) -> ChunkGrid:
    """Parse and check the grid attribute of a ``chunked`` object."""
    raw = (obj.attributes or {}).get(CHUNK_GRID_KEY)
    _expect(isinstance(raw, Mapping), f"chunked object lacks a {CHUNK_GRID_KEY!r} map", path, name)
    cs = raw.get("chunk_shape")
    _expect(
        isinstance(cs, list)
        and len(cs) == len(obj.shape)
        and all(_is_uint(c) and c >= 1 for c in cs),
        f"chunk_shape {cs!r} is not {len(obj.shape)} positive integers",
        path,
        name,
    )
    dt = raw.get("dtype")
    _expect(isinstance(dt, str), f"chunk dtype {dt!r} is not text", path, name)
    if dt not in dtypes.BY_NAME:
        raise UnsupportedError(f"unknown chunk dtype {dt!r}", path=path, obj=name)
    fill = raw.get("fill_value", 0)
    _expect(_is_fill(fill), f"fill_value {fill!r} is not a number", path, name)
    return ChunkGrid(tuple(obj.shape), tuple(cs), dt, fill)


def chunk_nbytes(obj: Object, role: str) -> int | None:
    """Decoded size of a chunk component, or None when the object is malformed."""
    try:
        grid = chunk_grid(obj)
    except ZTensorError:
        return None
    index = parse_chunk_role(role, len(obj.shape))
    return None if index is None else grid.nbytes(index)


def _check_chunked(name: str, obj: Object, path) -> None:
    grid = chunk_grid(obj, path, name)
    extents = grid.grid
    for role, comp in obj.components.items():
        index = parse_chunk_role(role, len(obj.shape))
        _expect(index is not None, "role is not a chunk role c.<i>...", path, name, role)
        _expect(
            all(i < n for i, n in zip(index, extents)),
            f"chunk index {list(index)} lies outside the grid {list(extents)}",
            path,
            name,
            role,
        )
        require_known_types(obj, path, name, role)  # the grid's dtype is known: a mismatch
        _expect(
            dtypes.logical_name(comp.dtype, comp.type) == grid.dtype,
            f"chunk dtype {comp.dtype} differs from the grid dtype {grid.dtype}",
            path,
            name,
            role,
        )
        nbytes = grid.nbytes(index)
        if comp.encoding == "raw":
            _expect(
                comp.length == nbytes,
                f"raw chunk length {comp.length} != {nbytes} bytes of its in-bounds part",
                path,
                name,
                role,
            )
        else:
            _check_ratio(name, role, comp, nbytes, path)


# --------------------------------------------------------------------------- quantized

QUANT_BITS = range(1, 9)
_FLOATS = ("f16", "bf16", "f32", "f64")
_WORD_BITS = {"i8": 8, "u8": 8, "i16": 16, "u16": 16, "i32": 32, "u32": 32, "i64": 64, "u64": 64}


def gptq_packing(bits: int, container: str) -> str:
    """The `packing` attribute naming how `bits`-wide values fill `container` words:
    "8_per_i32" for 4 bits, "32_per_3xi32" for 3 bits (32 values in 3 words)."""
    span = math.lcm(bits, _WORD_BITS[container])
    values, words = span // bits, span // _WORD_BITS[container]
    return f"{values}_per_{container}" if words == 1 else f"{values}_per_{words}x{container}"


class QuantizedGroup(NamedTuple):
    """Geometry of a `quantized_group` object (see SPEC.md): logical [rows, cols] =
    [out_features, in_features]; packed values run along cols (the input dimension)."""

    rows: int
    cols: int
    bits: int
    group_size: int
    groups: int
    zero_offset: int
    nbytes: Mapping[str, int]  # decoded byte size of each component


def _logical(obj: Object, role: str) -> str:
    comp = obj.components[role]
    return dtypes.logical_name(comp.dtype, comp.type)


def quantized_group(obj: Object, path=None, name=None) -> QuantizedGroup:
    """Geometry of a GPTQ-style `quantized_group` object, or FormatError/UnsupportedError."""

    def bad(msg, role=None, unsupported=False):
        cls = UnsupportedError if unsupported else FormatError
        raise cls(msg, path=path, obj=name, component=role)

    comps = obj.components
    unknown = unknown_type(obj)
    if unknown is not None:
        bad(f"unknown logical type {unknown[1]!r}", unknown[0], unsupported=True)
    missing = [r for r in ("packed_weight", "scales", "zeros") if r not in comps]
    if missing:
        bad(f"quantized_group without {missing}: only the GPTQ layout is known", unsupported=True)
    attrs = obj.attributes or {}
    bits, group_size = attrs.get("bits"), attrs.get("group_size")
    zero_offset = attrs.get("zero_offset", 0)
    for key, val in (("bits", bits), ("group_size", group_size), ("zero_offset", zero_offset)):
        if type(val) is not int:
            bad(f"quantized_group attribute {key!r} is {val!r}, not an integer")
    if bits not in QUANT_BITS:
        bad(f"{bits}-bit quantized_group is not supported (1..8 bits)", unsupported=True)
    if len(obj.shape) != 2:
        bad(f"quantized_group shape {list(obj.shape)} is not 2-D [out, in]", unsupported=True)
    rows, cols = obj.shape
    if group_size == -1:
        group_size = max(cols, 1)
    if group_size <= 0:
        bad(f"group_size {group_size} must be positive (or -1 for one group)")
    groups = -(-cols // group_size)
    packed = comps["packed_weight"].dtype
    if packed not in _WORD_BITS or comps["packed_weight"].type not in (None, packed):
        bad(f"packed_weight dtype {packed} is not an integer container", "packed_weight")
    packing = attrs.get("packing", gptq_packing(bits, packed))
    if packing != gptq_packing(bits, packed):
        bad(
            f"packing {packing!r} is not the GPTQ packing {gptq_packing(bits, packed)!r} of "
            f"{bits}-bit values in {packed}",
            unsupported=True,
        )
    if (cols * bits) % _WORD_BITS[packed]:
        bad(f"{cols} input columns x {bits} bits do not fill whole {packed} words")
    nbytes = {"packed_weight": rows * cols * bits // 8}
    scales = _logical(obj, "scales")
    if scales not in _FLOATS:
        bad(f"scales dtype {scales} is not a float type", "scales")
    nbytes["scales"] = groups * rows * dtypes.itemsize(scales)
    zeros = _logical(obj, "zeros")
    if zeros in _FLOATS:
        nbytes["zeros"] = groups * rows * dtypes.itemsize(zeros)
    elif zeros in _WORD_BITS and comps["zeros"].type in (None, zeros):
        if (rows * bits) % _WORD_BITS[zeros]:
            bad(f"{rows} rows x {bits} bits do not fill whole {zeros} words", "zeros")
        nbytes["zeros"] = groups * rows * bits // 8
    else:
        bad(f"zeros dtype {zeros} is neither a float nor an integer container", "zeros")
    if "g_idx" in comps:
        g_idx = comps["g_idx"].dtype
        if g_idx not in _WORD_BITS:
            bad(f"g_idx dtype {g_idx} is not an integer", "g_idx")
        nbytes["g_idx"] = cols * dtypes.itemsize(g_idx)
    extra = set(comps) - set(nbytes)
    if extra:
        bad(f"quantized_group has unknown components {sorted(extra)}", unsupported=True)
    return QuantizedGroup(rows, cols, bits, group_size, groups, zero_offset, nbytes)


def ggml_blocks(obj: Object, path=None, name=None) -> tuple[str, int, int]:
    """(ggml type name, elements per block, decoded bytes) of a `ggml_quantized` object."""

    def bad(msg, role=None, unsupported=False):
        cls = UnsupportedError if unsupported else FormatError
        raise cls(msg, path=path, obj=name, component=role)

    unknown = unknown_type(obj)
    if unknown is not None:
        bad(f"unknown logical type {unknown[1]!r}", unknown[0], unsupported=True)
    blocks = obj.components.get("blocks")
    if blocks is None or len(obj.components) != 1:
        bad(f"ggml_quantized needs exactly one 'blocks' component, has {sorted(obj.components)}")
    if blocks.dtype != "u8" or blocks.type not in (None, "u8"):
        bad(f"blocks dtype {blocks.dtype} is not u8", "blocks")
    qtype = (obj.attributes or {}).get("ggml_type")
    if not isinstance(qtype, str):
        bad(f"ggml_quantized attribute 'ggml_type' is {qtype!r}, not a type name")
    try:
        elems, size = dtypes.ggml_block(qtype)
    except UnsupportedError as exc:
        bad(exc.reason, unsupported=True)
    if not obj.shape or obj.shape[-1] % elems:
        bad(
            f"last dimension of shape {list(obj.shape)} is not a multiple of the {qtype} "
            f"block of {elems} elements"
        )
    return qtype, elems, obj.numel // elems * size


def _check_sizes(name: str, obj: Object, nbytes: Mapping[str, int], path) -> None:
    for role, want in nbytes.items():
        comp = obj.components[role]
        have = comp.length if comp.encoding == "raw" else comp.uncompressed_length
        if comp.encoding != "raw":
            _check_ratio(name, role, comp, want, path)
        if have is not None:
            _expect(have == want, f"{have} bytes, expected {want} here", path, name, role)


def _check_quantized_group(name: str, obj: Object, path) -> None:
    try:
        geo = quantized_group(obj, path, name)
    except UnsupportedError:
        return  # a variant we cannot read: the rest of the file stays readable
    _check_sizes(name, obj, geo.nbytes, path)


def _check_ggml_quantized(name: str, obj: Object, path) -> None:
    try:
        _, _, nbytes = ggml_blocks(obj, path, name)
    except UnsupportedError:
        return
    _check_sizes(name, obj, {"blocks": nbytes}, path)


# decoded sizes of every component, for formats whose geometry fixes them
_EXPECTED_SIZES = {
    "quantized_group": lambda obj: quantized_group(obj).nbytes,
    "ggml_quantized": lambda obj: {"blocks": ggml_blocks(obj)[2]},
}


STRUCTURE_CHECKS = {
    "dense": _check_dense,
    "sparse_csr": _check_sparse_csr,
    "sparse_coo": _check_sparse_coo,
    "quantized_group": _check_quantized_group,
    "ggml_quantized": _check_ggml_quantized,
    "chunked": _check_chunked,
}


def register_structure_check(fmt: str, check) -> None:
    """Layouts defined elsewhere (chunked, quantized) add their structural rules here."""
    STRUCTURE_CHECKS[fmt] = check


_ITEMSIZE = {d.name: d.itemsize for d in dtypes.BY_NAME.values()}


def _component_problem(name, role, obj, comp, blob_end, path, aligned) -> None:
    """Raise the precise error for a component that failed validate's quick test."""
    shape = list(obj.shape)
    isz = _ITEMSIZE[comp.dtype]
    _expect(math.prod(obj.shape) <= _MAX_NBYTES, f"shape {shape} is too large", path, name)
    _expect(
        math.prod(obj.shape) * isz * 2 <= _MAX_NBYTES,
        f"shape {shape} overflows 63 bits",
        path,
        name,
        role,
    )
    if aligned:
        _expect(
            comp.offset % ALIGNMENT == 0,
            f"offset {comp.offset} is not a multiple of {ALIGNMENT}",
            path,
            name,
            role,
        )
    _expect(
        len(MAGIC) <= comp.offset and comp.offset + comp.length <= blob_end,
        f"bytes [{comp.offset}, {comp.offset + comp.length}) lie outside the blob area "
        f"[8, {blob_end})",
        path,
        name,
        role,
    )
    _expect(
        comp.length % isz == 0,
        f"raw length {comp.length} is not a multiple of the {comp.dtype} item size {isz}",
        path,
        name,
        role,
    )


def _check_uncompressed_length(name, role, obj, comp, path) -> None:
    """A v1.2 `uncompressed_length` is trusted as the decoded size, so it must agree with
    the raw length, the item size and whatever size the shape implies."""
    ulen = comp.uncompressed_length
    if comp.encoding == "raw":
        _expect(
            ulen == comp.length,
            f"uncompressed_length {ulen} != raw length {comp.length}",
            path,
            name,
            role,
        )
    _expect(
        ulen % _ITEMSIZE[comp.dtype] == 0,
        f"uncompressed_length {ulen} is not a multiple of the {comp.dtype} item size",
        path,
        name,
        role,
    )
    plain = replace(
        obj, components={**obj.components, role: replace(comp, uncompressed_length=None)}
    )
    implied = expected_nbytes(plain, role)
    if implied is not None:
        _expect(
            ulen == implied,
            f"uncompressed_length {ulen} != {implied} bytes implied by shape {list(obj.shape)}",
            path,
            name,
            role,
        )
    else:  # e.g. sparse indices: the declared size may be no larger than any decode could be
        limit = decoded_limit(plain, role)
        _expect(
            ulen <= limit,
            f"uncompressed_length {ulen} exceeds the {limit} bytes this component can decode to",
            path,
            name,
            role,
        )


def _validate_object(name, obj, blob_end, path, aligned, spans) -> None:
    """Every check of one parsed object; appends its byte spans for the overlap test."""
    lowest = len(MAGIC)
    numel = math.prod(obj.shape)
    for role, comp in obj.components.items():
        isz = _ITEMSIZE[comp.dtype]
        start, end = comp.offset, comp.offset + comp.length
        if (  # one cheap test per component; the slow path says what is wrong
            numel * isz * 2 > _MAX_NBYTES
            or (aligned and start % ALIGNMENT)
            or start < lowest
            or end > blob_end
            or (comp.encoding == "raw" and comp.length % isz)
        ):
            _component_problem(name, role, obj, comp, blob_end, path, aligned)
        if comp.uncompressed_length is not None:
            _check_uncompressed_length(name, role, obj, comp, path)
        if comp.length:
            spans.append((start, end, name, role))
    check = STRUCTURE_CHECKS.get(obj.format)
    if check is not None:
        check(name, obj, path)


_PLAIN_OBJECT_KEYS = frozenset(("shape", "format", "components", "attributes"))
_PLAIN_COMPONENT_KEYS = frozenset(("dtype", "offset", "length", "encoding", "digest"))


def _plain_extras_ok(raw: dict, comp: dict) -> bool:
    """The optional keys of a plain dense object: attributes, encoding and digest."""
    if len(raw) > 3:
        attrs = raw.get("attributes")
        if raw.keys() - _PLAIN_OBJECT_KEYS or not (attrs is None or type(attrs) is dict):
            return False
    if len(comp) > 3:
        digest = comp.get("digest")
        if comp.keys() - _PLAIN_COMPONENT_KEYS or not (digest is None or type(digest) is str):
            return False
    return True


def _plain_dense_spans(
    table: ObjectTable, blob_end: int, aligned: bool, spans: list
) -> tuple[dict[str, PlainDense], list[str]]:
    """One pass over the raw CBOR maps: the names of plain, valid dense objects (their byte
    spans appended to ``spans``) and the names that need the full checks.

    "Not plain" only means the full path runs and names the exact problem; this pass accepts
    nothing those checks would refuse. It runs for every tensor at every open, hence one
    flat loop with the common case (no optional keys) tested first.
    """
    plain: dict[str, PlainDense] = {}
    rest: list[str] = []
    itemsizes = _ITEMSIZE
    lowest = len(MAGIC)
    for name, raw in table._raw.items():
        try:
            comps = raw["components"]
            comp = comps["data"]
            offset = comp["offset"]
            length = comp["length"]
            isz = itemsizes[comp["dtype"]]
            shape = raw["shape"]
            ok = (
                type(raw) is dict
                and type(comps) is dict
                and type(comp) is dict
                and len(comps) == 1
                and raw["format"] == "dense"
                and type(shape) is list
                and type(offset) is int
                and type(length) is int
                and (len(raw) == 3 and len(comp) == 3 or _plain_extras_ok(raw, comp))
                and offset >= lowest
                and length >= 0
            )
        except (KeyError, TypeError, AttributeError):
            ok = False
        if ok:
            numel = 1
            for d in shape:
                if type(d) is not int or d < 0:
                    ok = False
                    break
                numel *= d
        if ok:
            end = offset + length
            nbytes = numel * isz
            encoding = comp.get("encoding", "raw") if len(comp) > 3 else "raw"
            ok = (
                end <= blob_end
                and not (aligned and offset % ALIGNMENT)
                and nbytes * 2 <= _MAX_NBYTES
                and (
                    length == nbytes
                    if encoding == "raw"
                    else encoding == "zstd" and nbytes <= max(length, 1) * MAX_ZSTD_RATIO
                )
            )
        if ok:
            plain[name] = (tuple(shape), comp["dtype"], offset if encoding == "raw" else -1, length)
            if length:
                spans.append((offset, end, name, "data"))
        else:
            rest.append(name)
    return plain, rest


def validate(
    manifest: Manifest, blob_end: int, *, path: Path | None = None, aligned: bool = True
) -> None:
    """Check offsets (alignment, bounds, overlap), sizes and each format's structure.

    ``blob_end`` is where the manifest starts: every component must lie in [8, blob_end).
    """
    spans: list = []
    objects = manifest.objects
    if isinstance(objects, ObjectTable):
        plain, rest = _plain_dense_spans(objects, blob_end, aligned, spans)
    else:
        plain, rest = {}, list(objects)
    for name in rest:
        _validate_object(name, objects[name], blob_end, path, aligned, spans)
    if isinstance(objects, ObjectTable):
        objects.plain = plain
    spans.sort()
    for (_s0, e0, n0, r0), (s1, _e1, n1, r1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise FormatError(
                f"bytes [{s1}, {e0}) are shared with object {n0!r} component {r0!r}",
                path=path,
                obj=n1,
                component=r1,
            )


# --------------------------------------------------------------------------- memo

# Decoding and validating are pure functions of the manifest bytes and where they start, so a
# reopened file whose manifest and footer are byte-for-byte unchanged gets the same validated
# Manifest back without paying for either again (data loaders and Dask tasks reopen files
# constantly). Entries are keyed by (path, file size, aligned) and hold the exact manifest +
# footer bytes: the footer fixes where the manifest starts, so equal bytes mean an equal
# result. Any change misses. Bounded by entries and held bytes.
_MEMO_ENTRIES = 128
_MEMO_ENTRY_BYTES = 2 << 20
_MEMO_BYTES = 16 << 20
_memo: OrderedDict[tuple[str, int, bool], tuple[bytes, Manifest]] = OrderedDict()
_memo_held = 0
_memo_lock = threading.Lock()


def memo_entry(path: str, size: int, *, aligned: bool = True) -> tuple[bytes, Manifest] | None:
    """The kept (manifest + footer bytes, validated manifest) of a file of ``size`` bytes at
    ``path``, if any. It is that file's manifest only if the file ends with exactly those
    bytes: the caller reads that many bytes from the end (so a reopen reads exactly the
    manifest and footer) and compares."""
    key = (path, size, aligned)
    with _memo_lock:
        hit = _memo.get(key)
        if hit is not None:
            _memo.move_to_end(key)
    return hit


def load(data: bytes, blob_end: int, *, path: Path | None = None, aligned: bool = True) -> Manifest:
    """``decode`` then ``validate``, memoized by the exact manifest bytes. The result is
    shared between readers: treat it (and its raw maps) as read-only."""
    global _memo_held
    tail = bytes(data) + footer(data)
    name, size = (os.fspath(path) if path is not None else ""), blob_end + len(tail)
    key = (name, size, aligned)
    kept = memo_entry(name, size, aligned=aligned)
    if kept is not None and kept[0] == tail:
        return kept[1]
    m = decode(data, path=path)
    validate(m, blob_end, path=path, aligned=aligned)
    if len(tail) <= _MEMO_ENTRY_BYTES:
        with _memo_lock:
            old = _memo.pop(key, None)
            if old is not None:
                _memo_held -= len(old[0])
            _memo[key] = (tail, m)
            _memo_held += len(tail)
            while len(_memo) > _MEMO_ENTRIES or _memo_held > _MEMO_BYTES:
                _memo_held -= len(_memo.popitem(last=False)[1][0])
    return m


def forget_memo() -> None:
    """Drop every memoized manifest (tests; or to release their memory)."""
    global _memo_held
    with _memo_lock:
        _memo.clear()
        _memo_held = 0
