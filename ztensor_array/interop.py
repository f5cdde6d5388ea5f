"""Conversions between numpy, torch and array-likes, below the reader and writer (no I/O).

torch is imported only inside the functions that meet a torch tensor or are asked for one,
so the core never imports it by itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import dtypes
from .errors import ArgumentTypeError, UnsupportedError, ZTensorError


def is_torch(value: Any) -> bool:
    return type(value).__module__.split(".", 1)[0] == "torch"


def as_array(value: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor or array-like (any byte order)."""
    if isinstance(value, np.ndarray):
        return value
    if is_torch(value):
        return torch_to_numpy(value)
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists, objects numpy refuses
        raise ArgumentTypeError(f"cannot be turned into an array ({exc})") from None


def torch_to_numpy(tensor: Any) -> np.ndarray:
    """numpy array sharing memory with a CPU tensor (a CPU copy for other devices)."""
    import torch  # optional dependency; the caller already holds a torch tensor

    if tensor.layout != torch.strided:
        raise ZTensorError(
            f"torch {tensor.layout} tensors are not supported; pass dense "
            "tensors or use add_sparse_* with their parts"
        )
    name = dtypes.from_torch(tensor.dtype)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    shape = tuple(t.shape)
    flat = t.reshape(-1)
    if flat.stride(0) != 1:  # one element with any stride counts as contiguous in torch,
        flat = flat.clone(memory_format=torch.contiguous_format)  # not for a byte view
    raw = flat.view(torch.uint8).numpy()
    return raw.view(dtypes.to_numpy(name)).reshape(shape)


def import_torch():
    """The torch module, or an UnsupportedError that names the extra to install."""
    try:
        import torch  # optional dependency: only for to="torch"
    except ImportError:
        raise UnsupportedError(
            "torch is not installed; install the 'torch' extra "
            "(pip install 'ztensor-array[torch]') to read tensors as torch"
        ) from None
    return torch


def to_torch(value: Any) -> Any:
    """torch tensor from a numpy array (sharing memory) or a scipy.sparse matrix."""
    torch = import_torch()
    if isinstance(value, np.ndarray):
        name = dtypes.from_numpy(value.dtype)
        tdtype = dtypes.to_torch(name)
        shape = value.shape
        flat = np.ascontiguousarray(value).reshape(-1)
        if not flat.flags.writeable:  # torch has no read-only tensors: copy instead of lie
            flat = flat.copy()
        t = torch.from_numpy(flat.view(np.uint8)).view(tdtype)
        return t.reshape(shape)
    fmt = getattr(value, "format", None)
    if fmt == "csr":
        return torch.sparse_csr_tensor(
            torch.from_numpy(value.indptr.astype(np.int64)),
            torch.from_numpy(value.indices.astype(np.int64)),
            to_torch(value.data),
            size=value.shape,
        )
    if fmt == "coo":
        coords = np.stack([np.asarray(c, dtype=np.int64) for c in value.coords])
        return torch.sparse_coo_tensor(
            torch.from_numpy(coords), to_torch(value.data), size=value.shape
        )
    raise ArgumentTypeError(f"cannot convert {type(value).__name__} to torch")


MAX_NDIM = 64  # numpy's NPY_MAXDIMS


def shape_problem(shape, itemsize: int) -> str | None:
    """Why numpy cannot hold an array of ``shape`` with items of ``itemsize`` bytes (None
    when it can): more than 64 dimensions, or more bytes than a signed 64-bit size counts
    (numpy checks the product of the non-zero sizes, so an empty array is no exception)."""
    if len(shape) > MAX_NDIM:
        return f"{len(shape)} dimensions (numpy arrays have at most {MAX_NDIM})"
    if math.prod(max(int(d), 1) for d in shape) * itemsize > np.iinfo(np.intp).max:
        return f"shape {list(shape)} is too large for a numpy array"
    return None
