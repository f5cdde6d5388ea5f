"""`ggml_quantized`: GGUF/GGML block-quantized tensors kept byte for byte.

One `blocks` component (u8) holds the tensor's blocks exactly as a GGUF file stores them;
the object attribute `ggml_type` names the block type ("Q4_0", "Q6_K", "IQ2_XXS", ...) and the
object shape is the logical row-major shape (GGUF lists dims innermost first; ours are the
reverse). Reading dequantizes with the `gguf` package, the reference implementation of every
block type; the raw blocks come back unchanged from ``Reader.read_components``, so a GGUF
file can be rebuilt from a .zt, or compared block for block, without loss.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import UnsupportedError, ZTensorError
from ..manifest import Component, Object
from .base import Layout, check_size, refuse, require_known_types


def ggml_blocks(obj: Object, path=None, name=None) -> tuple[str, int, int]:
    """(ggml type name, elements per block, decoded bytes) of a `ggml_quantized` object."""

    bad = functools.partial(refuse, path=path, name=name)
    require_known_types(obj, path, name)
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


class GGMLQuantized(Layout):
    format = "ggml_quantized"

    def check(self, name: str, obj: Object, path) -> None:
        """One u8 `blocks` component of a known block type, sized by the shape."""
        try:
            _, _, nbytes = ggml_blocks(obj, path, name)
        except UnsupportedError:
            return  # a variant we cannot read: the rest of the file stays readable
        check_size(name, "blocks", obj.components["blocks"], nbytes, path)

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        try:
            return ggml_blocks(obj)[2] if role == "blocks" else None
        except ZTensorError:
            return None  # a variant this version cannot read: the generic rule applies

    def value_dtype(self, obj: Object) -> str | None:
        """Blocks dequantize to float32."""
        return None if super().value_dtype(obj) is None else "f32"

    def read(self, obj: Object, get, *, path=None, name=None) -> np.ndarray:
        """The dequantized float32 array in the logical shape."""
        qtype, _, _ = ggml_blocks(obj, path, name)
        blocks = get("blocks")
        if obj.numel == 0:
            return np.zeros(obj.shape, dtype=np.float32)
        try:
            return dequantize(blocks, qtype, obj.shape)
        except NotImplementedError:
            raise UnsupportedError(
                f"the installed gguf package cannot dequantize {qtype}; "
                "read_components() returns the raw blocks",
                path=path,
                obj=name,
            ) from None


def dequantize(blocks: np.ndarray, ggml_type: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of ``shape`` from raw blocks, through ``gguf.quants.dequantize``."""
    # optional dependency (the convert extra): only to dequantize GGUF blocks
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    rows = blocks.reshape(-1, blocks.size // max(int(np.prod(shape[:-1])), 1))
    values = gguf_dequantize(rows, GGMLQuantizationType[ggml_type])
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def encode(
    name: str,
    blocks: np.ndarray,
    ggml_type: Any,
    shape,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(components, attributes) for ``Writer.add_object``, checking the byte count."""
    qtype = dtypes.ggml_type_name(ggml_type)
    elems, _ = dtypes.ggml_block(qtype)
    if elems == 1:
        raise ZTensorError(
            f"GGML type {qtype} is not block-quantized: store it as a dense tensor "
            f"(dtype {qtype} -> dtypes.from_gguf)",
            obj=name,
        )
    if blocks.dtype != np.uint8:
        raise ZTensorError(f"blocks must be raw bytes (uint8), got {blocks.dtype}", obj=name)
    flat = np.ascontiguousarray(blocks).reshape(-1)
    attrs = dict(attributes or {})
    attrs["ggml_type"] = qtype
    shape = tuple(int(s) for s in shape)
    obj = Object(shape, "ggml_quantized", {"blocks": Component("u8", 0, flat.nbytes)}, attrs)
    try:
        _, _, nbytes = ggml_blocks(obj, name=name)
    except ZTensorError as exc:
        raise ZTensorError(exc.reason, obj=name) from None
    if flat.nbytes != nbytes:
        raise ZTensorError(
            f"{flat.nbytes} bytes of {qtype} blocks do not match shape {list(shape)} "
            f"({nbytes} bytes expected)",
            obj=name,
            component="blocks",
        )
    return {"blocks": flat}, attrs
