"""`quantized_group`: GPTQ-style packed integer weights with per-group scales and zero points.

``geometry`` gives which component holds how many bytes, given ``bits``, ``group_size`` and
the logical shape (checked when a file opens); ``unpack``/``dequantize`` do the bit fields
and the arithmetic. The convention, in short (SPEC.md has it in
full): the logical array is ``[rows, cols] = [out_features, in_features]``; for every row
``n`` the ``cols`` quantized values form one little-endian bit stream, ``bits`` per value,
cut into container words that are stored as ``packed_weight[word, n]`` (GPTQ's ``qweight``);
integer zero points are packed the same way along rows (GPTQ's ``qzeros``), float zero
points are stored plainly; ``W[n, k] = (q[k, n] - (z[g, n] + zero_offset)) * s[g, n]`` with
``g = g_idx[k]`` if present, else ``k // group_size``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import dtypes
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..manifest import Component, Object
from .base import (
    Layout,
    check_size,
    is_integer,
    logical_name,
    refuse,
    require_known_types,
    unknown_type,
)
from .dense import as_logical

QUANT_BITS = range(1, 9)
_FLOATS = ("f16", "bf16", "f32", "f64")
# bits of each integer container type
WORD_BITS = {n: 8 * dtypes.itemsize(n) for n in dtypes.BY_NAME if is_integer(n)}


def gptq_packing(bits: int, container: str) -> str:
    """The `packing` attribute naming how `bits`-wide values fill `container` words:
    "8_per_i32" for 4 bits, "32_per_3xi32" for 3 bits (32 values in 3 words)."""
    span = math.lcm(bits, WORD_BITS[container])
    values, words = span // bits, span // WORD_BITS[container]
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


def geometry(obj: Object, path=None, name=None) -> QuantizedGroup:
    """Geometry of a GPTQ-style `quantized_group` object, or FormatError/UnsupportedError."""
    bad = functools.partial(refuse, path=path, name=name)
    comps = obj.components
    require_known_types(obj, path, name)
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
    if packed not in WORD_BITS or comps["packed_weight"].type not in (None, packed):
        bad(f"packed_weight dtype {packed} is not an integer container", "packed_weight")
    packing = attrs.get("packing", gptq_packing(bits, packed))
    if packing != gptq_packing(bits, packed):
        bad(
            f"packing {packing!r} is not the GPTQ packing {gptq_packing(bits, packed)!r} of "
            f"{bits}-bit values in {packed}",
            unsupported=True,
        )
    if (cols * bits) % WORD_BITS[packed]:
        bad(f"{cols} input columns x {bits} bits do not fill whole {packed} words")
    nbytes = {"packed_weight": rows * cols * bits // 8}
    scales = logical_name(obj, "scales")
    if scales not in _FLOATS:
        bad(f"scales dtype {scales} is not a float type", "scales")
    nbytes["scales"] = groups * rows * dtypes.itemsize(scales)
    zeros = logical_name(obj, "zeros")
    if zeros in _FLOATS:
        nbytes["zeros"] = groups * rows * dtypes.itemsize(zeros)
    elif zeros in WORD_BITS and comps["zeros"].type in (None, zeros):
        if (rows * bits) % WORD_BITS[zeros]:
            bad(f"{rows} rows x {bits} bits do not fill whole {zeros} words", "zeros")
        nbytes["zeros"] = groups * rows * bits // 8
    else:
        bad(f"zeros dtype {zeros} is neither a float nor an integer container", "zeros")
    if "g_idx" in comps:
        g_idx = comps["g_idx"].dtype
        if g_idx not in WORD_BITS:
            bad(f"g_idx dtype {g_idx} is not an integer", "g_idx")
        nbytes["g_idx"] = cols * dtypes.itemsize(g_idx)
    extra = set(comps) - set(nbytes)
    if extra:
        bad(f"quantized_group has unknown components {sorted(extra)}", unsupported=True)
    return QuantizedGroup(rows, cols, bits, group_size, groups, zero_offset, nbytes)


class QuantizedGroupLayout(Layout):
    format = "quantized_group"

    def check(self, name: str, obj: Object, path) -> None:
        """The GPTQ geometry, and each component's size from it."""
        try:
            geo = geometry(obj, path, name)
        except UnsupportedError:
            return  # a variant we cannot read: the rest of the file stays readable
        for role, nbytes in geo.nbytes.items():
            check_size(name, role, obj.components[role], nbytes, path)

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        try:
            return geometry(obj).nbytes.get(role)
        except ZTensorError:
            return None  # a variant this version cannot read: the generic rule applies

    def value_dtype(self, obj: Object) -> str | None:
        """Dequantized values come in the scales' dtype."""
        if "scales" not in obj.components or unknown_type(obj) is not None:
            return super().value_dtype(obj)
        return logical_name(obj, "scales")

    def read(self, obj: Object, get, *, path=None, name=None) -> np.ndarray:
        """Dequantized array in the logical shape."""

        def fail(msg: str, role: str | None = None):
            raise FormatError(msg, path=path, obj=name, component=role)

        geo = geometry(obj, path, name)
        comps = obj.components

        def logical(role: str) -> np.ndarray:
            return as_logical(get(role), comps[role])

        g_idx = logical("g_idx") if "g_idx" in comps else None
        return dequantize(
            geo, logical("packed_weight"), logical("scales"), logical("zeros"), g_idx, fail=fail
        )


