"""One xarray variable <-> one zTensor object: names, storable data, and encodings.

What every write path needs to turn an (encoded) variable into an object, and what the
store reports back about a stored object, so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from xarray import Dataset, Variable

from ... import dtypes, layouts
from ...codecs.policy import normalize_checksum, normalize_compress
from ...errors import ArgumentTypeError, InvalidArgumentError, ZTensorError
from ...layouts.chunked import chunk_grid
from ...reader import Reader
from .attrs import object_attributes
from .internals import NONE_VAR_NAME, encode_dataset_coordinates

# Peak memory of a block-wise rewrite or append is a few blocks of this size, whatever the
# variable's size; a dask source is computed in parts of about this size.
BLOCK_BYTES = 8 << 20

# encoding keys the writer understands; others that xarray or other backends leave behind
# are ignored unless the user passed them explicitly
VALID_ENCODING = frozenset({"compress", "level", "chunks", "checksum", "preferred_chunks"})
_IGNORED_ENCODING = frozenset(
    {
        "source",
        "original_shape",
        "dtype",
        "coordinates",
        "zlib",
        "complevel",
        "compression",
        "compression_opts",
        "shuffle",
        "fletcher32",
        "contiguous",
        "chunksizes",
        "compressor",
        "compressors",
        "filters",
        "serializer",
        "endian",
        "least_significant_digit",
        "write_empty_chunks",
        "shards",
        "fill_value",
        "szip_coding",
        "szip_pixels_per_block",
        "quantize_mode",
        "significant_digits",
        "blosc_shuffle",
        "_FillValue",
        "missing_value",
    }
)


# --------------------------------------------------------------------------- names


def variable_name(key) -> str:
    """The object name of a variable key (None under xarray's name for it, which reading
    turns back into None)."""
    return NONE_VAR_NAME if key is None else key


def check_names(ds: Dataset) -> None:
    """Variable names must be non-empty text (or None, an unnamed DataArray's)."""
    for key in ds.variables:
        if isinstance(key, str):
            if not key:
                raise InvalidArgumentError(
                    f"Invalid name {key!r} for DataArray or Dataset key: string must be "
                    "length 1 or greater for serialization to zTensor files"
                )
        elif key is not None:
            raise ArgumentTypeError(
                f"Invalid name {key!r} for DataArray or Dataset key: must be either a "
                "string or None for serialization to zTensor files"
            )


def check_object_name(name: str) -> None:
    if "/" in name:
        raise InvalidArgumentError(
            f"variable name {name!r} contains '/', which zTensor uses for groups"
        )


def encoded_variables(ds: Dataset, encoding: Mapping) -> tuple[dict, dict]:
    """(variables, attrs) of a Dataset with coordinates encoded as CF attributes and the
    explicit ``encoding`` set on its variables (what every xarray backend writes)."""
    variables, attrs = encode_dataset_coordinates(ds)
    for k, enc in encoding.items():
        variables[k].encoding = enc  # encode_dataset_coordinates copied the variables
    return variables, attrs


# --------------------------------------------------------------------------- data


def is_dask(data) -> bool:
    return hasattr(data, "__dask_graph__") and data.__dask_graph__() is not None


def storage_array(name: str, data: np.ndarray) -> np.ndarray:
    """The array as zTensor can store it: CF char data as u8, anything else must map."""
    data = np.asarray(data)
    if data.dtype.kind == "S" and data.dtype.itemsize == 1:
        return data.view(np.uint8)
    if data.dtype.kind in "OUSTV":
        raise ZTensorError(
            f"variable {name!r} has dtype {data.dtype}, which has no zTensor representation "
            "(strings are stored as CF character arrays; convert objects to a fixed dtype)"
        )
    try:
        dtypes.from_numpy(data.dtype)
    except ZTensorError as exc:
        raise ZTensorError(f"variable {name!r}: {exc.reason}") from None
    return data


def storage_data(name: str, v: Variable):
    """The variable's data (numpy or dask) in a storable dtype (char data as u8)."""
    return storage_source(name, v.data)


def storage_source(name: str, data):
    """Data (numpy or dask) in a storable dtype (char data as u8), not computed."""
    if is_dask(data):
        storage_array(name, np.empty(0, data.dtype))
        return data.view(np.uint8) if data.dtype == np.dtype("S1") else data
    return storage_array(name, data)


def source_part(name: str, source, sel: tuple, dtype: np.dtype) -> np.ndarray:
    """``source[sel]`` as a numpy array of the stored dtype; a dask source computes only
    the blocks that part needs."""
    part = source[sel] if sel else source
    part = np.asarray(part.compute()) if is_dask(part) else np.asarray(part)
    part = storage_array(name, part)
    return part.astype(dtype, copy=False)


def read_stored(reader: Reader, name: str) -> np.ndarray:
    """An object's values, digest checked, as an owned array (u8 for char data). A store's
    reader sees the file as it was when the store opened, before this write began."""
    value = reader.read_tensor(name, copy=True, verify_checksum=True)
    if not isinstance(value, np.ndarray):
        value = value.toarray()
    return value


def slabs(source):
    """Compute a dask array one axis-0 block row at a time, in C order."""
    if source.ndim == 0 or source.size == 0:
        yield np.asarray(source.compute())
        return
    start = 0
    for size in source.chunks[0]:
        yield np.asarray(source[start : start + size].compute())
        start += size


# --------------------------------------------------------------------------- encodings


def extract_encoding(v: Variable, *, raise_on_invalid: bool, name: str) -> dict:
    """{"compress", "checksum", "chunks"} of a variable's encoding, checked."""
    enc = dict(v.encoding)
    if raise_on_invalid:
        invalid = [k for k in enc if k not in VALID_ENCODING and k not in _IGNORED_ENCODING]
        if invalid:
            raise InvalidArgumentError(
                f"unexpected encoding parameters for ztensor backend: {invalid!r}. "
                f"Valid encodings are: {sorted(VALID_ENCODING)!r}"
            )
    compress = enc.get("compress", False)
    if "level" in enc and enc["level"] is not None and compress in (False, None):
        compress = int(enc["level"])
    elif "level" in enc and compress is True:
        compress = int(enc["level"])
    try:
        compress = normalize_compress(compress)
        checksum = normalize_checksum(enc.get("checksum"))
    except ValueError as exc:
        raise InvalidArgumentError(f"variable {name!r}: {exc}") from None
    chunks = enc.get("chunks")
    if isinstance(chunks, Mapping):
        chunks = tuple(chunks.get(d, s) for d, s in zip(v.dims, v.shape))
    return {"compress": compress, "checksum": checksum, "chunks": chunks}


def new_array(name: str, v: Variable, explicit: bool) -> tuple[Any, dict]:
    """(data, Dask-writer encoding) of an encoded variable that becomes a new object."""
    check_object_name(name)
    enc = extract_encoding(v, raise_on_invalid=explicit, name=name)
    obj_attrs = object_attributes(name, v)
    data = storage_data(name, v)
    layout = "chunked" if (enc["compress"] or enc["chunks"] is not None) else "dense"
    fill = obj_attrs.get("_FillValue", 0)
    if not isinstance(fill, bool | int | float) or layout == "dense":
        fill = 0
    return data, {
        "compress": enc["compress"],
        "checksum": enc["checksum"],
        "chunks": enc["chunks"],
        "layout": layout,
        "fill_value": fill,
        "attributes": obj_attrs,
    }


def stored_dtype(obj) -> np.dtype:
    """The numpy dtype of a stored object's values (the chunk grid's, for chunked)."""
    if obj.format == "chunked":
        return dtypes.to_numpy(chunk_grid(obj).dtype)
    comp = obj.components.get("data") or obj.components.get("values")
    if comp is None:
        comp = next(iter(obj.components.values()))
    return dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))


def stored_chunks(obj) -> tuple[int, ...] | None:
    """A chunked object's chunk shape (None for other layouts)."""
    return chunk_grid(obj).chunk_shape if obj.format == "chunked" else None


def reported_encoding(obj, dims: tuple[str, ...], dtype: np.dtype) -> dict[str, Any]:
    """The encoding an opened variable reports: compress when every component is zstd, the
    digest algorithm when all agree, and a chunked object's grid as preferred chunks."""
    encoding: dict[str, Any] = {"dtype": dtype}
    level, checksum = layouts.stored_encoding(obj)
    if level:
        encoding["compress"] = True
    if checksum:
        encoding["checksum"] = checksum
    chunk_shape = stored_chunks(obj)
    if chunk_shape is not None:
        encoding["chunks"] = chunk_shape
        encoding["preferred_chunks"] = dict(zip(dims, chunk_shape))
    return encoding
