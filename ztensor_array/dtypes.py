"""The one dtype table: zTensor names <-> numpy, torch, legacy v0.1, safetensors and GGUF names.

Every conversion between dtype spellings in this package goes through here. ml_dtypes (bf16,
f8) and torch are imported only when a dtype that needs them is first used, so that
``import ztensor_array`` stays as cheap as ``import numpy``.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import numpy as np

from .errors import UnsupportedError


class DType(NamedTuple):
    """One row of the table. ``name`` is the zTensor spelling written in manifests."""

    name: str
    itemsize: int
    numpy_spec: str  # numpy dtype string, or "ml_dtypes:<attr>"
    legacy: str  # v0.1 long name, also what 1.1.1's metadata reports as dtype_str
    safetensors: str | None
    gguf: str | None  # GGMLQuantizationType name for unquantized tensors
    torch: str | None  # attribute of the torch module
    core: bool  # known to the reference 1.1.1 reader (others break a whole file there)

    @property
    def numpy(self) -> np.dtype:
        return _numpy_dtype(self.numpy_spec)


_TABLE = (
    DType("f64", 8, "<f8", "float64", "F64", "F64", "float64", True),
    DType("f32", 4, "<f4", "float32", "F32", "F32", "float32", True),
    DType("f16", 2, "<f2", "float16", "F16", "F16", "float16", True),
    DType("bf16", 2, "ml_dtypes:bfloat16", "bfloat16", "BF16", "BF16", "bfloat16", True),
    DType(
        "f8_e4m3",
        1,
        "ml_dtypes:float8_e4m3fn",
        "float8_e4m3",
        "F8_E4M3",
        None,
        "float8_e4m3fn",
        False,
    ),
    DType(
        "f8_e5m2", 1, "ml_dtypes:float8_e5m2", "float8_e5m2", "F8_E5M2", None, "float8_e5m2", False
    ),
    DType("complex64", 8, "<c8", "complex64", "C64", None, "complex64", False),
    DType("complex128", 16, "<c16", "complex128", None, None, "complex128", False),
    DType("i64", 8, "<i8", "int64", "I64", "I64", "int64", True),
    DType("i32", 4, "<i4", "int32", "I32", "I32", "int32", True),
    DType("i16", 2, "<i2", "int16", "I16", "I16", "int16", True),
    DType("i8", 1, "|i1", "int8", "I8", "I8", "int8", True),
    DType("u64", 8, "<u8", "uint64", "U64", None, "uint64", True),
    DType("u32", 4, "<u4", "uint32", "U32", None, "uint32", True),
    DType("u16", 2, "<u2", "uint16", "U16", None, "uint16", True),
    DType("u8", 1, "|u1", "uint8", "U8", None, "uint8", True),
    DType("bool", 1, "|b1", "bool", "BOOL", None, "bool", True),
)

BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}
NAMES: tuple[str, ...] = tuple(BY_NAME)
CORE_NAMES: frozenset[str] = frozenset(d.name for d in _TABLE if d.core)
_BY_LEGACY = {d.legacy: d for d in _TABLE}
_BY_SAFETENSORS = {d.safetensors: d for d in _TABLE if d.safetensors}
_BY_GGUF = {d.gguf: d for d in _TABLE if d.gguf}


@cache
def _numpy_dtype(spec: str) -> np.dtype:
    if spec.startswith("ml_dtypes:"):
        import ml_dtypes  # ~30 ms: only when a bf16/f8 dtype is met

        return np.dtype(getattr(ml_dtypes, spec.split(":", 1)[1]))
    return np.dtype(spec)


def lookup(name: str) -> DType:
    """The table row of a zTensor dtype name; UnsupportedError if unknown."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise UnsupportedError(f"unknown zTensor dtype {name!r}") from None


def itemsize(name: str) -> int:
    return lookup(name).itemsize


_TO_NUMPY: dict[str, np.dtype] = {}