def unpack(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Unpack ``count`` values from each row of container words (last axis).

    Each row of ``words`` is a little-endian bit stream (word 0 holds the lowest bits);
    value ``i`` occupies stream bits ``[i * bits, (i + 1) * bits)``. Returns uint8 values
    with the last axis replaced by ``count``.
    """
    width = words.dtype.itemsize * 8
    lead = words.shape[:-1]
    unsigned = (
        np.ascontiguousarray(words)
        .astype(words.dtype.newbyteorder("<"), copy=False)
        .view(f"<u{width // 8}")
    )
    mask = (1 << bits) - 1
    if width % bits == 0:  # values never straddle a word: shift and mask
        per = width // bits
        out = np.empty((*lead, unsigned.shape[-1], per), dtype=np.uint8)
        for j in range(per):
            np.bitwise_and(unsigned >> (j * bits), mask, out=out[..., j], casting="unsafe")
        return out.reshape(*lead, -1)[..., :count]
    # general case (3, 5, 6, 7 bits): expand the stream to one byte per bit
    planes = np.unpackbits(unsigned.view(np.uint8), axis=-1, bitorder="little")
    nvalues = planes.shape[-1] // bits
    planes = planes[..., : nvalues * bits].reshape(*lead, nvalues, bits)
    out = np.zeros((*lead, nvalues), dtype=np.uint8)
    for b in range(bits):
        out |= planes[..., b] << b
    return out[..., :count]


def _group_index(geo: QuantizedGroup, g_idx: np.ndarray | None, fail) -> np.ndarray:
    if g_idx is None:
        return np.arange(geo.cols, dtype=np.intp) // geo.group_size
    if g_idx.size and (g_idx.min() < 0 or g_idx.max() >= geo.groups):
        fail(f"g_idx holds a group outside [0, {geo.groups})", "g_idx")
    return g_idx.astype(np.intp)


def dequantize(
    geo: QuantizedGroup,
    packed: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    g_idx: np.ndarray | None = None,
    *,
    fail: Callable[..., Any] | None = None,
) -> np.ndarray:
    """The logical ``[rows, cols]`` array, in the dtype of ``scales``.

    Arithmetic is done in float32 (float64 for f64 scales) in this order:
    ``(q - (z + zero_offset)) * s``, then cast once to the scales' dtype.
    """

    def default_fail(msg: str, role: str | None = None):
        raise FormatError(msg, component=role)

    fail = fail or default_fail
    rows, cols, bits = geo.rows, geo.cols, geo.bits
    if rows * cols == 0:
        return np.zeros((rows, cols), dtype=scales.dtype)
    work = np.float64 if scales.dtype == np.float64 else np.float32
    # packed_weight is [words, rows]: each row's stream runs down a column, so transpose
    # the (few, wide) words rather than the (many, narrow) values
    w = unpack(packed.reshape(-1, rows).T, bits, cols).astype(work)  # [rows, cols]
    s = scales.reshape(geo.groups, rows).astype(work).T  # [rows, groups]
    if zeros.dtype.kind in "iu":
        z = unpack(zeros.reshape(geo.groups, -1), bits, rows)  # [groups, rows]
    else:
        z = zeros.reshape(geo.groups, rows)
    zf = (z.astype(work) + work(geo.zero_offset)).T  # [rows, groups]
    if g_idx is None and cols % geo.group_size == 0:  # groups are contiguous runs: broadcast
        runs = w.reshape(rows, geo.groups, geo.group_size)
        runs -= zf[:, :, None]
        runs *= s[:, :, None]
    else:
        g = _group_index(geo, g_idx, fail)
        w -= zf[:, g]
        w *= s[:, g]
    return w.astype(scales.dtype, copy=False)


def encode(
    name: str,
    packed_weight: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    shape,
    *,
    bits: int,
    group_size: int,
    packing: str | None = None,
    g_idx: np.ndarray | None = None,
    zero_offset: int = 0,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(components, attributes) for ``Writer.add_object``, after checking that the parts
    agree with ``bits``, ``group_size`` and ``shape`` exactly as a reader will."""
    parts = {"packed_weight": packed_weight, "scales": scales, "zeros": zeros}
    if g_idx is not None:
        parts["g_idx"] = g_idx
    parts = {role: np.ascontiguousarray(a).reshape(-1) for role, a in parts.items()}
    if type(bits) is not int or type(group_size) is not int:
        raise ZTensorError("bits and group_size must be integers", obj=name)
    container = dtypes.from_numpy(parts["packed_weight"].dtype)
    if container not in WORD_BITS:
        raise ZTensorError(
            f"packed_weight must be an integer container (i32 for GPTQ), got {container}",
            obj=name,
        )
    attrs: dict[str, Any] = dict(attributes or {})
    attrs.update(
        bits=bits,
        group_size=group_size,
        packing=packing or gptq_packing(bits, container),
    )
    if zero_offset:
        attrs["zero_offset"] = zero_offset
    comps = {}
    for role, arr in parts.items():
        storage, type_ = dtypes.storage_spelling(dtypes.from_numpy(arr.dtype))
        comps[role] = Component(storage, 0, arr.nbytes, type=type_)
    obj = Object(tuple(int(s) for s in shape), "quantized_group", comps, attrs)
    try:
        geo = geometry(obj, name=name)
    except ZTensorError as exc:
        raise ZTensorError(exc.reason, obj=name, component=exc.component) from None
    for role, arr in parts.items():
        if arr.nbytes != geo.nbytes[role]:
            raise ZTensorError(
                f"{arr.size} elements ({arr.nbytes} bytes) do not fit shape {list(obj.shape)} "
                f"at {bits} bits, group_size {group_size}: expected {geo.nbytes[role]} bytes",
                obj=name,
                component=role,
            )
    return parts, attrs
