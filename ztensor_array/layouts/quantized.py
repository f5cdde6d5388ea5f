"""`quantized_group`: GPTQ-style packed integer weights with per-group scales and zero points.

The geometry (which component holds how many bytes, given ``bits``, ``group_size`` and the
logical shape) is a structural rule and lives in ``manifest.quantized_group``; this module
unpacks the bit fields and does the arithmetic. The convention, in short (SPEC.md has it in
full): the logical array is ``[rows, cols] = [out_features, in_features]``; for every row
``n`` the ``cols`` quantized values form one little-endian bit stream, ``bits`` per value,
cut into container words that are stored as ``packed_weight[word, n]`` (GPTQ's ``qweight``);
integer zero points are packed the same way along rows (GPTQ's ``qzeros``), float zero
points are stored plainly; ``W[n, k] = (q[k, n] - (z[g, n] + zero_offset)) * s[g, n]`` with
``g = g_idx[k]`` if present, else ``k // group_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import dtypes, manifest
from ..errors import FormatError, ZTensorError
from ..manifest import Component, Object
from .dense import as_logical


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


def _group_index(geo: manifest.QuantizedGroup, g_idx: np.ndarray | None, fail) -> np.ndarray:
    if g_idx is None:
        return np.arange(geo.cols, dtype=np.intp) // geo.group_size
    if g_idx.size and (g_idx.min() < 0 or g_idx.max() >= geo.groups):
        fail(f"g_idx holds a group outside [0, {geo.groups})", "g_idx")
    return g_idx.astype(np.intp)


def dequantize(
    geo: manifest.QuantizedGroup,
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


def read_object(obj: Object, get, *, path=None, name=None) -> np.ndarray:
    """Dequantized array in the logical shape."""

    def fail(msg: str, role: str | None = None):
        raise FormatError(msg, path=path, obj=name, component=role)

    geo = manifest.quantized_group(obj, path, name)
    comps = obj.components

    def logical(role: str) -> np.ndarray:
        return as_logical(get(role), comps[role])

    g_idx = logical("g_idx") if "g_idx" in comps else None
    return dequantize(
        geo, logical("packed_weight"), logical("scales"), logical("zeros"), g_idx, fail=fail
    )


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
    if container not in manifest._WORD_BITS:
        raise ZTensorError(
            f"packed_weight must be an integer container (i32 for GPTQ), got {container}",
            obj=name,
        )
    attrs: dict[str, Any] = dict(attributes or {})
    attrs.update(
        bits=bits,
        group_size=group_size,
        packing=packing or manifest.gptq_packing(bits, container),
    )
    if zero_offset:
        attrs["zero_offset"] = zero_offset
    comps = {}
    for role, arr in parts.items():
        storage, type_ = dtypes.storage_spelling(dtypes.from_numpy(arr.dtype))
        comps[role] = Component(storage, 0, arr.nbytes, type=type_)
    obj = Object(tuple(int(s) for s in shape), "quantized_group", comps, attrs)
    try:
        geo = manifest.quantized_group(obj, name=name)
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
