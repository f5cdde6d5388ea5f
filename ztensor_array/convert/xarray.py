"""Anything ``xarray.open_dataset`` opens (netCDF, HDF5, zarr, ...) in, as a dataset .zt.

One file is read undecoded (``decode_cf=False``, but for text): every variable is written
with the values, dtype and attributes its source stores, so the .zt decodes through xarray exactly
as the source does (packing, fill values, ``_Unsigned``, odd attributes included) and
nothing is re-encoded that could be refused or changed. Every group of the source becomes
a group of the .zt (``open_groups``). Several files can be combined into one dataset
(``combine="by_coords"`` or ``"nested"``: ``open_mfdataset``'s semantics); attributes that
differ between them are left out and named in the report's notes.

The source's compression and chunking (zlib/complevel, zstd, numcodecs compressors,
chunksizes) carry over (backends/xarray/foreign.py) unless a level is given. The dataset is
written by our xarray backend into a temporary .zt, whose stored objects are then copied
verbatim into the output, so a dataset can share an output with other inputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence

from ..api import to_ztensor
from ..errors import FormatError, InvalidArgumentError, UnsupportedError, ZTensorError
from ..reader import Reader
from .source import Item, Source

COMBINE = ("by_coords", "nested")
# Everything but character arrays left undecoded (spelled out: open_groups ignores
# decode_cf). Text is decoded, so that xarray's character coder splits it again into the
# same character dimension when it is written; it would add one more to a raw S1 array.
UNDECODED = {
    "mask_and_scale": False,
    "decode_times": False,
    "decode_timedelta": False,
    "concat_characters": True,
    "decode_coords": False,
}
# Errors xarray and its engines raise for a file they cannot open.
_OPEN_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError, IndexError)


def _engine(path: str) -> str | None:
    return "zarr" if os.path.isdir(path) else None


def open_dataset(path: str, **kwargs):
    """The dataset at ``path``, opened by xarray (zarr folders with the zarr engine)."""
    import xarray as xr  # optional heavy dependency (~0.5 s): only for datasets

    try:
        with warnings.catch_warnings():  # zarr's "no consolidated metadata" fallback notice
            warnings.simplefilter("ignore", RuntimeWarning)
            return xr.open_dataset(path, engine=_engine(path), chunks=None, **kwargs)
    except _OPEN_ERRORS as exc:
        raise FormatError(
            f"xarray cannot open it ({type(exc).__name__}: {exc})", path=path
        ) from None


def open_groups(path: str) -> dict:
    """Every group of the source by path ("/" first), undecoded; engines without groups
    (netCDF3 through scipy) give the root alone."""
    import xarray as xr  # optional heavy dependency: only for datasets

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return dict(xr.open_groups(path, engine=_engine(path), **UNDECODED))
    except (NotImplementedError, *_OPEN_ERRORS):
        return {"/": open_dataset(path, **UNDECODED)}


def open_combined(paths: Sequence[str], combine: str, concat_dim: str | None = None):
    """(one dataset of several files, notes naming the attributes left out because they
    differ between the files), with ``open_mfdataset``'s semantics."""
    import xarray as xr  # optional heavy dependency: only for datasets

    if combine not in COMBINE:
        raise InvalidArgumentError(f"combine must be one of {COMBINE}, got {combine!r}")
    if combine == "nested" and concat_dim is None:
        raise InvalidArgumentError("combine='nested' needs the dimension to concatenate along")
    parts = [open_dataset(p) for p in paths]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            combined = xr.open_mfdataset(
                list(paths),
                combine=combine,
                concat_dim=concat_dim if combine == "nested" else None,
                combine_attrs="drop_conflicts",
                engine=_engine(paths[0]),
            )
    except _OPEN_ERRORS as exc:
        for ds in parts:
            ds.close()
        raise FormatError(
            f"xarray cannot combine the inputs {combine} ({type(exc).__name__}: {exc})",
            path=paths[0],
        ) from None
    notes = _conflicts(parts, combined)
    for ds in parts:
        ds.close()
    return combined, notes


def _conflicts(parts, combined) -> list[str]:
    """Attributes that xarray's ``drop_conflicts`` left out: present in an input, absent
    from the combined dataset (so their values differ between inputs)."""
    notes = []
    dropped = sorted({k for ds in parts for k in ds.attrs} - set(combined.attrs))
    if dropped:
        notes.append(f"global attributes that differ between the inputs, left out: {dropped}")
    for name, var in combined.variables.items():
        seen = {k for ds in parts if name in ds.variables for k in ds[name].attrs}
        lost = sorted(seen - set(var.attrs))
        if lost:
            notes.append(f"attributes of {name!r} that differ between the inputs, left out: {lost}")
    return notes


class XarraySource(Source):
    """A dataset converted into a temporary .zt whose objects are then copied as stored.

    ``path``: one file (or zarr folder), or a list of files with ``combine``.
    ``compress``: None keeps the source's compression; a level (0: none) replaces it."""

    def __init__(
        self,
        path: str | Sequence[str],
        *,
        compress: int | None = None,
        checksum: str | None = None,
        combine: str | None = None,
        concat_dim: str | None = None,
    ) -> None:
        self.path = path if isinstance(path, str) else os.fspath(path[0])
        self.notes: list[str] = []
        self._tmpdir = tempfile.mkdtemp(prefix="ztensor-convert-")
        self._reader = None
        try:
            tmp = os.path.join(self._tmpdir, "dataset.zt")
            if combine is not None:
                paths = [path] if isinstance(path, str) else list(path)
                ds, self.notes = open_combined(paths, combine, concat_dim)
                with ds:
                    self._write(ds, tmp, compress, checksum)
            else:
                groups = open_groups(self.path)
                try:
                    self._write(groups, tmp, compress, checksum)
                finally:
                    for ds in groups.values():
                        ds.close()
            self._reader = Reader(tmp)
            self.attributes = self._reader.attributes
        except BaseException:
            self.close()
            raise

    def _write(self, data, tmp: str, compress: int | None, checksum: str | None) -> None:
        from ..backends.xarray import to_ztensor_groups  # imports xarray

        try:
            if isinstance(data, dict):
                to_ztensor_groups(data, tmp, mode="w", compress=compress, checksum=checksum)
            else:
                to_ztensor(data, tmp, mode="w", compress=compress, checksum=checksum)
        except ZTensorError as exc:
            raise UnsupportedError(exc.reason, path=self.path, obj=exc.obj) from None
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise UnsupportedError(f"dataset cannot be stored ({exc})", path=self.path) from None

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
