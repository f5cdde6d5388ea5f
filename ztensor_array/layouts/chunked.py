"""`chunked` (our extension): a dense array stored as a regular grid of chunk components.

Each written chunk is a component whose role names its grid index (``c.0.3``), holding only
the in-bounds part of the chunk in C order, raw or zstd, with its own digest. Chunks that
were never written read as the grid's fill value. The grid itself (chunk shape, dtype, fill
value) is the ``chunk_grid`` object attribute (SPEC §4.3); this module parses and checks it.

Reads touch only the chunks a selection intersects and decode them on a thread pool (zstd
and numpy copies release the GIL).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import dtypes
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..manifest import Object, expect, is_uint
from .base import Layout, check_size, refuse, require_known_types
from .dense import as_logical

FORMAT = "chunked"
CHUNK_GRID_KEY = "chunk_grid"  # the object attribute holding the grid
MIN_PARALLEL_CHUNKS = 2


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
    return ChunkGrid(tuple(obj.shape), tuple(cs), dt, fill)


class Chunked(Layout):
    format = FORMAT

    def check(self, name: str, obj: Object, path) -> None:
        """The grid map, chunk roles within the grid, chunk dtypes equal to the grid's and
        chunk sizes equal to their in-bounds parts (SPEC §4.3)."""
        grid = chunk_grid(obj, path, name)
        extents = grid.grid
        for role, comp in obj.components.items():
            index = parse_chunk_role(role, len(obj.shape))
            if index is None:
                refuse("role is not a chunk role c.<i>...", role, path=path, name=name)
            if not all(i < n for i, n in zip(index, extents)):
                where = f"chunk index {list(index)} lies outside the grid {list(extents)}"
                refuse(where, role, path=path, name=name)
            require_known_types(obj, path, name, role)  # the grid's dtype is known: a mismatch
            if dtypes.logical_name(comp.dtype, comp.type) != grid.dtype:
                differs = f"chunk dtype {comp.dtype} differs from the grid dtype {grid.dtype}"
                refuse(differs, role, path=path, name=name)
            check_size(
                name,
                role,
                comp,
                grid.nbytes(index),
                path,
                what="raw chunk length",
                detail=" of its in-bounds part",
            )

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        """Decoded size of a chunk: its in-bounds part (None when the object is malformed)."""
        try:
            grid = chunk_grid(obj)
        except ZTensorError:
            return None
        index = parse_chunk_role(role, len(obj.shape))
        return None if index is None else grid.nbytes(index)

    def value_dtype(self, obj: Object) -> str:
        """The grid names the dtype, even when no chunk is written."""
        return chunk_grid(obj).dtype

    def read(self, obj: Object, get, *, path=None, name=None) -> np.ndarray:
        """The whole array."""
        return read_region(obj, get, (), path=path, name=name)


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
    raise ZTensorError(f"fill_value {value!r} is not a number")


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


# ------------------------------------------------------------------ selections


def _normalize(selection, shape) -> tuple[list[range], list[bool]]:
    """Per axis: the selected indices as a range, and whether the axis is kept."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    if sum(s is Ellipsis for s in selection) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if Ellipsis in selection:
        i = selection.index(Ellipsis)
        fill = len(shape) - (len(selection) - 1)
        selection = selection[:i] + (slice(None),) * fill + selection[i + 1 :]
    if len(selection) > len(shape):
        raise IndexError(f"too many indices: {len(selection)} for {len(shape)} dimensions")
    selection = selection + (slice(None),) * (len(shape) - len(selection))
    ranges, keep = [], []
    for axis, (sel, n) in enumerate(zip(selection, shape)):
        if isinstance(sel, slice):
            ranges.append(range(*sel.indices(n)))
            keep.append(True)
        elif isinstance(sel, (int, np.integer)) and not isinstance(sel, (bool, np.bool_)):
            i = int(sel) + n if sel < 0 else int(sel)
            if not 0 <= i < n:
                raise IndexError(f"index {sel} is out of bounds for axis {axis} with size {n}")
            ranges.append(range(i, i + 1))
            keep.append(False)
        else:
            raise IndexError(
                f"only integers, slices and ... are supported, got {type(sel).__name__}"
            )
    return ranges, keep