def to_numpy(name: str) -> np.dtype:
    """numpy dtype (little-endian) for a zTensor dtype name."""
    try:
        return _TO_NUMPY[name]  # hot: every listed or read tensor asks
    except (KeyError, TypeError):
        dt = lookup(name).numpy
        _TO_NUMPY[name] = dt
        return dt


@cache
def _numpy_index(with_ml_dtypes: bool) -> dict[np.dtype, str]:
    rows = (d for d in _TABLE if with_ml_dtypes or not d.numpy_spec.startswith("ml_dtypes:"))
    return {d.numpy: d.name for d in rows}


def from_numpy(dtype: Any) -> str:
    """zTensor name of a numpy dtype, any byte order; UnsupportedError if it has none."""
    dt = little_endian(np.dtype(dtype))
    name = _numpy_index(False).get(dt)
    if name is None:  # maybe an ml_dtypes type: only now pay for importing it
        name = _numpy_index(True).get(dt)
    if name is None:
        raise UnsupportedError(f"numpy dtype {dt} has no zTensor equivalent")
    return name


def from_legacy(long_name: str) -> str:
    """zTensor name of a v0.1 long dtype name ("float32" -> "f32")."""
    try:
        return _BY_LEGACY[long_name].name
    except (KeyError, TypeError):
        raise UnsupportedError(f"unknown legacy dtype {long_name!r}") from None


def to_legacy(name: str) -> str:
    return lookup(name).legacy


def from_safetensors(st_name: str) -> str:
    """zTensor name of a safetensors dtype ("BF16" -> "bf16")."""
    try:
        return _BY_SAFETENSORS[st_name].name
    except (KeyError, TypeError):
        raise UnsupportedError(f"safetensors dtype {st_name!r} has no zTensor equivalent") from None


def to_safetensors(name: str) -> str:
    st = lookup(name).safetensors
    if st is None:
        raise UnsupportedError(f"zTensor dtype {name!r} has no safetensors equivalent")
    return st


def from_gguf(ggml_type_name: str) -> str:
    """zTensor name of an unquantized GGML type name ("F16" -> "f16")."""
    try:
        return _BY_GGUF[ggml_type_name].name
    except (KeyError, TypeError):
        raise UnsupportedError(f"GGML type {ggml_type_name!r} is not a plain dtype") from None


def to_gguf(name: str) -> str:
    g = lookup(name).gguf
    if g is None:
        raise UnsupportedError(f"zTensor dtype {name!r} has no GGUF equivalent")
    return g


def to_torch(name: str) -> Any:
    """torch dtype for a zTensor dtype name (imports torch)."""
    import torch  # optional dependency: only asked for by torch callers

    attr = lookup(name).torch
    tdt = getattr(torch, attr, None) if attr else None
    if tdt is None:
        raise UnsupportedError(f"zTensor dtype {name!r} has no torch dtype in this torch version")
    return tdt


def from_torch(tdtype: Any) -> str:
    """zTensor name of a torch dtype."""
    attr = str(tdtype).removeprefix("torch.")
    for d in _TABLE:
        if d.torch == attr:
            return d.name
    raise UnsupportedError(f"torch dtype {tdtype} has no zTensor equivalent")


def little_endian(dtype: np.dtype) -> np.dtype:
    """The same dtype in little-endian byte order (the only order zTensor stores)."""
    return dtype.newbyteorder("<") if dtype.byteorder not in "|<=" else dtype


# v1.2 spelling of dtypes that the 1.1.1 reader does not know: a core storage dtype in
# `dtype` plus the logical type in the component's `type` field. We write this spelling so
# that 1.1.1 still opens such files; we read it and the spec's direct spelling alike.
_LOGICAL_TYPES = {
    "f8_e4m3fn": ("u8", "f8_e4m3"),
    "f8_e4m3": ("u8", "f8_e4m3"),
    "f8_e5m2": ("u8", "f8_e5m2"),
    "complex64": ("f32", "complex64"),
    "complex128": ("f64", "complex128"),
    "bf16": ("u16", "bf16"),
}
_TYPE_WRITTEN = {
    "f8_e4m3": "f8_e4m3fn",
    "f8_e5m2": "f8_e5m2",
    "complex64": "complex64",
    "complex128": "complex128",
}


