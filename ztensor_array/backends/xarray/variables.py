"""One xarray variable <-> one zTensor object: names, storable data, and encodings.

What every write path needs to turn an (encoded) variable into an object, and what the
store reports back about a stored object, so the rules live in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from xarray import Dataset, Variable

from ... import dtypes, layouts
from ...codecs.policy import normalize_checksum, normalize_compress
from ...errors import ArgumentTypeError, InvalidArgumentError, UnsupportedError, ZTensorError
from ...layouts.chunked import chunk_grid
from ...reader import Reader
from . import foreign
from .attrs import object_attributes
from .internals import NONE_VAR_NAME, encode_dataset_coordinates

# Peak memory of a block-wise rewrite or append is a few blocks of this size, whatever the
# variable's size; a dask source is computed in parts of about this size.
BLOCK_BYTES = 8 << 20

# encoding keys the writer understands; other backends' keys are foreign.py's (mapped, or
# refused when given explicitly), CF keys are xarray's coders'
VALID_ENCODING = frozenset({"compress", "level", "chunks", "checksum", "preferred_chunks"})


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


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a variable's values are stored in: CF char data as u8, an HDF5 compound
    {r, i} of two floats as complex (``dtypes.complex_of_compound``), the rest as it is."""
    dtype = np.dtype(dtype)
    if dtype.kind == "S" and dtype.itemsize == 1:
        return np.dtype(np.uint8)
    pair = dtypes.complex_of_compound(dtype)
    return dtypes.little_endian(pair) if pair is not None else dtype


def storage_array(name: str, data: np.ndarray) -> np.ndarray:
    """The array as zTensor can store it: CF char data as u8, a compound {r, i} as complex,
    anything else must map."""
    data = np.asarray(data)
    stored = storage_dtype(data.dtype)
    if stored != data.dtype:
        return _as_stored(data, stored)
    _check_storable(name, data.dtype)
    return data


def _as_stored(data, stored: np.dtype):
    """numpy or dask data viewed in its storage dtype (a compound also byte-swapped)."""
    as_is = stored if data.dtype.kind == "S" else dtypes.complex_of_compound(data.dtype)
    data = data.view(as_is)
    return data.astype(stored) if as_is != stored else data


def _check_storable(name: str, dtype: np.dtype) -> None:
    if dtype.kind == "V":
        raise UnsupportedError(
            f"variable {name!r} has the compound dtype {dtype}, which has no zTensor "
            "representation (only a compound of two floats of one type named r/i, re/im "
            "or real/imag is stored, as complex)"
        )
    if dtype.kind in "OUST":
        raise UnsupportedError(
            f"variable {name!r} has dtype {dtype}, which has no zTensor representation "
            "(strings are stored as CF character arrays; convert objects to a fixed dtype)"
        )
    try:
        dtypes.from_numpy(dtype)
    except ZTensorError as exc:
        raise UnsupportedError(f"variable {name!r}: {exc.reason}") from None


def storage_data(name: str, v: Variable):
    """The variable's data (numpy or dask) in a storable dtype (char data as u8)."""
    return storage_source(name, v.data)


def storage_source(name: str, data):
    """Data (numpy or dask) in a storable dtype (char data as u8), not computed."""
    if is_dask(data):
        stored = storage_dtype(data.dtype)
        if stored != data.dtype:
            return _as_stored(data, stored)
        _check_storable(name, data.dtype)
        return data
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
    """{"compress", "checksum", "chunks"} of a variable's encoding, checked. The zTensor
    keys win; other backends' keys (zlib, compressors, chunksizes, ...) fill in the rest."""
    enc = dict(v.encoding)
    if raise_on_invalid:
        invalid = [
            k
            for k in enc
            if k not in VALID_ENCODING and k not in foreign.CF_KEYS and k not in foreign.KNOWN_KEYS
        ]
        if invalid:
            raise InvalidArgumentError(
                f"variable {name!r}: unexpected encoding parameters for the ztensor backend: "
                f"{invalid!r}. Valid encodings are: {sorted(VALID_ENCODING)!r}, xarray's CF "
                "keys, and the compression and chunking keys of netCDF4, h5netcdf and zarr"
            )
    mapped = foreign.translate(
        enc, name=name, shape=v.shape, itemsize=v.dtype.itemsize, explicit=raise_on_invalid
    )
    if "compress" not in enc and enc.get("level") is None and mapped["compress"] is not None:
        compress = mapped["compress"]
    else:
        compress = enc.get("compress", False)
        if "level" in enc and enc["level"] is not None and compress in (False, None):
            compress = int(enc["level"])
        elif "level" in enc and compress is True:
            compress = int(enc["level"])
    checksum = enc["checksum"] if "checksum" in enc else mapped["checksum"]
    try:
        compress = normalize_compress(compress)
        checksum = normalize_checksum(checksum)
    except ValueError as exc:
        raise InvalidArgumentError(f"variable {name!r}: {exc}") from None
    chunks = enc.get("chunks")
    if isinstance(chunks, Mapping):
        chunks = tuple(chunks.get(d, s) for d, s in zip(v.dims, v.shape))
    if chunks is None:
        chunks = mapped["chunks"]
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


REMOTE_BLOCK = 32 << 20  # decoded bytes a preferred block of a remote file grows to


