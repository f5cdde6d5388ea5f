"""Container-level validation of a decoded manifest, each layout's own rules, and the memo
of validated manifests.

``validate`` checks everything that can be checked without reading tensor data: every
component lies 64-aligned in the blob area without overlapping another, its sizes agree with
its dtype and any v1.2 `uncompressed_length`, and its object follows its format's rules
(``layouts``). The layouts check the data itself when it is read. Plain dense objects, the
bulk of most files, are checked in one pass over the undecoded CBOR maps.
"""

from __future__ import annotations

import gc
import math
import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import replace
from itertools import chain, compress, repeat
from typing import Any

import numpy as np

from . import dtypes, layouts
from .codecs import RAW
from .codecs.policy import MAX_DECODE_RATIO
from .constants import ALIGNMENT, FOOTER_SIZE, MAGIC
from .errors import FormatError
from .manifest import (
    DTYPE_NAMES,
    ENCODING_NAMES,
    Component,
    Manifest,
    Object,
    ObjectTable,
    Path,
    PlainColumns,
    decode,
    expect,
    footer,
)

_MAX_NBYTES = (1 << 63) - 1


def expected_nbytes(obj: Object, role: str) -> int | None:
    """Decoded byte size of a component when the manifest alone determines it."""
    comp = obj.components[role]
    if comp.uncompressed_length is not None:
        return comp.uncompressed_length
    layout = layouts.layout_for(obj.format)
    known = None if layout is None else layout.expected_nbytes(obj, role)
    if known is not None:
        return known
    return comp.length if comp.encoding == RAW else None


def decoded_limit(obj: Object, role: str) -> int:
    """Most bytes a compressed component without a known decoded size may decode to."""
    comp = obj.components[role]
    most = comp.length * MAX_DECODE_RATIO
    if dtypes.is_known_type(comp.type):  # else the logical item size is unknown
        layout = layouts.layout_for(obj.format)
        bound = None if layout is None else layout.decoded_bound(obj, role)
        if bound is None:
            bound = max(obj.numel, 1) * dtypes.itemsize(comp.dtype) * max(len(obj.shape), 1)
        most = min(most, bound)
    return most


_ITEMSIZE = {d.name: d.itemsize for d in dtypes.BY_NAME.values()}


