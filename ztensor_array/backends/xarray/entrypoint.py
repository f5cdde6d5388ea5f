"""The ``ztensor`` engine: ``xr.open_dataset(path, engine="ztensor")``, auto-detection of
.zt files, and DataTrees (groups being object-name prefixes)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import xarray as xr
from xarray.backends import AbstractDataStore, BackendEntrypoint, StoreBackendEntrypoint

from ...constants import MAGICS
from .store import ZTensorStore, local_path, norm_group


def _sniff(filename_or_obj) -> bool:
    try:
        if isinstance(filename_or_obj, str | os.PathLike):
            path = os.fspath(filename_or_obj)
            try:
                with open(path, "rb") as f:
                    head = f.read(8)
                if head in MAGICS:
                    return True
            except OSError:
                pass
            return os.path.splitext(path)[1].lower() == ".zt"
        if isinstance(filename_or_obj, bytes | memoryview):
            return bytes(filename_or_obj[:8]) in MAGICS
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
    ):
        """``verify_checksums=True`` checks each component's digest when it is read."""
        if isinstance(filename_or_obj, AbstractDataStore):
            store = filename_or_obj
        else:
            path = local_path(filename_or_obj)
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
        **decoders,
    ) -> dict:
        """Every group at or below ``group``, by path; ``decoders`` as for open_dataset."""
        root = ZTensorStore.open(local_path(filename_or_obj), "r", verify=verify_checksums)
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
