"""xarray's own generic backend test battery, run against the ztensor engine.

The classes come from the installed xarray (``xarray.tests.test_backends``); ``save`` is
``to_ztensor`` and ``open`` is ``xr.open_dataset(engine="ztensor")``. Overrides below only
skip tests whose premise does not apply to zTensor, each with its reason.
"""

from __future__ import annotations

import contextlib
import functools

import pytest

xr = pytest.importorskip("xarray")
tb = pytest.importorskip("xarray.tests.test_backends")

import xarray.tests.conftest as _xarray_fixtures  # noqa: E402

# the fixtures the installed xarray's battery uses (the set changes between releases)
for _name in ("time_unit", "use_dask"):
    if hasattr(_xarray_fixtures, _name):
        globals()[_name] = getattr(_xarray_fixtures, _name)

from ztensor_array.backends.xarray import ZTensorStore, to_ztensor_dataset  # noqa: E402


class TestZTensorBattery(tb.CFEncodedBase):
    engine = "ztensor"
    file_format = None

    @contextlib.contextmanager
    def create_store(self):
        with tb.create_tmp_file(suffix=".zt") as path:
            store = ZTensorStore.open(path, "w")
            try:
                yield store
            finally:
                store.close()

    def save(self, dataset, path, **kwargs):
        kwargs.setdefault("mode", "w")
        return to_ztensor_dataset(dataset, path, **kwargs)

    @contextlib.contextmanager
    def open(self, path, **kwargs):
        with xr.open_dataset(path, engine="ztensor", **kwargs) as ds:
            yield ds

    @pytest.mark.skip(
        reason="zTensor has no unlimited dimensions: any dimension can grow with append_dim "
        "(as in zarr), so unlimited_dims is neither stored nor reported"
    )
    def test_encoding_unlimited_dims(self) -> None:
        pass

    _mask_and_scale = tb.CFEncodedBase.test_roundtrip_mask_and_scale

    @functools.wraps(_mask_and_scale)  # keeps the installed xarray's parametrization
    def test_roundtrip_mask_and_scale(self, *args, **kwargs) -> None:
        # xarray skips uint8 cases unless the format is called "NETCDF4"; zTensor stores u8
        # natively, so run them all under that name
        self.file_format = "NETCDF4"
        try:
            self._mask_and_scale(*args, **kwargs)
        finally:
            self.file_format = None
