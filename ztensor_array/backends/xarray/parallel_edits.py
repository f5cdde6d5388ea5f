"""The Dataset-level fast paths: appends and region writes whose variables are all
``chunked`` (or new, or unchanged) go through the parallel Dask writer in one commit, which
writes only the chunks they touch (layouts/chunked plans and patches them). Anything else
goes through ``ZTensorStore``, whose targets write chunked variables with the same shared
implementation (``Writer.write_chunked``) one chunk at a time."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from xarray import Dataset, Variable

from ...layouts import chunked
from ...reader import Reader
from .attrs import ATTR_DTYPES_KEY, root_attributes
from .variables import (
    encoded_variables,
    new_array,
    read_stored,
    storage_data,
    stored_dtype,
    variable_name,
)

if TYPE_CHECKING:
    from .store import ZTensorStore

# what the Dataset-level fast paths return when some variable needs the general path
INELIGIBLE = object()


# --------------------------------------------------------------------------- fast paths


def append_parallel(
    store: ZTensorStore, ds: Dataset, encoding: Mapping, append_dim: Hashable, compute: bool
):
    """Grow chunked variables along their first axis by writing only new chunks (and the
    manifest), in parallel; ``INELIGIBLE`` when some variable needs a rewrite instead."""
    from ..dask import write_arrays  # imports dask

    store.refuse_encoding_of_existing(encoding)
    names = store.variable_names()
    variables, attrs = encoded_variables(ds, encoding)
    encoded, attrs, existing = store.prepare(variables, attrs)
    arrays: dict[str, Any] = {}
    per_name: dict[str, dict] = {}
    axes: set[int] = set()
    for vn, v in encoded.items():
        name = variable_name(vn)
        if vn not in existing:
            arrays[name], per_name[name] = new_array(name, v, vn in encoding)
            continue
        full = names[name]
        obj = store.objects[full]
        if append_dim not in v.dims:
            if _same_as_stored(store.reader, full, v):
                continue  # unchanged (e.g. a coordinate along another dimension)
            return INELIGIBLE
        if obj.format != chunked.FORMAT:
            return INELIGIBLE
        axes.add(v.dims.index(append_dim))
        arrays[full] = storage_data(name, v)
    if len(axes) > 1:
        return INELIGIBLE  # one parallel write grows every object along the same axis
    values = root_attributes(attrs, store.global_attributes.get(ATTR_DTYPES_KEY))
    return write_arrays(
        arrays,
        store.path,
        mode="a",
        encoding=per_name,
        append_dim=axes.pop() if axes else 0,
        attributes=values,
        compute=compute,
    )


def region_parallel(store: ZTensorStore, ds: Dataset, region: Mapping, compute: bool):
    """Region writes into chunked variables: only the chunks the region touches are
    rewritten (in parallel; partly covered ones patched) and the manifest is replaced.
    ``INELIGIBLE`` when a variable is not chunked."""
    from ..dask import write_arrays  # imports dask

    variables, attrs = encoded_variables(ds, {})
    encoded, attrs, existing = store.prepare(variables, attrs)
    names = store.variable_names()
    batches: dict[tuple, dict[str, Any]] = {}
    for vn, v in encoded.items():
        if vn not in existing:
            return INELIGIBLE
        name = variable_name(vn)
        full = names[name]
        obj = store.objects[full]
        if obj.format != chunked.FORMAT:
            return INELIGIBLE
        box = [region.get(d, slice(None)).indices(n)[:2] for d, n in zip(v.dims, obj.shape)]
        data = storage_data(name, v)
        dt = stored_dtype(obj)
        batches.setdefault(tuple(box), {})[full] = data if data.dtype == dt else data.astype(dt)
    if len(batches) != 1 and not compute:
        return INELIGIBLE  # one Delayed commit per box would race for the append lock
    result = None
    for box, arrays in batches.items():
        result = write_arrays(
            arrays,
            store.path,
            mode="a",
            region=tuple(slice(a, b) for a, b in box),
            compute=compute,
        )
    return result


def _same_as_stored(reader: Reader, full: str, v: Variable) -> bool:
    old = read_stored(reader, full)
    new = np.asarray(v.values)
    if new.dtype == np.dtype("S1"):
        new = new.view(np.uint8)
    return old.shape == new.shape and old.dtype == new.dtype and old.tobytes() == new.tobytes()
