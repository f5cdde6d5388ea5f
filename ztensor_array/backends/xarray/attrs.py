"""How xarray attributes and dimension names live in a .zt (SPEC.md, "xarray mapping").

Object attributes hold a variable's (CF-encoded) attributes, its dimension names and the
numpy dtypes of numpy-typed attribute values; dataset attributes are global attributes, and
the attributes of DataTree subgroups sit under one reserved global attribute.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from xarray import Variable

from ... import dtypes
from ...errors import InvalidArgumentError, ZTensorError
from ...layouts.chunked import CHUNK_GRID_KEY

# Reserved object attribute keys (see SPEC.md, "xarray mapping").
DIMS_KEY = "_ARRAY_DIMENSIONS"  # list of dimension names, one per axis
ATTR_DTYPES_KEY = "_xarray_attr_dtypes"  # attr name -> numpy dtype of numpy-typed attrs
CHAR_KEY = "_xarray_char"  # true: u8 storage holds CF character (S1) data
# the numpy compound dtype ({names, formats, offsets, itemsize, aligned}) of an HDF5
# compound {r, i} stored as complex, so that it reads back as the compound it was
COMPOUND_KEY = "_xarray_compound"
# Reserved global attribute: {group path: {"attrs": {...}, "dtypes": {...}}} for subgroups.
GROUPS_KEY = "_xarray_groups"
RESERVED_OBJECT_KEYS = frozenset(
    {DIMS_KEY, ATTR_DTYPES_KEY, CHAR_KEY, COMPOUND_KEY, CHUNK_GRID_KEY}
)
RESERVED_ROOT_KEYS = frozenset({GROUPS_KEY, ATTR_DTYPES_KEY})


def _plain(value: Any, where: str) -> Any:
    """Nested attr value with numpy scalars/arrays replaced by Python values (no dtypes)."""
    if isinstance(value, np.ndarray | np.generic):
        return _plain(value.tolist(), where)
    if isinstance(value, Mapping):
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, str | bytes | bool | int | float):
        return value
    raise ZTensorError(
        f"attribute {where!r} has a value of type {type(value).__name__} that cannot be "
        "stored (use bool, int, float, str, bytes, lists, dicts or numpy values)"
    )


def encode_attrs(attrs: Mapping[Hashable, Any], where: str) -> tuple[dict, dict]:
    """(CBOR-ready attrs, {name: numpy dtype string}) for numpy-typed top-level values."""
    out: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise ZTensorError(f"attribute names must be text, got {key!r} on {where!r}")
        if isinstance(value, np.ndarray | np.generic):
            arr = np.asarray(value)
            if arr.dtype.kind in "Mm":
                out[key] = arr.view("i8").tolist()
            elif arr.dtype.kind in "biuf":
                out[key] = arr.tolist()
            else:
                out[key] = _plain(arr.tolist(), f"{where}.{key}")
                if arr.dtype.kind not in "US":
                    continue
            types[key] = arr.dtype.str
        else:
            out[key] = _plain(value, f"{where}.{key}")
    return out, types


def decode_attrs(stored: Mapping[str, Any], types: Mapping[str, str] | None) -> dict:
    """Inverse of ``encode_attrs``: numpy-typed values get their dtype back."""
    out = dict(stored)
    for key, dt in (types or {}).items():
        if key not in out:
            continue
        try:
            dtype = np.dtype(dt)
            if dtype.kind in "Mm":
                arr = np.asarray(out[key], dtype="i8").view(dtype)
            else:
                arr = np.asarray(out[key], dtype=dtype)
        except (TypeError, ValueError):
            continue  # a foreign writer's attribute: keep it as stored
        out[key] = arr[()] if arr.ndim == 0 else arr
    return out


def with_dtypes(values: dict, types: Mapping[str, str]) -> dict:
    """``values`` carrying the reserved attr-dtypes entry when there are any."""
    if types:
        values[ATTR_DTYPES_KEY] = dict(types)
    return values


def root_attributes(attrs: Mapping[Hashable, Any], stored_types: Mapping | None = None) -> dict:
    """Dataset attributes as global attributes (``stored_types``: those already in the file,
    kept for attributes this write leaves as they are)."""
    values, types = encode_attrs(attrs, "/")
    return with_dtypes(values, {**(stored_types or {}), **types})


def group_attrs(stored_root: Mapping[str, Any], group: str) -> dict:
    """The attributes of one group ("/" or a subgroup path) from the global attributes."""
    if group == "/":
        stored = {k: v for k, v in stored_root.items() if k not in RESERVED_ROOT_KEYS}
        return decode_attrs(stored, stored_root.get(ATTR_DTYPES_KEY))
    entry = (stored_root.get(GROUPS_KEY) or {}).get(group) or {}
    return decode_attrs(entry.get("attrs") or {}, entry.get("dtypes"))


def object_attributes(name: str, v: Variable) -> dict:
    """The object attributes of an encoded variable: its attrs, dims and char flag."""
    clash = RESERVED_OBJECT_KEYS.intersection(v.attrs)
    if clash:
        raise InvalidArgumentError(
            f"variable {name!r} uses reserved attribute names {sorted(clash)}"
        )
    attrs = dict(v.attrs)
    for key in ("_FillValue", "missing_value"):
        # like netCDF, fill values take the variable's own dtype
        if key in attrs and v.dtype.kind in "biuf" and not isinstance(attrs[key], np.ndarray):
            try:
                attrs[key] = np.array(attrs[key], dtype=v.dtype)[()]
            except (OverflowError, TypeError, ValueError):
                pass
    values, types = encode_attrs(attrs, name)
    values[DIMS_KEY] = [str(d) for d in v.dims]
    with_dtypes(values, types)
    if v.dtype == np.dtype("S1"):
        values[CHAR_KEY] = True
    if v.dtype.names is not None:
        values[COMPOUND_KEY] = compound_spec(v.dtype)
    return values


def compound_spec(dtype: np.dtype) -> dict:
    """A compound dtype as CBOR-ready fields (``numpy.dtype`` of it rebuilds it), its
    fields little-endian as the values are stored (xarray reads no big-endian compound)."""
    return {
        "names": list(dtype.names),
        "formats": [dtypes.little_endian(dtype.fields[n][0]).str for n in dtype.names],
        "offsets": [dtype.fields[n][1] for n in dtype.names],
        "itemsize": dtype.itemsize,
        "aligned": bool(dtype.isalignedstruct),
    }


def compound_dtype(stored: Mapping[str, Any]) -> np.dtype | None:
    """The compound dtype an object's values read back as (None: their own dtype)."""
    spec = stored.get(COMPOUND_KEY)
    if not isinstance(spec, Mapping):
        return None
    try:
        return np.dtype(
            {k: spec[k] for k in ("names", "formats", "offsets", "itemsize")},
            align=bool(spec.get("aligned")),
        )
    except (KeyError, TypeError, ValueError):
        return None  # a foreign writer's attribute: read the values as stored


def variable_attrs(stored: Mapping[str, Any]) -> dict:
    """A variable's attrs from its object attributes (reserved keys left out)."""
    plain = {k: v for k, v in stored.items() if k not in RESERVED_OBJECT_KEYS}
    return decode_attrs(plain, stored.get(ATTR_DTYPES_KEY))


def stored_dims(obj) -> tuple[str, ...]:
    """An object's dimension names: as stored, else ``dim_<axis>`` (a foreign writer's)."""
    dims = (obj.attributes or {}).get(DIMS_KEY)
    if isinstance(dims, list) and len(dims) == len(obj.shape):
        return tuple(str(d) for d in dims)
    return tuple(f"dim_{i}" for i in range(len(obj.shape)))


def has_stored_dims(obj) -> bool:
    return DIMS_KEY in (obj.attributes or {})
