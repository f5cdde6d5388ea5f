"""Growing and overwriting ``chunked`` objects in place: the seam that the shared chunked
implementation in layouts/chunked replaces.

Everything here rewrites only the chunks an edit touches (every other chunk keeps its
blob): ``grow_chunks`` (append along an axis), ``overwrite_chunks`` (region writes),
``rewrite`` (a whole object in its stored layout), ``verify_edge_chunks``, and the two
Dataset-level fast paths that write chunk-aligned appends and regions in parallel through
the Dask writer (``append_parallel``, ``region_parallel``). Old bytes are read with their
digests checked and are never overwritten; replaced blobs stay until compact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from xarray import Dataset, Variable

from ... import dtypes
from ...layouts import chunked
from ...manifest import Object, chunk_grid, chunk_role, parse_chunk_role
from ...reader import Reader
from ...writer import Writer
from .attrs import ATTR_DTYPES_KEY, root_attributes
from .variables import (
    BLOCK_BYTES,
    encoded_variables,
    is_dask,
    new_array,
    read_stored,
    source_part,
    storage_data,
    stored_dtype,
    variable_name,
)

if TYPE_CHECKING:
    from .store import ZTensorStore

# what the Dataset-level fast paths return when some variable needs the general path
INELIGIBLE = object()


def grow_chunks(
    writer: Writer, reader: Reader, full: str, obj, axis: int, source, compress, checksum
) -> None:
    """New blobs for the chunks from the old edge on along ``axis`` only (the partial edge
    chunk merged with the first new rows); a dask source is computed one chunk band (all
    chunks at one index along the axis) at a time when that fits the block budget, else
    chunk by chunk."""
    ax = axis
    old_grid = chunk_grid(obj, reader.path, full)
    dt = dtypes.to_numpy(old_grid.dtype)
    old_n = obj.shape[ax]
    shape = list(obj.shape)
    shape[ax] += int(source.shape[ax])
    new_obj = Object(tuple(shape), obj.format, obj.components, obj.attributes)
    grid = chunk_grid(new_obj, reader.path, full)
    c = grid.chunk_shape[ax]
    first = old_n // c  # chunks before this index along the axis are untouched

    def get(role: str) -> np.ndarray:
        return reader.read_component(full, role, verify=True)

    others = [range(g) for i, g in enumerate(grid.grid) if i != ax]
    band_bytes = dt.itemsize * c * math.prod(n for i, n in enumerate(shape) if i != ax)

    def at_axis(value, rest):
        return (*rest[:ax], value, *rest[ax:])

    def updates():
        for j in range(first, grid.grid[ax]):
            lo, hi = max(j * c, old_n), min((j + 1) * c, shape[ax])
            band, at = source, old_n  # ``band`` starts at row ``at`` along the axis
            if is_dask(source) and band_bytes <= BLOCK_BYTES:
                sel = (slice(None),) * ax + (slice(lo - old_n, hi - old_n),)
                band, at = source_part(full, source, sel, dt), lo
            for rest in itertools.product(*others):
                index = at_axis(j, rest)
                origin = [i * n for i, n in zip(index, grid.chunk_shape)]
                extent = grid.extent(index)
                sel = [slice(o, o + e) for o, e in zip(origin, extent)]
                sel[ax] = slice(lo - at, hi - at)
                part = source_part(full, band, tuple(sel), dt)
                if j * c < old_n:  # the old partial edge chunk: stored rows first
                    old = chunked.read_chunk(obj, get, index, path=reader.path, name=full)
                    part = np.concatenate([np.asarray(old, dtype=dt), part], axis=ax)
                yield chunk_role(index), np.ascontiguousarray(part).reshape(-1)

    writer.update_components(full, new_obj, updates(), compress=compress, checksum=checksum)


def overwrite_chunks(
    writer: Writer, reader: Reader, full: str, obj, box, source, compress, checksum
) -> None:
    """New blobs for the chunks the region ``box`` ((start, stop) per axis) touches only: a
    chunk the region covers whole is taken from the source, a partly covered one is read,
    patched and written back."""
    grid = chunk_grid(obj, reader.path, full)
    dt = dtypes.to_numpy(grid.dtype)
    spans = [
        range(a // c, -(-b // c)) if b > a else range(0) for (a, b), c in zip(box, grid.chunk_shape)
    ]

    def get(role: str) -> np.ndarray:
        return reader.read_component(full, role, verify=True)

    band_bytes = dt.itemsize * math.prod(b - a for a, b in box[1:])
    c0, (a0, b0) = grid.chunk_shape[0], box[0]

    def patched(index, band, at: int):
        """(role, flat data) of one touched chunk; ``band`` starts at row ``at``."""
        origin = [i * c for i, c in zip(index, grid.chunk_shape)]
        extent = grid.extent(index)
        src, dst = [], []
        for axis, ((a, b), o, e) in enumerate(zip(box, origin, extent)):
            lo, hi = max(a, o), min(b, o + e)
            start = at if axis == 0 else a
            src.append(slice(lo - start, hi - start))
            dst.append(slice(lo - o, hi - o))
        part = source_part(full, band, tuple(src), dt)
        if part.shape == tuple(extent):
            block = part
        else:
            block = np.array(chunked.read_chunk(obj, get, index, path=reader.path, name=full))
            block[tuple(dst)] = part
        return chunk_role(index), np.ascontiguousarray(block).reshape(-1)

    def updates():
        for i0 in spans[0]:
            # a dask source is computed one chunk row of the region at a time when that
            # fits the block budget (one compute instead of one per chunk)
            lo0, hi0 = max(a0, i0 * c0), min(b0, (i0 + 1) * c0)
            band, at = source, a0
            if is_dask(source) and (hi0 - lo0) * band_bytes <= BLOCK_BYTES:
                band = source_part(full, source, (slice(lo0 - a0, hi0 - a0),), dt)
                at = lo0
            for rest in itertools.product(*spans[1:]):
                yield patched((i0, *rest), band, at)

    writer.update_components(full, obj, updates(), compress=compress, checksum=checksum)


def rewrite(writer: Writer, full: str, obj, data, compress, checksum, attrs) -> None:
    """Write ``data`` as a new blob for ``full`` in the same layout as ``obj``."""
    if obj.format != "chunked":
        writer.add_tensor(full, data, compress=compress, checksum=checksum, attributes=attrs)
        return
    chunk_shape = chunk_grid(obj).chunk_shape
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


def verify_edge_chunks(reader: Reader, full: str, obj) -> None:
    """Check the digests of the partial last chunk row that an append along the first
    axis merges into its new chunks (ChecksumError before anything is written)."""
    if obj.format != "chunked" or not obj.shape:
        return
    chunk_shape = chunk_grid(obj).chunk_shape
    edge = obj.shape[0] // chunk_shape[0]
    if obj.shape[0] == edge * chunk_shape[0]:
        return  # whole chunk rows only: no stored data is read
    for role in obj.components:
        index = parse_chunk_role(role, len(obj.shape))
        if index is not None and index[0] == edge:
            reader.read_component(full, role, verify=True)


# --------------------------------------------------------------------------- fast paths


def append_parallel(
    store: ZTensorStore, ds: Dataset, encoding: Mapping, append_dim: Hashable, compute: bool
):
    """Grow chunked variables along their first axis by writing only new chunks (and the
    manifest), in parallel; ``INELIGIBLE`` when some variable needs a rewrite instead."""
    from ..dask import write_arrays  # imports dask

    store.refuse_encoding_of_existing(encoding)
    names = store.variable_names()
    variables, attrs = encoded_variables(ds, encoding)
    encoded, attrs, existing = store.prepare(variables, attrs)
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    for vn, v in encoded.items():
        name = variable_name(vn)
        if vn not in existing:
            arrays[name], per_name[name] = new_array(name, v, vn in encoding)
            continue
        full = names[name]
        obj = store.objects[full]
        if append_dim not in v.dims:
            if _same_as_stored(store.reader, full, v):
                continue  # unchanged (e.g. a coordinate along another dimension)
            return INELIGIBLE
        if obj.format != "chunked" or v.dims.index(append_dim) != 0:
            return INELIGIBLE
        verify_edge_chunks(store.reader, full, obj)
        arrays[full] = storage_data(name, v)
    values = root_attributes(attrs, store.global_attributes.get(ATTR_DTYPES_KEY))
    return write_arrays(
        arrays,
        store.path,
        mode="a",
        encoding=per_name,
        append_dim=0,
        attributes=values,
        compute=compute,
    )


def region_parallel(store: ZTensorStore, ds: Dataset, region: Mapping, compute: bool):
    """Region writes into chunked variables whose region is aligned to their chunk grid:
    only the touched chunks are rewritten (in parallel) and the manifest is replaced.
    ``INELIGIBLE`` for anything else, which then goes through the rewriting path."""
    from ..dask import write_arrays  # imports dask

    variables, attrs = encoded_variables(ds, {})
    encoded, attrs, existing = store.prepare(variables, attrs)
    names = store.variable_names()
    batches: dict[tuple, dict[str, Any]] = {}
    for vn, v in encoded.items():
        if vn not in existing:
            return INELIGIBLE
        name = variable_name(vn)
        full = names[name]
        obj = store.objects[full]
        if obj.format != "chunked":
            return INELIGIBLE
        box = []
        for d, n, c in zip(v.dims, obj.shape, chunk_grid(obj).chunk_shape):
            start, stop, _ = region.get(d, slice(None)).indices(n)
            if start % c or (stop % c and stop != n):
                return INELIGIBLE  # partial chunks: merge by rewriting instead
            box.append((start, stop))
        data = storage_data(name, v)
        dt = stored_dtype(obj)
        batches.setdefault(tuple(box), {})[full] = data if data.dtype == dt else data.astype(dt)
    if len(batches) != 1 and not compute:
        return INELIGIBLE  # one Delayed commit per box would race for the append lock
    result = None
    for box, arrays in batches.items():
        result = write_arrays(
            arrays,
            store.path,
            mode="a",
            region=tuple(slice(a, b) for a, b in box),
            compute=compute,
        )
    return result


def _same_as_stored(reader: Reader, full: str, v: Variable) -> bool:
    old = read_stored(reader, full)
    new = np.asarray(v.values)
    if new.dtype == np.dtype("S1"):
        new = new.view(np.uint8)
    return old.shape == new.shape and old.dtype == new.dtype and old.tobytes() == new.tobytes()
