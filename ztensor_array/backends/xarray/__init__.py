"""xarray backend: ``xr.open_dataset(path, engine="ztensor")`` and ``to_ztensor`` for Datasets.

One zTensor object per variable (coordinates included). xarray's own CF machinery does all
the encoding work (times, fill values, scale/offset, strings as CF character arrays); this
package only maps encoded variables onto objects and back. See SPEC.md, "xarray mapping".

    attrs.py          attributes and dimension names as object/global attributes
    variables.py      one variable <-> one object: names, storable data, encodings
    array.py          lazy ZTensorBackendArray; per-process readers (CachingFileManager)
    parallel_edits.py appends and region writes of chunked variables through the Dask writer
    targets.py        where a variable's data lands: new object, append, region
    store.py          ZTensorStore, xarray's writable data store
    foreign.py        other backends' encodings (zlib, compressors, chunksizes) mapped or refused
    write.py          to_ztensor_dataset: modes, encodings, append_dim, region, DataTree;
                      to_ztensor_groups: Datasets by group path into one file
    accessor.py       the ``.ztensor`` accessor of Datasets, DataArrays and DataTrees
    entrypoint.py     the "ztensor" engine (open_dataset, open_datatree, guess_can_open)
    internals.py      the xarray names used that xarray's API reference does not list
"""

from __future__ import annotations

from . import accessor  # noqa: F401 - registers ds.ztensor
from .array import ZTensorBackendArray
from .entrypoint import ZTensorBackendEntrypoint
from .store import ZTensorStore
from .write import to_ztensor_dataset, to_ztensor_groups

__all__ = [
    "ZTensorBackendArray",
    "ZTensorBackendEntrypoint",
    "ZTensorStore",
    "to_ztensor_dataset",
    "to_ztensor_groups",
]
