"""``to_ztensor``: one entry point that writes numpy, Dask and xarray objects to a .zt file.

Arrays and mappings of arrays go to the Dask writer (backends.dask.write_arrays); xarray
Datasets and DataArrays go to the xarray backend. Neither dask nor xarray is imported
before it is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import sources
from .errors import ArgumentTypeError, UnsupportedError


def _is_xarray(obj: Any) -> bool:
    module = type(obj).__module__.split(".", 1)[0]
    return module == "xarray" and type(obj).__name__ in ("Dataset", "DataArray", "DataTree")


def to_ztensor(
    obj: Any,
    path: str | os.PathLike,
    name: str | None = None,
    *,
    mode: str = "w-",
    compress: bool | int | None = None,
    chunks: Any = None,
    checksum: str | None = None,
    encoding: Mapping[str, Any] | None = None,
    append_dim: Any = None,
    region: Any = None,
    group: str | None = None,
    compute: bool = True,
    storage_options: Mapping[str, Any] | None = None,
):
    """Write ``obj`` to ``path``. Returns None once the file is written, finalized and
    closed, or a dask Delayed that writes it when ``compute=False`` (``to_zarr`` returns its
    store; a .zt has nothing to hand back that its path does not name).

    obj: a numpy or dask array (``name`` required), a mapping name -> array, or an xarray
    Dataset/DataArray. mode: "w-" (fail if the file exists), "w" (replace), "a" (add
    objects; with ``append_dim=k`` grow chunked ones along axis k). compress: False, True
    (zstd level 3) or a level; compressed arrays are stored in the ``chunked`` layout, raw
    ones as ``dense`` unless ``chunks`` is given. checksum: "crc32c", "sha256" or "none".
    Left as None, both mean none for new objects and keep what an object stores when it
    grows (``append_dim``) or is overwritten in part (``region``).
    encoding: for arrays, ``{"layout", "fill_value", "attributes", "compress", "chunks",
    "checksum"}`` (per name for a mapping); for xarray, per variable as in ``to_zarr``.
    region: a tuple of step-1 slices of an existing chunked object (mode "a") that ``obj``
    overwrites; only the chunks it touches are rewritten.
    group: xarray objects only: the group the Dataset (or the DataTree's root) is written
    as, e.g. "/run1"; with mode "a" it adds to or replaces that group of an existing file.
    path may be an fsspec URL (with ``storage_options``): the file is written to a local
    temporary file, then uploaded whole, so the object appears only complete. Mode "a",
    ``region`` and ``append_dim`` modify a file in place and need a local path.
    """
    dest = sources.remote_destination(path, dict(storage_options or {}))
    if dest is not None:
        if mode not in ("w", "w-") or region is not None or append_dim is not None:
            raise UnsupportedError(
                f"mode {mode!r} (or region=/append_dim=) needs a local file: a remote object "
                "cannot be modified in place (write a local copy, then upload it whole)",
                path=dest.name,
            )
        if not compute:
            raise UnsupportedError(
                "compute=False writes need a local path: the upload of a URL follows the "
                "write at once",
                path=dest.name,
            )
        upload = sources.Upload(dest, exclusive=mode == "w-")
        try:
            to_ztensor(
                obj, upload.local, name, mode="w", compress=compress, chunks=chunks,
                checksum=checksum, encoding=encoding, group=group,
            )  # fmt: skip
        except BaseException:
            upload.discard()
            raise
        upload.commit()
        return None
    if _is_xarray(obj):
        from .backends.xarray import to_ztensor_dataset

        if name is not None and type(obj).__name__ == "DataArray":
            obj = obj.rename(name)
        return to_ztensor_dataset(
            obj,
            path,
            mode=mode,
            encoding=encoding,
            compute=compute,
            append_dim=append_dim,
            region=region,
            group=group,
            compress=compress,
            checksum=checksum,
            chunks=chunks,
        )
    if group is not None:
        raise TypeError("group= is for xarray objects; name arrays 'group/name' instead")
    from .backends.dask import write_arrays

    if isinstance(obj, Mapping):
        if name is not None:
            raise ArgumentTypeError(
                "name= is for a single array; a mapping names its own arrays", path=path
            )
        arrays = dict(obj)
        per_name = encoding
    else:
        if name is None:
            raise ArgumentTypeError("to_ztensor of a single array needs a name=", path=path)
        arrays = {name: obj}
        per_name = {name: encoding} if encoding else None
    done = write_arrays(
        arrays,
        path,
        mode=mode,
        compress=compress,
        chunks=chunks,
        checksum=checksum,
        encoding=per_name,
        append_dim=append_dim,
        region=region,
        compute=compute,
    )
    return done if not compute else None