def _component_problem(name, role, obj, comp, blob_end, path, aligned) -> None:
    """Raise the precise error for a component that failed validate's quick test."""
    shape = list(obj.shape)
    isz = _ITEMSIZE[comp.dtype]
    expect(math.prod(obj.shape) <= _MAX_NBYTES, f"shape {shape} is too large", path, name)
    expect(
        math.prod(obj.shape) * isz * 2 <= _MAX_NBYTES,
        f"shape {shape} overflows 63 bits",
        path,
        name,
        role,
    )
    if aligned:
        expect(
            comp.offset % ALIGNMENT == 0,
            f"offset {comp.offset} is not a multiple of {ALIGNMENT}",
            path,
            name,
            role,
        )
    expect(
        len(MAGIC) <= comp.offset and comp.offset + comp.length <= blob_end,
        f"bytes [{comp.offset}, {comp.offset + comp.length}) lie outside the blob area "
        f"[8, {blob_end})",
        path,
        name,
        role,
    )
    expect(
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
    if comp.encoding == RAW:
        expect(
            ulen == comp.length,
            f"uncompressed_length {ulen} != raw length {comp.length}",
            path,
            name,
            role,
        )
    expect(
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
        expect(
            ulen == implied,
            f"uncompressed_length {ulen} != {implied} bytes implied by shape {list(obj.shape)}",
            path,
            name,
            role,
        )
    else:  # e.g. sparse indices: the declared size may be no larger than any decode could be
        limit = decoded_limit(plain, role)
        expect(
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
            or (comp.encoding == RAW and comp.length % isz)
        ):
            _component_problem(name, role, obj, comp, blob_end, path, aligned)
        if comp.uncompressed_length is not None:
            _check_uncompressed_length(name, role, obj, comp, path)
        if comp.length:
            spans.append((start, end, name, role))
    layout = layouts.layout_for(obj.format)
    if layout is not None:
        layout.check(name, obj, path)


_DTYPE_CODE = {name: i for i, name in enumerate(DTYPE_NAMES)}
_ITEMSIZES = np.array([_ITEMSIZE[name] for name in DTYPE_NAMES] + [0], dtype=np.int64)
_ENCODING_CODE = {name: i for i, name in enumerate(ENCODING_NAMES)}
_UNKNOWN = 255  # code of a dtype or encoding the columns cannot hold
_NO_SPANS = np.zeros((0, 2), dtype=np.int64)


def _plain_columns(table: ObjectTable, blob_end: int, aligned: bool):
    """The plain, valid dense objects (one ``data`` component with dtype, offset, length and
    optionally encoding and digest; no attributes, no v1.2 fields) as ``PlainColumns`` with
    their byte spans, and the names that need the full checks.

    "Not plain" only means the full path runs and names the exact problem; this pass accepts
    nothing those checks would refuse. It runs over every object at every first open, so it
    works on whole columns: ``map`` over C-level getters, type sets, numpy. A manifest whose
    fields are not all of the expected types takes a per-object pass instead.
    """
    names = list(table._raw)
    raws = list(table._raw.values())
    try:
        return _plain_columns_bulk(names, raws, blob_end, aligned)
    except _NotUniform:
        keep = [i for i, raw in enumerate(raws) if _plain_one(raw, blob_end, aligned)]
        names_kept = [names[i] for i in keep]
        return _plain_columns_bulk(
            names_kept,
            [raws[i] for i in keep],
            blob_end,
            aligned,
            rest=[n for i, n in enumerate(names) if i not in set(keep)],
        )


class _NotUniform(Exception):
    """A manifest whose candidate fields are not all of the expected types."""


def _plain_columns_bulk(names, raws, blob_end: int, aligned: bool, rest=None):
    n = len(raws)
    if n and set(map(type, raws)) != {dict}:
        raise _NotUniform
    pos = np.arange(n)
    mask = np.fromiter(map(len, raws), np.int64, n) == 3
    mask &= np.fromiter(
        map(operator.eq, map(dict.get, raws, repeat("format")), repeat("dense")), bool, n
    )
    pos = pos[mask]
    cand = list(compress(raws, mask))
    comps = list(map(dict.get, cand, repeat("components")))
    if comps and set(map(type, comps)) != {dict}:
        raise _NotUniform
    mask = np.fromiter(map(len, comps), np.int64, len(comps)) == 1
    mask &= np.fromiter(map(operator.contains, comps, repeat("data")), bool, len(comps))
    pos, cand = pos[mask], list(compress(cand, mask))
    data = list(map(dict.get, compress(comps, mask), repeat("data")))
    m = len(data)
    if m and set(map(type, data)) != {dict}:
        raise _NotUniform
    offsets = list(map(dict.get, data, repeat("offset")))
    lengths = list(map(dict.get, data, repeat("length")))
    shapes = list(map(dict.get, cand, repeat("shape")))
    digests = list(map(dict.get, data, repeat("digest")))
    if m and not (
        set(map(type, offsets)) == {int}
        and set(map(type, lengths)) == {int}
        and set(map(type, shapes)) == {list}
        and set(map(type, chain.from_iterable(shapes))) <= {int}
        and set(map(type, digests)) <= {str, type(None)}
        and all(map(str.isascii, filter(None, digests)))
    ):
        raise _NotUniform
    try:
        off = np.fromiter(offsets, np.int64, m)
        length = np.fromiter(lengths, np.int64, m)
        ndims = np.fromiter(map(len, shapes), np.int64, m)
        dims = np.fromiter(chain.from_iterable(shapes), np.int64)
    except OverflowError:
        raise _NotUniform from None
    known = 3 + np.fromiter(map(operator.contains, data, repeat("encoding")), np.int64, m)
    known += np.fromiter(map(operator.contains, data, repeat("digest")), np.int64, m)
    ok = np.fromiter(map(len, data), np.int64, m) == known
    dtype_code = np.fromiter(
        map(_DTYPE_CODE.get, map(dict.get, data, repeat("dtype")), repeat(_UNKNOWN)), np.uint8, m
    )
    enc_code = np.fromiter(
        map(
            _ENCODING_CODE.get,
            map(dict.get, data, repeat("encoding"), repeat(RAW)),
            repeat(_UNKNOWN),
        ),
        np.uint8,
        m,
    )
    ok &= (dtype_code != _UNKNOWN) & (enc_code != _UNKNOWN) & (off >= 0) & (length >= 0)
    row = np.repeat(np.arange(m), ndims)
    bad_dims = np.unique(row[dims < 0]) if len(dims) else row
    ok[bad_dims] = False
    if "\x00" in "".join(names):  # numpy strips trailing NULs: such names take the full path
        ok &= np.fromiter((_plain_name(names[i]) for i in pos), bool, m)
    numel = _products(ndims, np.maximum(dims, 0))
    ok &= numel < (1 << 58)  # byte sizes (16-byte items at most) fit in 63 bits twice over
    nbytes = np.where(ok, numel, 0) * _ITEMSIZES[np.minimum(dtype_code, len(DTYPE_NAMES))]
    ok &= (off >= len(MAGIC)) & (off + length <= blob_end)
    if aligned:
        ok &= off % ALIGNMENT == 0
    raw = enc_code == 0
    ok &= np.where(raw, length == nbytes, nbytes <= np.maximum(length, 1) * MAX_DECODE_RATIO)
    keep = np.flatnonzero(ok)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(ndims, out=starts[1:])
    if len(keep) == m:
        kept_dims = dims
    else:
        kept = np.zeros(len(dims), dtype=bool)
        kept[np.isin(row, keep)] = True
        kept_dims = dims[kept]
    kept_names = [names[i] for i in pos[keep]]
    kept_digests = None
    if any(digests):
        kept_digests = [digests[i] for i in keep]
    plain = PlainColumns(
        kept_names,
        dtype_code[keep],
        enc_code[keep],
        off[keep],
        length[keep],
        ndims[keep],
        kept_dims,
        kept_digests,
    )
    if rest is None:
        good = np.zeros(n, dtype=bool)
        good[pos[keep]] = True
        rest = list(compress(names, ~good))
    else:
        dropped = np.ones(m, dtype=bool)
        dropped[keep] = False
        rest = rest + [names[i] for i in pos[dropped]]
    spans = np.stack([plain.offsets, plain.offsets + plain.lengths], axis=1)
    return plain, rest, spans[plain.lengths > 0]


def _plain_one(raw: Any, blob_end: int, aligned: bool) -> bool:
    """Whether one object's fields have the types the column pass needs (the slow pass of
    a manifest that is not uniform; the column pass still checks the values)."""
    try:
        comps = raw["components"]
        data = comps["data"]
        shape = raw["shape"]
        return (
            type(raw) is dict
            and len(raw) == 3
            and raw["format"] == "dense"
            and type(comps) is dict
            and len(comps) == 1
            and type(data) is dict
            and type(data.get("offset")) is int
            and type(data.get("length")) is int
            and 0 <= data["offset"] < (1 << 62)
            and 0 <= data["length"] < (1 << 62)
            and type(shape) is list
            and all(type(d) is int and 0 <= d < (1 << 62) for d in shape)
            and (
                data.get("digest") is None
                or (type(data["digest"]) is str and data["digest"].isascii())
            )
        )
    except (KeyError, TypeError):
        return False


def _columns(names, dtype_code, enc_code, off, length, ndims, shapes, digests) -> PlainColumns:
    return PlainColumns(
        names,
        np.asarray(dtype_code, dtype=np.uint8),
        np.asarray(enc_code, dtype=np.uint8),
        np.asarray(off, dtype=np.int64),
        np.asarray(length, dtype=np.int64),
        np.asarray(ndims, dtype=np.int64),
        np.fromiter(chain.from_iterable(shapes), np.int64),
        digests if any(digests) else None,
    )


def _plain_name(name: str) -> bool:
    """A name the UTF-8 column holds exactly (numpy strips trailing NULs)."""
    return "\x00" not in name


def _products(ndims: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """The product of each row's dims (1 for a 0-d shape), saturating at 2**62 instead of
    wrapping, so an oversized shape is refused, never mistaken for a small one."""
    out = np.ones(len(ndims), dtype=np.float64)
    if len(dims):
        np.multiply.at(out, np.repeat(np.arange(len(ndims)), ndims), dims.astype(np.float64))
    result = np.minimum(out, 2.0**62).astype(np.int64)
    inexact = np.flatnonzero((out > 2.0**52) & (out < 2.0**62))
    if len(inexact):  # beyond float precision: those few exactly
        starts = np.zeros(len(ndims) + 1, dtype=np.int64)
        np.cumsum(ndims, out=starts[1:])
        for i in inexact:
            result[i] = min(math.prod(dims[starts[i] : starts[i + 1]].tolist()), 1 << 62)
    return result


def validate(
    manifest: Manifest, blob_end: int, *, path: Path | None = None, aligned: bool = True
) -> None:
    """Check offsets (alignment, bounds, overlap), sizes and each format's structure.

    ``blob_end`` is where the manifest starts: every component must lie in [8, blob_end).
    """
    spans: list = []
    objects = manifest.objects
    plain, rest, plain_spans = None, list(objects), _NO_SPANS
    if isinstance(objects, ObjectTable) and objects.plain is None:
        plain, rest, plain_spans = _plain_columns(objects, blob_end, aligned)
    for name in rest:
        _validate_object(name, objects[name], blob_end, path, aligned, spans)
    other = np.array([(s, e) for s, e, *_ in spans], dtype=np.int64).reshape(-1, 2)
    every = np.concatenate([plain_spans, other])
    every = every[np.argsort(every[:, 0], kind="stable")]
    clash = np.flatnonzero(every[1:, 0] < every[:-1, 1])
    if len(clash):
        _overlap_error(every[clash[0]], every[clash[0] + 1], plain, spans, path)
    if isinstance(objects, ObjectTable):
        if plain is not None:
            objects.keep_plain(plain, rest)
        objects.spans = every
        objects.blob_end = blob_end


def _overlap_error(a, b, plain: PlainColumns | None, spans: list, path) -> None:
    """The FormatError naming the two components whose byte spans ``a`` and ``b`` share."""

    def owner(span) -> tuple[str, str]:
        for s, e, name, role in spans:
            if (s, e) == (span[0], span[1]):
                return name, role
        hit = (plain.offsets == span[0]) & (plain.offsets + plain.lengths == span[1])
        return plain.name(int(np.flatnonzero(hit)[0])), "data"

    (n0, r0), (n1, r1) = owner(a), owner(b)
    raise FormatError(
        f"bytes [{b[0]}, {a[1]}) are shared with object {n0!r} component {r0!r}",
        path=path,
        obj=n1,
        component=r1,
    )


def validate_appended(
    kept: Manifest,
    base: ObjectTable,
    added: Mapping[str, Object],
    gone: Iterable[str],
    blob_end: int,
    path,
) -> None:
    """``validate`` for the manifest an append is about to write (``kept``, made by
    ``ObjectTable.derived`` from the validated ``base``): only the ``added`` objects are
    checked, and the byte spans are the base's less those of its objects in ``gone``
    (dropped or replaced), plus the added ones. The writer calls it before writing the
    manifest, so what it finalizes is what a fresh open accepts, and a reopen in this
    process decodes nothing."""
    table = kept.objects
    spans: list = []
    for name, obj in added.items():
        _validate_object(name, obj, blob_end, path, True, spans)
    old = base.spans if base.spans is not None else _NO_SPANS
    dropped = [
        comp.offset
        for name in gone
        if name in base
        for comp in base[name].components.values()
        if comp.length
    ]
    if dropped:
        old = old[~np.isin(old[:, 0], np.array(dropped, dtype=np.int64))]
    new = np.array([(s, e) for s, e, *_ in spans], dtype=np.int64).reshape(-1, 2)
    new = new[np.argsort(new[:, 0], kind="stable")]
    every = np.concatenate([old, new])  # both sorted: in order when new follows old
    if len(old) and len(new) and new[0, 0] < old[-1, 1]:  # not all after the kept ones
        every = every[np.argsort(every[:, 0], kind="stable")]
    clash = np.flatnonzero(every[1:, 0] < every[:-1, 1])
    if len(clash):
        a, b = every[clash[0]], every[clash[0] + 1]
        name, role = next((n, r) for s, e, n, r in spans if (s, e) in ((a[0], a[1]), (b[0], b[1])))
        raise FormatError(
            f"bytes [{b[0]}, {a[1]}) are shared with an object the file already holds",
            path=path,
            obj=name,
            component=role,
        )
    table.spans = every
    table.blob_end = blob_end


def index_problems(objects: ObjectTable, grid, chunks) -> list[tuple[str, str]]:
    """(chunk label, problem) of every chunk an index locates, in one vectorised pass: what
    ``check_blob`` checks chunk by chunk when read, plus overlaps between chunks (SPEC §4.3;
    ``ztensor verify`` runs it over every chunked object). ``chunks``: grid index ->
    Component of the located (non-component) chunks."""
    if not chunks:
        return []
    index = list(chunks)
    comps = [chunks[i] for i in index]
    start = np.array([c.offset for c in comps], dtype=np.int64)
    length = np.array([c.length for c in comps], dtype=np.int64)
    end = start + length
    raw = np.array([c.encoding == RAW for c in comps])
    need = np.array([grid.nbytes(i) for i in index], dtype=np.int64)
    bad: dict[int, str] = {}

    def flag(mask, message) -> None:
        for k in np.flatnonzero(mask):
            bad.setdefault(int(k), message(int(k)))

    flag(start % ALIGNMENT != 0, lambda k: f"offset {start[k]} is not a multiple of {ALIGNMENT}")
    flag(
        (start < len(MAGIC)) | (end > objects.blob_end),
        lambda k: f"bytes [{start[k]}, {end[k]}) lie outside the blob area",
    )
    flag(raw & (length != need), lambda k: f"raw chunk length {length[k]} != {need[k]} bytes")
    flag(
        ~raw & (need > np.maximum(length, 1) * MAX_DECODE_RATIO),
        lambda k: f"declared decoded size {need[k]} is impossible for {length[k]} bytes",
    )
    spans = objects.spans
    i = np.searchsorted(spans[:, 0], end, side="left")
    prev_end = np.where(i > 0, spans[np.maximum(i - 1, 0), 1], 0)
    flag(prev_end > start, lambda k: f"bytes [{start[k]}, {end[k]}) overlap a manifest component")
    order = np.argsort(start, kind="stable")
    shared = np.flatnonzero(end[order][:-1] > start[order][1:])
    for k in shared:
        a, b = int(order[k]), int(order[k + 1])
        bad.setdefault(b, f"bytes [{start[b]}, {end[a]}) are shared with chunk {list(index[a])}")
    from .layouts.chunked import chunk_role  # the chunked layout names chunks in messages

    return [(chunk_role(index[k]), message) for k, message in sorted(bad.items())]


def check_blob(objects: ObjectTable, comp: Component, path, name, label, nbytes: int) -> None:
    """A blob a chunk index locates (not a manifest component) gets the container's checks
    when it is used: 64-aligned, inside the blob area, overlapping no component the manifest
    names, and a stored length that can hold (raw: is) its ``nbytes``."""
    start, end = comp.offset, comp.offset + comp.length
    problem = None
    if start % ALIGNMENT:
        problem = f"offset {start} is not a multiple of {ALIGNMENT}"
    elif start < len(MAGIC) or end > objects.blob_end:
        problem = f"bytes [{start}, {end}) lie outside the blob area [8, {objects.blob_end})"
    elif comp.encoding == RAW and comp.length != nbytes:
        problem = f"raw chunk length {comp.length} != {nbytes} bytes of its in-bounds part"
    elif comp.encoding != RAW and nbytes > max(comp.length, 1) * MAX_DECODE_RATIO:
        problem = f"declared decoded size {nbytes} is impossible for {comp.length} bytes"
    else:
        spans = objects.spans
        i = int(np.searchsorted(spans[:, 0], end, side="left"))
        if i and spans[i - 1, 1] > start:
            s, e = spans[i - 1]
            problem = f"bytes [{start}, {end}) overlap [{s}, {e}), named by the manifest"
    if problem is not None:
        raise FormatError(
            f"index entry of chunk {label}: {problem}", path=path, obj=name, component=label
        )


# --------------------------------------------------------------------------- memo

# Decoding and validating are pure functions of the manifest bytes and where they start, so a
# reopened file whose manifest and footer are byte-for-byte unchanged gets the same validated
# Manifest back without paying for either again (data loaders and Dask tasks reopen files
# constantly). Entries are keyed by (path, file size, aligned) and hold the exact manifest +
# footer bytes: the footer fixes where the manifest starts, so equal bytes mean an equal
# result. Any change misses. A kept manifest of any size is compact: its plain dense objects
# are columns (PlainColumns), so it costs about twice its bytes, not a Python object per
# tensor. Bounded by entries and held bytes.
_MEMO_ENTRIES = 128
_MEMO_BYTES = 512 << 20
_GC_PAUSE_BYTES = 1 << 20  # manifests from this size decode with the cyclic collector paused
_memo: OrderedDict[tuple[str, int, bool], tuple[bytes, Manifest, int]] = OrderedDict()
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
    tail = bytes(data) + footer(data)
    name, size = (os.fspath(path) if path is not None else ""), blob_end + len(tail)
    key = (name, size, aligned)
    kept = memo_entry(name, size, aligned=aligned)
    if kept is not None and kept[0] == tail:
        return kept[1]
    with _collector_paused(len(data) >= _GC_PAUSE_BYTES):
        m = decode(data, path=path)
        validate(m, blob_end, path=path, aligned=aligned)
    _keep(key, tail, m)
    return m


def remember(path: str, blob_end: int, data: bytes, m: Manifest, *, aligned: bool = True) -> None:
    """Keep ``m``, already validated, as the manifest ``data`` written at ``blob_end`` of
    ``path`` (an append just finalized it), so the next open there decodes nothing."""
    _keep(
        (os.fspath(path), blob_end + len(data) + FOOTER_SIZE, aligned),
        bytes(data) + footer(data),
        m,
    )


def _keep(key: tuple[str, int, bool], tail: bytes, m: Manifest) -> None:
    global _memo_held
    held = len(tail) + _held_bytes(m)
    with _memo_lock:
        old = _memo.pop(key, None)
        if old is not None:
            _memo_held -= old[2]
        _memo[key] = (tail, m, held)
        _memo_held += held
        while len(_memo) > _MEMO_ENTRIES or _memo_held > _MEMO_BYTES:
            _memo_held -= _memo.popitem(last=False)[1][2]


@contextmanager
def _collector_paused(pause: bool):
    """The cyclic garbage collector off while a large manifest is decoded and checked: the
    decoded maps hold no cycles, and collections triggered by their allocation would walk
    all of them again and again (about half of a 100,000-object decode)."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _held_bytes(m: Manifest) -> int:
    """About what a kept manifest holds besides its bytes: its columns, and ~1 KiB per
    object kept as decoded maps."""
    objects = m.objects
    if not isinstance(objects, ObjectTable):
        return 1024 * len(objects)
    plain = objects.plain
    return (plain.nbytes() if plain is not None else 0) + 1024 * len(objects._raw)


def forget_memo() -> None:
    """Drop every memoized manifest (tests; or to release their memory)."""
    global _memo_held
    with _memo_lock:
        _memo.clear()
        _memo_held = 0
