"""ztensor_array: the zTensor (.zt) tensor file format for NumPy, PyTorch, xarray and Dask.

Importing this package loads only numpy, cbor2 and the reading side; the writer, torch, scipy,
dask, xarray, numcodecs and ml_dtypes are imported when first needed. When xarray is
already imported, the xarray backend is too, which registers the ``.ztensor`` accessor.
"""

from __future__ import annotations

import importlib
import sys

from .errors import (
    AppendInProgressError,
    ChecksumError,
    DecodeError,
    FileBusyError,
    FileReplacedError,
    FormatError,
    InvalidIndexError,
    TensorNotFoundError,
    TornFileError,
    UnsupportedError,
    ZTensorError,
)
from .reader import Reader, TensorMetadata

__version__ = "0.1.0"

__all__ = [
    "AppendInProgressError",
    "ChecksumError",
    "DecodeError",
    "FileBusyError",
    "FileReplacedError",
    "FormatError",
    "InvalidIndexError",
    "Reader",
    "TensorMetadata",
    "TensorNotFoundError",
    "TornFileError",
    "UnsupportedError",
    "Writer",
    "ZTensorError",
    "from_ztensor",
    "load_file",
    "safe_open",
    "save_file",
    "to_ztensor",
]

_LAZY = {
    "Writer": ("writer", "Writer"),
    "save_file": ("numpy", "save_file"),
    "load_file": ("numpy", "load_file"),
    "save": ("numpy", "save"),
    "load": ("numpy", "load"),
    "safe_open": ("safe", "safe_open"),
    "from_ztensor": ("backends.dask", "from_ztensor"),
    "to_ztensor": ("api", "to_ztensor"),
    "repair": ("ops.repair", "repair"),
    "compact": ("ops.compact", "compact"),
    "backends": ("backends", None),
}


if "xarray" in sys.modules:  # registers the ``.ztensor`` accessor on xarray objects
    importlib.import_module(".backends.xarray", __name__)


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ztensor_array' has no attribute {name!r}")
    module = importlib.import_module(f".{target[0]}", __name__)
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value
    return value
