"""Anything ``xarray.open_dataset`` opens (netCDF, HDF5, zarr, ...) in, as a dataset .zt.

The dataset is written by our xarray backend (``to_ztensor``: one object per variable,
dimension names and CF-encoded attributes in object attributes, dataset attributes as global
attributes) into a temporary .zt, whose stored objects are then copied verbatim into the
output. That keeps the CF work in xarray and the mapping in one place (backends/xarray.py),
and lets a dataset share an output with other inputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator

from ..api import to_ztensor
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..reader import Reader
from .source import Item, Source


def open_dataset(path: str):
    """The dataset at ``path``, opened by xarray (zarr folders with the zarr engine)."""
    import xarray as xr  # optional heavy dependency (~0.5 s): only for datasets

    engine = "zarr" if os.path.isdir(path) else None
    try:
        with warnings.catch_warnings():  # zarr's "no consolidated metadata" fallback notice
            warnings.simplefilter("ignore", RuntimeWarning)
            return xr.open_dataset(path, engine=engine, chunks=None)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise FormatError(
            f"xarray cannot open it ({type(exc).__name__}: {exc})", path=path
        ) from None


class XarraySource(Source):
    """A dataset converted into a temporary .zt whose objects are then copied as stored."""

    def __init__(self, path: str, *, compress: int = 0, checksum: str | None = None) -> None:
        self.path = path
        self._tmpdir = tempfile.mkdtemp(prefix="ztensor-convert-")
        self._reader = None
        try:
            tmp = os.path.join(self._tmpdir, "dataset.zt")
            with open_dataset(path) as ds:
                try:
                    to_ztensor(ds, tmp, mode="w", compress=compress, checksum=checksum)
                except ZTensorError as exc:
                    raise UnsupportedError(exc.reason, path=path, obj=exc.obj) from None
                except (ValueError, TypeError, NotImplementedError) as exc:
                    raise UnsupportedError(f"dataset cannot be stored ({exc})", path=path) from None
            self._reader = Reader(tmp)
            self.attributes = self._reader.attributes
        except BaseException:
            self.close()
            raise

    def items(self) -> Iterator[Item]:
        r = self._reader
        for name in r.names_in_file_order():
            size = sum(c.length for c in r.manifest.objects[name].components.values())
            yield Item(name, size, self._copier(name))

    def _copier(self, name: str):
        def write(writer, out_name, level, checksum, attributes=None) -> None:
            writer.copy_from(self._reader, name, out_name)

        return write

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)
