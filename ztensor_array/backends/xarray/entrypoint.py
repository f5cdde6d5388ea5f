"""The ``ztensor`` engine: ``xr.open_dataset(path, engine="ztensor")``, auto-detection of
.zt files, and DataTrees (groups being object-name prefixes)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

import xarray as xr
from xarray.backends import AbstractDataStore, BackendEntrypoint, StoreBackendEntrypoint

from ... import sources
from ...constants import MAGICS
from .store import ZTensorStore, norm_group, read_target


def _sniff(filename_or_obj) -> bool:
    """Whether this is something the engine opens: a local .zt file (by its magic, or its
    name), a URL ending in .zt when fsspec is installed (no request is made to find out),
    zTensor bytes, or a binary file object positioned anywhere whose first bytes are a
    zTensor magic (its position is kept)."""
    try:
        if isinstance(filename_or_obj, str | os.PathLike):
            path = os.fspath(filename_or_obj)
            if isinstance(path, str) and sources.is_url(path):
                url = path.split("::", 1)[-1] if "::" in path else path
                tail = url.split("?", 1)[0].rstrip("/").lower()
                return tail.endswith(".zt") and importlib.util.find_spec("fsspec") is not None
            try:
                with open(path, "rb") as f:
                    head = f.read(8)
                if head in MAGICS:
                    return True
            except OSError:
                pass
            return os.path.splitext(path)[1].lower() == ".zt"
        if isinstance(filename_or_obj, bytes | bytearray | memoryview):
            return bytes(memoryview(filename_or_obj).cast("B")[:8]) in MAGICS
        if callable(getattr(filename_or_obj, "seek", None)) and callable(
            getattr(filename_or_obj, "read", None)
        ):
            where = filename_or_obj.tell()
            try:
                filename_or_obj.seek(0)
                return bytes(filename_or_obj.read(8)) in MAGICS
            finally:
                filename_or_obj.seek(where)
        return False
    except Exception:  # guess_can_open must never raise
        return False


def _names_of(drop_variables: str | Iterable[str] | None) -> frozenset[str]:
    if drop_variables is None:
        return frozenset()
    if isinstance(drop_variables, str):
        return frozenset((drop_variables,))
    return frozenset(str(n) for n in drop_variables)


def _decoded(store: AbstractDataStore, drop_variables, **decoders) -> xr.Dataset:
    """The store's Dataset, CF-decoded by xarray; dropped variables are never built."""
    if isinstance(store, ZTensorStore):
        store.skip = _names_of(drop_variables)
    return StoreBackendEntrypoint().open_dataset(store, drop_variables=drop_variables, **decoders)


class ZTensorBackendEntrypoint(BackendEntrypoint):
    """Open zTensor (.zt) files in xarray: lazy, mmap-backed, picklable variables."""

    description = "Open zTensor (.zt) files in xarray (lazy, mmap-backed, checksummed)"
    url = "https://github.com/zTensor/ztensor"
    supports_groups = True
    open_dataset_parameters = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
        "verify_checksums",
        "storage_options",
    )

    def guess_can_open(self, filename_or_obj) -> bool:
        return _sniff(filename_or_obj)

    def open_dataset(
        self,
        filename_or_obj,
        *,
        mask_and_scale=True,
        decode_times=True,
        concat_characters=True,
        decode_coords=True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime=None,
        decode_timedelta=None,
        group: str | None = None,
        verify_checksums: bool = False,
        storage_options: dict | None = None,
    ):
        """``verify_checksums=True`` checks each component's digest when it is read.
        ``filename_or_obj``: a local path, an fsspec URL (with ``storage_options``, as
        zarr takes them), bytes-like contents or an open binary file object."""
        if isinstance(filename_or_obj, AbstractDataStore):
            store = filename_or_obj
        else:
            path = read_target(filename_or_obj, storage_options)
            store = ZTensorStore.open(path, "r", group=group, verify=verify_checksums)
        try:
            return _decoded(
                store,
                drop_variables,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                concat_characters=concat_characters,
                decode_coords=decode_coords,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )
        except Exception:
            store.close()
            raise

    def open_groups_as_dict(
        self,
        filename_or_obj,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        verify_checksums: bool = False,
        storage_options: dict | None = None,
        **decoders,
    ) -> dict:
        """Every group at or below ``group``, by path; ``decoders`` as for open_dataset."""
        path = read_target(filename_or_obj, storage_options)
        root = ZTensorStore.open(path, "r", verify=verify_checksums)
        parent = norm_group(group)
        out = {}
        for g in root.groups():
            if parent != "/" and not (g == parent or g.startswith(parent + "/")):
                continue
            store = root if g == "/" else root.get_child_store(g)
            key = g if parent == "/" else "/" + g[len(parent) :].lstrip("/")
            out[key] = _decoded(store, drop_variables, **decoders)
        return out

    def open_datatree(self, filename_or_obj, **kwargs) -> xr.DataTree:
        groups = self.open_groups_as_dict(filename_or_obj, **kwargs)
        try:
            tree = xr.DataTree.from_dict(groups)
        except Exception:
            for ds in groups.values():
                ds.close()
            raise
        for path, ds in groups.items():
            tree[path].set_close(ds.close)  # closing the tree closes each group's file handle
        return tree
