"""Where one variable's data lands when ``ZTensorStore`` writes it.

A target takes numpy data at once (``target[key] = value``, as xarray's writers do) or a
dask array block by block (``write_blocks``), in memory bounded by a block rather than the
variable: ``NewTarget`` (a new object), ``AppendTarget`` (grow an existing one along an
axis) and ``RegionTarget`` (overwrite part of one). ``BlockWrites`` collects the sources
like xarray's ``ArrayWriter`` but lets the targets write dask sources themselves.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from xarray import Variable

from ...layouts import chunked, dense, stored_encoding
from ...reader import Reader
from ...writer import Writer
from .variables import (
    BLOCK_BYTES,
    is_dask,
    read_stored,
    slabs,
    source_part,
    storage_array,
    storage_dtype,
    storage_source,
)


class BlockWrites:
    """Collects (source, target) pairs: numpy sources are written at once, dask sources
    when ``run`` is called, block by block through their targets."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Any, Any]] = []

    def add(self, source, target, region=None) -> None:
        if is_dask(source):
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


class NewTarget:
    """A variable written whole; numpy data at once, dask data block by block."""

    def __init__(self, writer: Writer, full: str, v: Variable, attrs, enc) -> None:
        self.writer = writer
        self.full = full
        self.shape = v.shape
        self.dtype = v.dtype
        self.attrs = attrs
        self.enc = enc

    def __setitem__(self, key, value) -> None:
        data = storage_array(self.full, value)
        self.writer.add_tensor(
            self.full,
            data,
            compress=self.enc["compress"],
            checksum=self.enc["checksum"],
            attributes=self.attrs,
        )

    def write_blocks(self, source) -> None:
        """Stream a dask array slab by slab along axis 0 (never holding it whole)."""
        dtype = storage_dtype(self.dtype)
        storage_array(self.full, np.empty(0, self.dtype))
        with self.writer.stream_tensor(
            self.full,
            self.shape,
            dtype,
            compress=self.enc["compress"],
            checksum=self.enc["checksum"],
            attributes=self.attrs,
        ) as stream:
            for slab in slabs(source):
                stream.write(storage_array(self.full, slab))


class AppendTarget:
    """Grow an existing object along ``axis``. A chunked object gets new blobs for the
    chunks past its old end along that axis (and for the partial edge chunk it merges
    into); every other chunk keeps its blob. A dense object is streamed into a new blob:
    stored row blocks followed by the new rows (first axis), or each stored row block
    joined with the matching rows of the new part (another axis). Old bytes are read with
    their digests checked and are never overwritten; replaced blobs stay until compact."""

    def __init__(self, writer: Writer, reader: Reader, full: str, obj, axis: int) -> None:
        self.writer = writer
        self.reader = reader
        self.full = full
        self.obj = obj
        self.axis = axis

    def __setitem__(self, key, value) -> None:
        self._write(value)

    def write_blocks(self, source) -> None:
        self._write(source)

    def _write(self, source) -> None:
        obj = self.obj
        if obj.format == chunked.FORMAT:
            shape, box = chunked.growth(obj.shape, self.axis, source.shape[self.axis])
            _write_chunked(self.writer, self.full, obj, shape, box, source)
            return
        level, checksum = stored_encoding(obj)
        if obj.format == "dense" and obj.shape:
            self._stream_dense(source, level, checksum)
        else:  # exotic layouts (sparse): merge in memory
            old = read_stored(self.reader, self.full)
            new = source_part(self.full, source, (), old.dtype)
            data = np.concatenate([old, new], axis=self.axis)
            self.writer.remove(self.full)
            self.writer.add_tensor(
                self.full, data, compress=level, checksum=checksum, attributes=obj.attributes
            )

    def _stream_dense(self, source, compress, checksum) -> None:
        """Stored row blocks followed by the new rows (first axis), or each stored row block
        joined with the matching rows of the new part (another axis)."""
        ax, obj = self.axis, self.obj
        shape = list(obj.shape)
        shape[ax] += int(source.shape[ax])

        def blocks(old_rows, rows: int, dt: np.dtype):
            if ax == 0:
                yield from old_rows
                for r0 in range(0, shape[0] - obj.shape[0], rows):
                    yield source_part(self.full, source, (slice(r0, r0 + rows),), dt)
                return
            r0 = 0
            for old in old_rows:
                r1 = r0 + old.shape[0]
                new = source_part(self.full, source, (slice(r0, r1),), dt)
                yield np.concatenate([old, new], axis=ax)
                r0 = r1

        _restream_dense(self, tuple(shape), compress, checksum, blocks, align_to=source)


