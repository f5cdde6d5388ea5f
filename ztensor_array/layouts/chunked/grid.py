"""The grid of a ``chunked`` object: the ``chunk_grid`` object attribute (chunk shape,
logical dtype, fill value), parsed and checked, and the geometry derived from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ... import codecs, dtypes
from ...errors import FormatError, InvalidArgumentError, UnsupportedError
from ...manifest import Object, expect, is_uint

FORMAT = "chunked"
CHUNK_GRID_KEY = "chunk_grid"  # the object attribute holding the grid
INDEX_KEY = "index"  # the grid's list of index segments
DIGEST_WORDS = {None: 0, "crc32c": 1, "sha256": 4}  # u64 words a digest takes per entry


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


@dataclass(frozen=True, slots=True)
class Segment:
    """One index segment: the box of the grid it covers and how its chunks are stored."""

    role: str  # its component
    start: tuple[int, ...]  # grid index of the box's first chunk
    shape: tuple[int, ...]  # chunks along each axis
    encoding: str
    digest: str | None  # algorithm of the chunks' digests

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def words(self) -> int:
        """u64 words per entry."""
        return 2 + DIGEST_WORDS[self.digest]

    @property
    def nbytes(self) -> int:
        return self.size * self.words * 8

    def contains(self, index) -> bool:
        return all(s <= i < s + n for i, s, n in zip(index, self.start, self.shape))

    def position(self, index) -> int:
        """Entry number of a grid index inside the box (C order)."""
        pos = 0
        for i, s, n in zip(index, self.start, self.shape):
            pos = pos * n + (i - s)
        return pos

    def to_cbor(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.role,
            "start": list(self.start),
            "shape": list(self.shape),
            "encoding": self.encoding,
        }
        if self.digest is not None:
            out["digest"] = self.digest
        return out


def parse_segments(raw: Any, ndim: int, fail) -> list[Segment]:
    """The ``index`` list of a grid attribute; ``fail(message)`` raises for a bad one."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        fail(f"{INDEX_KEY} {raw!r} is not a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            fail(f"index segment {item!r} is not a map")
        role, start, shape = item.get("role"), item.get("start"), item.get("shape")
        encoding, digest = item.get("encoding", codecs.RAW), item.get("digest")
        if not isinstance(role, str) or parse_chunk_role(role, ndim) is not None:
            fail(f"index segment role {role!r} is not text (or is a chunk role)")
        for what, v in (("start", start), ("shape", shape)):
            if not (
                isinstance(v, list) and len(v) == ndim and all(type(x) is int and x >= 0 for x in v)
            ):
                fail(f"index segment {role!r} {what} {v!r} is not {ndim} unsigned integers")
        if encoding not in codecs.ENCODINGS:
            fail(f"index segment {role!r} names an unknown encoding {encoding!r}")
        if digest not in DIGEST_WORDS:
            fail(f"index segment {role!r} names an unknown digest {digest!r}")
        out.append(Segment(role, tuple(start), tuple(shape), encoding, digest))
    return out