def storage_spelling(name: str) -> tuple[str, str | None]:
    """(dtype, type) to write for a logical dtype: core dtypes as-is, others as v1.2 does."""
    written = _TYPE_WRITTEN.get(name)
    if written is None:
        return name, None
    return _LOGICAL_TYPES[written][0], written


def is_known_type(type_: str | None) -> bool:
    """Whether a component's `type` is one this version knows (absent counts as known).

    An unknown `type` is most likely a logical type of a newer writer: the object is listed
    but cannot be read. A known one over the wrong storage dtype is a malformed file.
    """
    return type_ is None or type_ in _LOGICAL_TYPES or type_ in BY_NAME


def logical_name(dtype: str, type_: str | None) -> str:
    """The logical zTensor dtype of a component from its `dtype` and optional `type`."""
    if type_ is None or type_ == dtype:
        return dtype
    entry = _LOGICAL_TYPES.get(type_)
    if entry is None:
        if type_ in BY_NAME:  # a plain dtype name is no logical type of another dtype
            raise UnsupportedError(f"type {type_!r} cannot be stored as dtype {dtype!r}")
        raise UnsupportedError(f"unknown logical type {type_!r}")
    storage, logical = entry
    # The documented storage, the logical dtype itself (a spec-literal writer that also
    # sets `type`), or a same-size integer of the other signedness (i8 under f8).
    same_int = dtype[:1] in "iu" and dtype[1:] == storage[1:] and storage[:1] in "iu"
    if dtype not in (storage, logical) and not same_int:
        raise UnsupportedError(f"logical type {type_!r} cannot be stored as dtype {dtype!r}")
    return logical


def ggml_block(type_name: str) -> tuple[int, int]:
    """(elements, bytes) of one block of a GGML quantization type, from the gguf package."""
    try:
        # optional dependency (the convert extra)
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        raise UnsupportedError("GGML block types need the 'gguf' package") from None
    try:
        qtype = GGMLQuantizationType[type_name]
        return GGML_QUANT_SIZES[qtype]
    except (KeyError, TypeError):
        raise UnsupportedError(f"unknown GGML type {type_name!r}") from None


def ggml_type_name(value: Any) -> str:
    """Canonical GGML type name ("Q4_0") of a name, enum member or integer type id."""
    try:  # optional dependency (the convert extra)
        from gguf.constants import GGMLQuantizationType
    except ImportError:
        raise UnsupportedError("GGML block types need the 'gguf' package") from None
    try:
        if isinstance(value, str):
            return GGMLQuantizationType[value.upper()].name
        return GGMLQuantizationType(int(value)).name
    except (KeyError, ValueError, TypeError):
        raise UnsupportedError(f"unknown GGML type {value!r}") from None


# HDF5 has no complex type: h5py and others store complex numbers as a compound of two
# floats under one of these pairs of field names.
COMPLEX_FIELD_NAMES = (("r", "i"), ("re", "im"), ("real", "imag"))


def complex_of_compound(dtype: np.dtype) -> np.dtype | None:
    """The complex dtype a structured dtype of two same-type floats named as a complex
    pair (``COMPLEX_FIELD_NAMES``) holds, with no padding; None for any other dtype."""
    dtype = np.dtype(dtype)
    if dtype.names is None or len(dtype.names) != 2:
        return None
    if tuple(n.lower() for n in dtype.names) not in COMPLEX_FIELD_NAMES:
        return None
    (a, off_a), (b, off_b) = (dtype.fields[n][:2] for n in dtype.names)
    if a != b or a.kind != "f" or a.itemsize not in (4, 8) or a.subdtype is not None:
        return None
    if (off_a, off_b) != (0, a.itemsize) or dtype.itemsize != 2 * a.itemsize:
        return None
    return np.dtype(f"{a.byteorder if a.byteorder in '<>' else '='}c{2 * a.itemsize}")
