"""Integrations: xarray (engine "ztensor", ZTensorStore) and dask (from_ztensor/to_ztensor).

Submodules import xarray/dask, so names here load lazily.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "from_ztensor": ("dask", "from_ztensor"),
    "write_arrays": ("dask", "write_arrays"),
    "ZTensorStore": ("xarray", "ZTensorStore"),
    "ZTensorBackendEntrypoint": ("xarray", "ZTensorBackendEntrypoint"),
    "ZTensorBackendArray": ("xarray", "ZTensorBackendArray"),
    "to_ztensor_dataset": ("xarray", "to_ztensor_dataset"),
}


__all__ = sorted(_LAZY)


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{target[0]}", __name__), target[1])
    globals()[name] = value
    return value