class ChunkGrid(NamedTuple):
    """The ``chunk_grid`` object attribute of a ``chunked`` object, parsed (see SPEC.md)."""

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: str  # logical zTensor dtype name of every chunk
    fill_value: Any  # bool, int, float, or [re, im] for complex dtypes
    segments: tuple[Segment, ...] = ()  # the index segments, oldest first

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunk_shape))

    def extent(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """In-bounds shape of the chunk at a grid index (edge chunks are cut)."""
        return tuple(min(c, s - i * c) for s, c, i in zip(self.shape, self.chunk_shape, index))

    def nbytes(self, index: tuple[int, ...]) -> int:
        return math.prod(self.extent(index)) * dtypes.itemsize(self.dtype)

    def reshaped(self, shape: tuple[int, ...]) -> ChunkGrid:
        """The same grid over an array of another shape (after growth)."""
        return self._replace(shape=tuple(shape))


# Grid cells an object may have beyond the chunk locations it records (index entries and
# chunk components): room for sparse arrays, while a tiny file cannot declare a huge grid.
MAX_UNLOCATED_CHUNKS = 1 << 20


def check_cells(grid: ChunkGrid, located: int, *, path=None, name=None) -> None:
    """At most ``MAX_UNLOCATED_CHUNKS`` grid cells beyond the ``located`` chunk locations
    the object records (index entries and chunk components, each costing file bytes): a
    150-byte file cannot declare 10^7 never-written chunks that lazy arrays and writers
    would each give a Python step (SPEC §8). Checked at open and by every writer."""
    cells = math.prod(grid.grid)
    if cells > MAX_UNLOCATED_CHUNKS + located:
        raise FormatError(
            f"grid of {cells} chunks (chunk_shape {list(grid.chunk_shape)} over shape "
            f"{list(grid.shape)}) has more than {MAX_UNLOCATED_CHUNKS} chunks beyond the "
            f"{located} it locates; use larger chunks",
            path=path,
            obj=name,
        )


def _is_fill(v: Any) -> bool:
    if isinstance(v, (bool, int, float)):
        return True
    return isinstance(v, list) and len(v) == 2 and all(_is_fill(x) for x in v)


def chunk_grid(obj: Object, path=None, name: str | None = None) -> ChunkGrid:
    """Parse and check the grid attribute of a ``chunked`` object."""
    raw = (obj.attributes or {}).get(CHUNK_GRID_KEY)
    expect(isinstance(raw, Mapping), f"chunked object lacks a {CHUNK_GRID_KEY!r} map", path, name)
    cs = raw.get("chunk_shape")
    expect(
        isinstance(cs, list)
        and len(cs) == len(obj.shape)
        and all(is_uint(c) and c >= 1 for c in cs),
        f"chunk_shape {cs!r} is not {len(obj.shape)} positive integers",
        path,
        name,
    )
    dt = raw.get("dtype")
    expect(isinstance(dt, str), f"chunk dtype {dt!r} is not text", path, name)
    if dt not in dtypes.BY_NAME:
        raise UnsupportedError(f"unknown chunk dtype {dt!r}", path=path, obj=name)
    fill = raw.get("fill_value", 0)
    expect(_is_fill(fill), f"fill_value {fill!r} is not a number", path, name)

    def fail(message: str):
        raise FormatError(message, path=path, obj=name)

    segments = tuple(parse_segments(raw.get(INDEX_KEY), len(obj.shape), fail))
    return ChunkGrid(tuple(obj.shape), tuple(cs), dt, fill, segments)


def grid_attributes(chunk_shape, dtype_name: str, fill_value: Any = 0) -> dict[str, Any]:
    """The ``chunk_grid`` attribute value for a new chunked object."""
    return {
        "chunk_shape": [int(c) for c in chunk_shape],
        "dtype": dtype_name,
        "fill_value": _fill_to_cbor(fill_value),
    }


def _fill_to_cbor(value: Any) -> Any:
    if isinstance(value, (complex, np.complexfloating)):
        return [float(value.real), float(value.imag)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise InvalidArgumentError(f"fill_value {value!r} is not a number")


def fill_array(grid: ChunkGrid, shape, *, path=None, name=None) -> np.ndarray:
    """A fresh array of ``shape`` holding the grid's fill value in its logical dtype."""
    dt = dtypes.to_numpy(grid.dtype)
    value = grid.fill_value
    if isinstance(value, list):
        value = complex(value[0], value[1])
    ok = True
    if dt.kind == "b":
        ok = value in (0, 1) and not isinstance(value, complex)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        ok = isinstance(value, int) and info.min <= value <= info.max
    elif dt.kind != "c":
        ok = not isinstance(value, complex)
    if not ok:
        raise FormatError(
            f"fill_value {grid.fill_value!r} does not fit dtype {grid.dtype}", path=path, obj=name
        )
    with np.errstate(all="ignore"):
        return np.full(shape, value, dtype=dt)


def regular_chunks(shape, chunk_shape) -> tuple[tuple[int, ...], ...]:
    """Dask-style chunks of a regular grid (the last chunk of an axis may be short)."""
    out = []
    for s, c in zip(shape, chunk_shape):
        full, rest = divmod(s, c)
        out.append((c,) * full + ((rest,) if rest else ()) if s else (0,))
    return tuple(out)
