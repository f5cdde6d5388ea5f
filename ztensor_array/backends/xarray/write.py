"""``to_ztensor`` for xarray Datasets, DataArrays and DataTrees, with ``to_zarr``'s
semantics for ``mode``, ``encoding``, ``append_dim``, ``region`` and ``compute``.

A new file goes through the parallel Dask writer (or straight through the core Writer for
in-memory raw data); appends and regions of chunked variables take the parallel fast paths
of parallel_edits.py; everything else goes through ``ZTensorStore``, whose targets rewrite
only what they must. A failed write never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray import conventions

from ...errors import ArgumentTypeError, InvalidArgumentError
from ...writer import Writer
from . import parallel_edits
from .attrs import GROUPS_KEY, encode_attrs, root_attributes, with_dtypes
from .internals import DATAARRAY_VARIABLE
from .store import ZTensorStore, join_group, local_path, norm_group
from .targets import BlockWrites
from .variables import check_names, encoded_variables, is_dask, new_array, variable_name


def to_ztensor_dataset(
    obj,
    path: str | os.PathLike,
    *,
    mode: str | None = None,
    encoding: Mapping | None = None,
    compute: bool = True,
    append_dim: Hashable | None = None,
    region=None,
    group: str | None = None,
    compress: bool | int | None = None,
    checksum: str | None = None,
    chunks=None,
    **kwargs,
):
    """Write an xarray Dataset or DataArray (or a DataTree) to a .zt file, with to_zarr's
    semantics for ``mode``, ``encoding``, ``append_dim``, ``region`` and ``compute``.

    mode: "w-" (default; fail if the file exists), "w" (replace), "a" (add or overwrite
    variables, append along ``append_dim``), "a-", "r+" (existing variables only).
    ``compress``/``checksum``/``chunks`` are defaults for every variable's encoding.
    Returns None once the file is written and closed; ``compute=False`` returns a dask
    Delayed that writes and finalizes the file.
    """
    if kwargs:
        raise ArgumentTypeError(f"to_ztensor got unexpected keyword arguments {sorted(kwargs)}")
    if isinstance(obj, xr.DataTree):
        if append_dim is not None or region is not None:
            raise InvalidArgumentError(
                "a DataTree is written whole: append_dim and region take one node's Dataset "
                "(to_ztensor(tree[path].to_dataset(), ..., group=path))"
            )
        groups = {node.path: node.to_dataset(inherit=False) for node in obj.subtree}
        return to_ztensor_groups(
            groups,
            path,
            mode=mode or "w-",
            encoding=encoding,
            compute=compute,
            group=group,
            compress=compress,
            checksum=checksum,
            chunks=chunks,
        )
    if isinstance(obj, xr.DataArray):
        # an unnamed DataArray under xarray's own name for it, as DataArray.to_netcdf does
        obj = obj.to_dataset(name=DATAARRAY_VARIABLE) if obj.name is None else obj.to_dataset()
    if not isinstance(obj, xr.Dataset):
        raise ArgumentTypeError(
            f"expected an xarray Dataset or DataArray, got {type(obj).__name__}"
        )
    path = local_path(path)
    mode = _choose_mode(mode, append_dim, region)
    done = _write(
        obj, path, mode, encoding, append_dim, region, group, compress, checksum, chunks, compute
    )
    return done if not compute else None


def _choose_mode(mode, append_dim, region) -> str:
    if mode is None:
        if append_dim is not None:
            return "a"
        return "r+" if region is not None else "w-"
    if mode == "w-" and append_dim is not None:
        return "a"  # "w-" is to_ztensor's default: appending implies mode "a"
    if mode == "w-" and region is not None:
        return "r+"
    if append_dim is not None and mode not in ("a", "a-"):
        raise InvalidArgumentError(
            f"append_dim was set along with mode={mode!r}; set mode='a' or 'a-' or leave mode unset"
        )
    if region is not None and mode not in ("a", "a-", "r+"):
        raise InvalidArgumentError(f"region requires mode 'r+', 'a' or 'a-', got mode={mode!r}")
    return mode


class _Opaque:
    """Hides a Dataset from dask.delayed so its dask arrays are written block by block
    inside the task instead of being materialized as its inputs."""

    def __init__(self, payload) -> None:
        self.payload = payload


def _write_task(box: _Opaque) -> None:
    import dask  # the task runs under dask already

    with dask.config.set(scheduler="threads"):
        _write(*box.payload)


def _write(
    ds, path, mode, encoding, append_dim, region, group, compress, checksum, chunks, compute=True
):
    check_names(ds)
    ds, encoding = _with_defaults(ds, encoding, compress, checksum, chunks)
    if mode in ("w", "w-") and group is None and region is None:
        return _write_new(ds, path, mode, encoding, compute)
    if region is not None and group is None and os.path.exists(path):
        done = _region_fast(ds, path, mode, region, compute)
        if done is not parallel_edits.INELIGIBLE:
            return done
    if append_dim is not None and group is None and region is None and os.path.exists(path):
        done = _append_fast(ds, path, mode, encoding, append_dim, compute)
        if done is not parallel_edits.INELIGIBLE:
            return done
    if not compute:
        import dask  # compute=False asks for a dask Delayed

        return dask.delayed(_write_task, pure=False)(
            _Opaque((ds, path, mode, encoding, append_dim, region, group, None, None, None))
        )
    store = ZTensorStore(path, mode, group=group, append_dim=append_dim)
    try:
        ds, store.write_region = _prepare_region(store, ds, region)
        _store_all(store, {"/": (ds, encoding)})
    except BaseException:
        store.abort()
        raise


def _store_all(store: ZTensorStore, placed: Mapping[str, tuple]) -> None:
    """Datasets by group (relative to ``store``'s) written through the store and its child
    stores, which share one Writer: one commit, on ``close``."""
    writes = BlockWrites()
    for at, (ds, encoding) in placed.items():
        node = store if at == "/" else store.get_child_store(at)
        node.refuse_encoding_of_existing(encoding)
        variables, attrs = encoded_variables(ds, encoding)
        node.store(variables, attrs, set(encoding), writes)
    writes.run()
    store.close()


def _with_defaults(ds, encoding, compress, checksum, chunks):
    """(ds, encoding) with to_ztensor's ``compress``/``checksum``/``chunks`` as defaults of
    every variable's encoding: a variable's own zTensor keys win over them, and they win
    over other backends' keys (zlib, compressors, chunksizes)."""
    encoding = dict(encoding or {})
    defaults = {
        k: v
        for k, v in (("compress", compress), ("checksum", checksum), ("chunks", chunks))
        if v is not None
    }
    if not defaults:
        return ds, encoding
    ds = ds.copy(deep=False)
    for v in ds.variables.values():
        v.encoding = {**defaults, **v.encoding}
    encoding = {  # an explicit encoding replaces a variable's: keep the defaults in it
        k: ({**defaults, **e} if isinstance(e, Mapping) else e) for k, e in encoding.items()
    }
    return ds, encoding


def _region_fast(ds, path: str, mode: str, region, compute: bool):
    store = ZTensorStore(path, mode)
    try:
        ds, region = _prepare_region(store, ds, region)
        store.write_region = region
        return parallel_edits.region_parallel(store, ds, region, compute)
    finally:
        store.close()


def _append_fast(ds, path: str, mode: str, encoding, append_dim, compute: bool):
    store = ZTensorStore(path, mode, append_dim=append_dim)
    try:
        return parallel_edits.append_parallel(store, ds, encoding, append_dim, compute)
    finally:
        store.close()


def _prepare_region(store: ZTensorStore, ds, region):
    """(the Dataset without indexes, the region as slices): "auto" entries found from the
    stored coordinates, everything checked as ``to_zarr`` checks it."""
    if region is None:
        return ds, None
    if region == "auto":
        region = dict.fromkeys(ds.dims, "auto")
    if not isinstance(region, Mapping):
        raise ArgumentTypeError(f"``region`` must be a dict, got {type(region).__name__}")
    region = dict(region)
    for dim, val in list(region.items()):
        if val != "auto":
            continue
        if dim not in ds.variables:
            region[dim] = slice(0, ds.sizes[dim])
            continue
        names = store.variable_names()
        if dim not in names:
            raise KeyError(f"cannot auto-detect the region of {dim!r}: not in the file")
        stored = conventions.decode_cf_variable(
            dim, store.open_store_variable(dim, names[dim]).compute()
        )
        idxs = pd.Index(stored.data).get_indexer(ds[dim].data)
        if (idxs == -1).any():
            raise KeyError(f"not all values of coordinate {dim!r} were found in the file")
        if (np.diff(idxs) != 1).any():
            raise InvalidArgumentError(f"the auto-detected region of {dim!r} is not contiguous")
        region[dim] = slice(int(idxs[0]), int(idxs[-1]) + 1)
    for k, v in region.items():
        if k not in ds.dims:
            raise InvalidArgumentError(
                f"all keys in ``region`` are not in Dataset dimensions, got {list(region)} "
                f"and {list(ds.dims)}"
            )
        if not isinstance(v, slice):
            raise ArgumentTypeError(f"all values in ``region`` must be slice objects, got {region}")
        if v.step not in (1, None):
            raise InvalidArgumentError(
                f"step on all slices in ``region`` must be 1 or None: {region}"
            )
    bad = [k for k, v in ds.variables.items() if not set(region).intersection(v.dims)]
    if region and bad:
        raise InvalidArgumentError(
            "when setting `region`, every variable must share a dimension with the region; "
            f"drop these first: .drop_vars({bad!r})"
        )
    return ds.drop_vars(ds.indexes), region


def _write_new(ds, path: str, mode: str, encoding: Mapping, compute: bool):
    """A new file: every variable goes through the parallel Dask writer (raw regions filled
    block by block, compressed or chunked variables as ``chunked`` objects)."""
    store = ZTensorStore(path, mode)
    variables, attrs = encoded_variables(ds, encoding)
    encoded, attrs = store.encode(variables, attrs)
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    for vn, v in encoded.items():
        name = variable_name(vn)
        arrays[name], per_name[name] = new_array(name, v, vn in encoding)
    return _write_objects(arrays, per_name, path, mode, root_attributes(attrs), compute)


def _write_objects(arrays, per_name, path: str, mode: str, attributes, compute: bool):
    """Write new objects: in-memory raw tensors straight through the core Writer (one
    pwrite each, nothing to schedule); anything lazy, compressed or chunked through the
    parallel Dask writer."""
    from ..dask import write_arrays  # imports dask

    direct = compute and all(
        not is_dask(a) and e["layout"] == "dense" and not e["compress"]
        for a, e in zip(arrays.values(), per_name.values())
    )
    if not direct:
        return write_arrays(
            arrays, path, mode=mode, encoding=per_name, attributes=attributes, compute=compute
        )
    with Writer(path, "x" if mode in ("w-", "x") else "w") as w:
        w.attributes = dict(attributes)
        for name, data in arrays.items():
            enc = per_name[name]
            w.add_tensor(name, data, checksum=enc["checksum"], attributes=enc["attributes"])
    return None


def to_ztensor_groups(
    groups: Mapping[str, xr.Dataset],
    path: str | os.PathLike,
    *,
    mode: str = "w-",
    encoding: Mapping | None = None,
    compute: bool = True,
    group: str | None = None,
    compress: bool | int | None = None,
    checksum: str | None = None,
    chunks=None,
):
    """Write Datasets by group path ("/", "/a", "/a/b", as ``xr.open_groups`` gives them
    and as a DataTree's nodes are) into one file, under ``group`` when given.

    Modes "w"/"w-": a new file in one parallel commit. Modes "a"/"a-"/"r+": each group is
    written into the existing file as ``to_ztensor(ds, mode=..., group=...)`` would, all in
    one commit. ``encoding``: per group path, each a variable -> encoding mapping. Group
    attributes (and empty groups) live in the reserved global attribute."""
    path = local_path(path)
    encoding = dict(encoding or {})
    prefix = norm_group(group)
    unknown = set(encoding) - {norm_group(g) for g in groups} - set(groups)
    if unknown:
        raise InvalidArgumentError(f"encoding names groups that are not written: {sorted(unknown)}")
    placed = {}
    for at, ds in groups.items():
        if not isinstance(ds, xr.Dataset):
            raise ArgumentTypeError(f"group {at!r} is a {type(ds).__name__}, not a Dataset")
        check_names(ds)
        explicit = encoding.get(at) or encoding.get(norm_group(at)) or {}
        rel = norm_group(at).strip("/")
        placed[join_group(prefix, rel) if rel else prefix] = _with_defaults(
            ds, explicit, compress, checksum, chunks
        )
    if mode in ("w", "w-"):
        done = _write_groups_new(placed, path, mode, compute)
        return done if not compute else None
    if mode not in ("a", "a-", "r+"):
        raise InvalidArgumentError(f"mode must be one of 'w', 'w-', 'a', 'a-', 'r+', got {mode!r}")
    if not compute:
        import dask  # compute=False asks for a dask Delayed

        return dask.delayed(_write_groups_task, pure=False)(_Opaque((placed, path, mode)))
    _write_groups_into(placed, path, mode)
    return None


def _write_groups_task(box: _Opaque) -> None:
    import dask  # the task runs under dask already

    with dask.config.set(scheduler="threads"):
        _write_groups_into(*box.payload)


def _write_groups_into(placed: dict, path: str, mode: str) -> None:
    """Groups written through one store (one Writer, one commit) of an existing file."""
    store = ZTensorStore(path, mode)
    try:
        _store_all(store, placed)
    except BaseException:
        store.abort()
        raise


def _write_groups_new(placed: dict, path: str, mode: str, compute: bool):
    """A new file: every group's variables become objects named by their group path,
    written in one parallel commit."""
    root = ZTensorStore(path, mode)
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    values: dict[str, Any] = {}
    groups: dict[str, dict] = {}
    for at, (ds, explicit) in placed.items():
        variables, attrs = encoded_variables(ds, explicit)
        encoded, attrs = root.encode(variables, attrs)
        prefix = "" if at == "/" else at.strip("/") + "/"
        for vn, v in encoded.items():
            name = variable_name(vn)
            arrays[prefix + name], per_name[prefix + name] = new_array(name, v, vn in explicit)
        a_values, a_types = encode_attrs(attrs, at)
        if at == "/":
            values.update(with_dtypes(a_values, a_types))
        else:
            groups[at] = {"attrs": a_values, "dtypes": a_types}
    for at in list(groups):  # parents of a group placed under ``group`` exist too
        parent = at.rsplit("/", 1)[0] or "/"
        while parent != "/" and parent not in groups:
            groups[parent] = {"attrs": {}, "dtypes": {}}
            parent = parent.rsplit("/", 1)[0] or "/"
    if groups:
        values[GROUPS_KEY] = groups
    return _write_objects(arrays, per_name, path, mode, values, compute)