class RegionTarget:
    """Overwrite a region of an existing object, in memory bounded by a block rather than
    the variable: a chunked object gets new blobs for the chunks the region touches only
    (the others keep their blobs); a dense object is streamed into a new blob row block by
    row block. Old bytes are never overwritten; they stay until compact."""

    def __init__(self, writer: Writer, reader: Reader, full: str, obj) -> None:
        self.writer = writer
        self.reader = reader
        self.full = full
        self.obj = obj

    def __setitem__(self, key, value) -> None:
        self._write(key, value)

    def write_blocks(self, source, region=None) -> None:
        self._write(region or (), source)

    def _write(self, key, source) -> None:
        obj = self.obj
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[-1] is Ellipsis:
            key = key[:-1]
        key = key + (slice(None),) * (len(obj.shape) - len(key))
        box = tuple(k.indices(n)[:2] for k, n in zip(key, obj.shape))
        box = tuple((a, max(a, b)) for a, b in box)
        if obj.format == chunked.FORMAT:
            _write_chunked(self.writer, self.full, obj, obj.shape, box, source)
            return
        level, checksum = stored_encoding(obj)
        if obj.format == "dense" and obj.shape:
            self._stream_dense(box, source, level, checksum)
        else:  # small or exotic layouts (scalars, sparse): merge in memory
            data = read_stored(self.reader, self.full)
            data[key] = source_part(self.full, source, (), data.dtype)
            self.writer.remove(self.full)
            self.writer.add_tensor(
                self.full, data, compress=level, checksum=checksum, attributes=obj.attributes
            )

    def _stream_dense(self, box, source, compress, checksum) -> None:
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
                    part = source_part(self.full, source, (slice(lo - a0, hi - a0),), dt)
                    old[(slice(lo - r0, hi - r0), *rest)] = part
                yield old
                r0 = r1

        _restream_dense(self, self.obj.shape, compress, checksum, blocks)


def _write_chunked(writer: Writer, full: str, obj, shape, box, source) -> None:
    """New blobs for the chunks of ``obj`` (grown to ``shape``) that ``box`` touches only,
    in the object's stored encoding (the shared chunked implementation)."""
    level, checksum = stored_encoding(obj)
    source = storage_source(full, source)
    writer.write_chunked(full, obj, shape, box, source, compress=level, checksum=checksum)


def _restream_dense(target, shape, compress, checksum, blocks, align_to=None) -> None:
    """Replace ``target``'s dense object (an append or region target) by a new blob of
    ``shape`` streamed row block by row block, in memory bounded by a block:
    ``blocks(old_rows, rows, dtype)`` yields the new blob's blocks from the stored ones
    (``rows`` high, digest checked before the object is dropped). ``align_to``: a dask
    source whose axis-0 chunks the block height follows."""
    writer, reader, full, obj = target.writer, target.reader, target.full, target.obj
    dt = dense.logical_dtype(obj.components["data"])
    row = dt.itemsize * math.prod(shape[1:])
    rows = max(1, BLOCK_BYTES // max(row, 1))
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
    if not is_dask(source) or not source.ndim or len(source.chunks[0]) < 1:
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