def adjacent_block(shape, chunk_shape, itemsize: int, limit: int = REMOTE_BLOCK) -> tuple:
    """Whole chunks that lie next to each other in the file (C order of the grid): the
    trailing axes taken whole while the block stays within ``limit`` bytes, then as many
    chunks of the next axis as fit. Over a URL such a block is one range request."""
    block = list(chunk_shape)
    size = math.prod(chunk_shape) * itemsize
    for axis in reversed(range(len(shape))):
        per = size // max(1, block[axis])  # bytes of one index along this axis
        fit = max(block[axis], (limit // max(1, per)) // chunk_shape[axis] * chunk_shape[axis])
        block[axis] = min(shape[axis], fit)
        size = per * block[axis]
        if block[axis] < shape[axis]:
            break
    return tuple(block)


def reported_encoding(
    obj, dims: tuple[str, ...], dtype: np.dtype, *, remote: bool = False
) -> dict[str, Any]:
    """The encoding an opened variable reports: compress when every component is zstd, the
    digest algorithm when all agree, and a chunked object's grid as preferred chunks; of a
    remote file, blocks of adjacent chunks (``adjacent_block``: one request each)."""
    encoding: dict[str, Any] = {"dtype": dtype}
    level, checksum = layouts.stored_encoding(obj)
    if level:
        encoding["compress"] = True
    if checksum:
        encoding["checksum"] = checksum
    chunk_shape = stored_chunks(obj)
    if chunk_shape is not None:
        encoding["chunks"] = chunk_shape
        if remote and all(chunk_shape):
            chunk_shape = adjacent_block(obj.shape, chunk_shape, dtype.itemsize)
        encoding["preferred_chunks"] = dict(zip(dims, chunk_shape))
    return encoding


# --------------------------------------------------------------------------- CF encoding


def before_cf(v: Variable) -> Variable:
    """A variable as xarray's CF encoder can take it: ``_Unsigned`` kept where xarray
    would drop it, and no compound on-disk dtype for a compound stored as complex (the
    encoder cannot cast to it, and zTensor stores complex little-endian anyway)."""
    v = keep_unsigned_flag(v)
    on_disk = v.encoding.get("dtype")
    if on_disk is not None and dtypes.complex_of_compound(np.dtype(on_disk)) is not None:
        v = v.copy(deep=False)
        v.encoding = {k: x for k, x in v.encoding.items() if k != "dtype"}
    return v


def keep_unsigned_flag(v: Variable) -> Variable:
    """A variable whose encoding carries netCDF's ``_Unsigned`` (integers stored with the
    other signedness) with the flag moved to its attributes when it has no fill value.

    xarray's CF encoder writes the flag only alongside a fill value; without one it casts
    the data to the stored dtype and drops the flag, so uint8 255 would read back as int8
    -1. Moving it keeps the stored dtype and the flag consistent, as netCDF (and xarray,
    with a fill value) stores them."""
    flag = v.encoding.get("_Unsigned")
    if flag is None or "_Unsigned" in v.attrs:
        return v
    if any(v.encoding.get(k) is not None for k in ("_FillValue", "missing_value")):
        return v  # xarray's mask coder writes the flag itself
    if np.dtype(v.encoding.get("dtype", v.dtype)).kind not in "iu":
        return v
    v = v.copy(deep=False)
    v.encoding = {k: x for k, x in v.encoding.items() if k != "_Unsigned"}
    v.attrs = {**v.attrs, "_Unsigned": flag}
    return v


def encoding_failure(variables: Mapping, exc: Exception, encode_one) -> ZTensorError:
    """A ZTensorError naming the variable (and the attribute, for a fill value that does
    not fit its dtype) that xarray's CF encoder refused with ``exc``; ``encode_one(name,
    v)`` encodes a single variable."""
    for name, v in variables.items():
        try:
            encode_one(name, v)
        except ZTensorError as own:
            return own
        except Exception as one:  # noqa: BLE001 - xarray's coders raise many kinds
            return _why_not_encoded(name, v, one)
    return _error_like(exc)(f"the dataset cannot be CF-encoded: {exc}")


def _error_like(exc: Exception) -> type[ZTensorError]:
    """The ZTensorError that is also what xarray raised (NotImplementedError, TypeError,
    ValueError), so callers catching xarray's kinds still catch ours."""
    if isinstance(exc, NotImplementedError):
        return UnsupportedError
    if isinstance(exc, TypeError):
        return ArgumentTypeError
    return InvalidArgumentError


def _why_not_encoded(name, v: Variable, exc: Exception) -> ZTensorError:
    dtype = np.dtype(v.encoding.get("dtype", v.dtype))
    for key in ("_FillValue", "missing_value"):
        value = v.encoding.get(key, v.attrs.get(key))
        if value is None or dtype.kind not in "biuf":
            continue
        try:
            dtype.type(value)  # what xarray's mask coder does with it
        except (TypeError, ValueError, OverflowError):
            return InvalidArgumentError(
                f"variable {name!r}: its {key} attribute {value!r} "
                f"({type(value).__name__}) is not a value of its stored dtype {dtype}, so "
                "xarray cannot encode it (fix or drop the attribute in the encoding)"
            )
    return _error_like(exc)(f"variable {name!r} cannot be CF-encoded: {exc}")
