"""``ds.ztensor.to(path, ...)``: ``to_ztensor`` as a method of Datasets, DataArrays and
DataTrees.

Registered through xarray's accessor API under one namespace named after the format, the
spelling xarray's "Extending xarray" guide recommends for packages (``ds.ztensor``), so it
never shadows a Dataset method. Importing this package registers it; ``import
ztensor_array`` does so when xarray is already imported, and xarray does when it loads its
backends (the first ``open_dataset``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable

import xarray as xr

from .write import to_ztensor_dataset


class ZTensorAccessor:
    """``obj.ztensor``: zTensor methods of an xarray object."""

    def __init__(self, obj) -> None:
        self._obj = obj

    def to(self, path: str | os.PathLike, *, name: Hashable | None = None, **kwargs):
        """Write the object to a .zt file: ``to_ztensor(obj, path, **kwargs)`` (mode,
        group, encoding, compress, checksum, chunks, append_dim, region, compute; ``name``
        renames a DataArray). Returns None once the file is written and closed, or a dask
        Delayed that writes it when ``compute=False``."""
        obj = self._obj
        if name is not None:
            if not isinstance(obj, xr.DataArray):
                raise TypeError("name= renames a DataArray; a Dataset names its variables")
            obj = obj.rename(name)
        return to_ztensor_dataset(obj, path, **kwargs)


for _register in (
    xr.register_dataset_accessor,
    xr.register_dataarray_accessor,
    xr.register_datatree_accessor,
):
    _register("ztensor")(ZTensorAccessor)