def _axis_pieces(r: range, c: int) -> list[tuple[int, slice, slice]]:
    """(chunk index, slice within the chunk, slice of the output) for one axis."""
    if len(r) == 0:
        return []
    step = r.step
    asc = r if step > 0 else r[::-1]  # walk ascending, place by output position
    pieces = []
    pos = 0
    n = len(asc)
    while pos < n:
        first = asc[pos]
        k = first // c
        end_in_chunk = (k + 1) * c
        count = min(n - pos, -(-(end_in_chunk - first) // abs(step)))
        last = first + (count - 1) * abs(step)
        local = slice(first - k * c, last - k * c + 1, abs(step))
        if step > 0:
            out = slice(pos, pos + count)
        else:  # output runs backwards over the ascending walk
            out = slice(
                n - 1 - pos, (n - 1 - pos - count) if n - 1 - pos - count >= 0 else None, -1
            )
        pieces.append((k, local, out))
        pos += count
    return pieces


def _plan(grid: ChunkGrid, ranges: list[range]) -> Iterator[tuple[tuple, tuple, tuple]]:
    per_axis = [_axis_pieces(r, c) for r, c in zip(ranges, grid.chunk_shape)]
    for combo in itertools.product(*per_axis):
        yield (
            tuple(p[0] for p in combo),
            tuple(p[1] for p in combo),
            tuple(p[2] for p in combo),
        )


def read_region(
    obj: Object,
    get: Callable[[str], np.ndarray],
    selection: Any = (),
    *,
    path=None,
    name=None,
    workers: int | None = None,
) -> np.ndarray:
    """``array[selection]`` decoding only the chunks the selection touches, in parallel.

    ``selection``: ints, slices (any step) and one Ellipsis. Returns an owned array.
    """
    grid = chunk_grid(obj, path, name)
    ranges, keep = _normalize(selection, obj.shape)
    out_shape = tuple(len(r) for r in ranges)
    tasks = []
    missing = False
    for index, local, where in _plan(grid, ranges):
        role = chunk_role(index)
        if role in obj.components:
            tasks.append((index, role, local, where))
        else:
            missing = True
    if missing:
        out = fill_array(grid, out_shape, path=path, name=name)
    else:
        out = np.empty(out_shape, dtype=dtypes.to_numpy(grid.dtype))

    def place(task) -> None:
        index, role, local, where = task
        out[where] = _chunk(obj, grid, get, index, role, path, name)[local]

    n = len(tasks)
    if n >= MIN_PARALLEL_CHUNKS and workers != 1:
        nthreads = min(n, workers or os.cpu_count() or 1)
        # ~15 ms to import: only when a read decodes several chunks
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(nthreads, thread_name_prefix="ztensor-chunks") as pool:
            list(pool.map(place, tasks))
    else:
        for t in tasks:
            place(t)
    return out.reshape(tuple(s for s, k in zip(out_shape, keep) if k))


def _chunk(obj, grid, get, index, role, path, name) -> np.ndarray:
    comp = obj.components[role]
    flat = as_logical(get(role), comp)
    extent = grid.extent(index)
    if flat.size != math.prod(extent):
        raise FormatError(
            f"chunk holds {flat.size} elements, its in-bounds shape {list(extent)} needs "
            f"{math.prod(extent)}",
            path=path,
            obj=name,
            component=role,
        )
    return flat.reshape(extent)


def read_chunk(obj: Object, get, index, *, path=None, name=None) -> np.ndarray:
    """One chunk (in-bounds part) by grid index; the fill value if it was never written."""
    grid = chunk_grid(obj, path, name)
    role = chunk_role(index)
    if role not in obj.components:
        return fill_array(grid, grid.extent(tuple(index)), path=path, name=name)
    return _chunk(obj, grid, get, tuple(index), role, path, name)
