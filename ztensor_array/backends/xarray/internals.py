"""The xarray names this backend needs that xarray's API reference does not list.

Everything else comes from ``xarray``, ``xarray.backends`` (its exported names),
``xarray.conventions``' decoders, or the backend guide's ``xarray.core.indexing`` contract.
Each name here has no public equivalent; tests/test_xarray_internals.py imports every one
of them from xarray, so a release that moves or drops one fails that test by name instead
of breaking a write.
"""

from __future__ import annotations

# The name under which an unnamed DataArray is stored and that ``open_dataarray`` turns
# back into ``name=None``; ``DataArray.to_netcdf``/``to_zarr`` use the same constant.
from xarray.backends.api import DATAARRAY_VARIABLE

# From the same module: the stored name of a variable whose key is None, which
# ``AbstractDataStore.load`` turns back into None (``_encode_variable_name``'s constant);
# and what ``ZTensorStore`` derives from: xarray's writable-store base class with its
# encode / store / set_variables protocol, which ``to_netcdf``-style writers and xarray's
# own backend test battery drive. xarray.backends exports only ``AbstractDataStore``, which
# cannot write; every writing backend (netCDF4, h5netcdf, scipy, zarr) derives from it.
from xarray.backends.common import NONE_VAR_NAME, WritableCFDataStore

# CF character arrays: zTensor has no string dtype, so text is stored the way netCDF3
# stores it (fixed-width bytes split into an S1 character axis). xarray offers these
# coders only to its backends (netCDF4 and h5netcdf call them the same way).
from xarray.coding.strings import CharacterArrayCoder, EncodedStringCoder

# Non-index coordinates of a Dataset as the CF "coordinates" attribute of its variables:
# the first step of every xarray writer (``dump_to_store``), with no public wrapper.
from xarray.conventions import encode_dataset_coordinates

__all__ = [
    "DATAARRAY_VARIABLE",
    "NONE_VAR_NAME",
    "CharacterArrayCoder",
    "EncodedStringCoder",
    "WritableCFDataStore",
    "encode_dataset_coordinates",
]
