"""``describe`` (``ztensor info``): a file's manifest as plain data, for a table or JSON.

Also the roll-ups ``info`` prints for files too large to list object by object, so that the
command line only formats what it is given.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .. import dtypes
from ..errors import ZTensorError
from ..manifest import Object
from ..reader import Reader
from ..validation import expected_nbytes


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Version, global attributes and every object with its components, as plain data."""
    with Reader(path) as r:
        objects = []
        for name in r.tensor_names:
            obj = r.manifest.objects[name]
            comps = {}
            for role, c in obj.components.items():
                # an unknown logical type (newer writer) is shown as stored
                known = dtypes.is_known_type(c.type)
                logical = dtypes.logical_name(c.dtype, c.type) if known else c.type
                comps[role] = {
                    "dtype": logical,
                    "storage_dtype": c.dtype,
                    "encoding": c.encoding,
                    "offset": c.offset,
                    "stored_bytes": c.length,
                    "raw_bytes": _raw_bytes(obj, role),
                    "digest": c.digest,
                }
                if c.byte_order != "little":
                    comps[role]["byte_order"] = c.byte_order
            primary = comps.get("data") or comps.get("values") or next(iter(comps.values()), {})
            entry = {
                "name": name,
                "format": obj.format,
                "dtype": primary.get("dtype"),
                "shape": list(obj.shape),
                "encoding": _one(c["encoding"] for c in comps.values()),
                "stored_bytes": sum(c["stored_bytes"] for c in comps.values()),
                "raw_bytes": _sum_or_none(c["raw_bytes"] for c in comps.values()),
                "digest": _one(c["digest"] for c in comps.values()),
                "attributes": _jsonable(dict(obj.attributes or {})),
                "components": comps,
            }
            if obj.format == "chunked":
                entry.update(_chunks_summary(r, name, obj, comps))
            objects.append(entry)
        return {
            "path": os.fspath(path),
            "version": r.version,
            "legacy": r.manifest_offset is None or r.version.startswith("0."),
            "file_bytes": r.size,
            "attributes": _jsonable(r.attributes),
            "objects": objects,
        }


def _chunks_summary(r: Reader, name: str, obj: Object, comps: dict) -> dict[str, Any]:
    """A chunked object as its chunks make it (its components may be index segments
    only): the grid's dtype, the chunks' encoding, digest algorithm and sizes."""
    from ..layouts import chunked  # concurrent.futures comes with it: chunked files only

    grid = chunked.chunk_grid(obj, r.path, name)
    chunks = r.chunks(name)
    index_bytes = sum(c["stored_bytes"] for role, c in comps.items() if role.startswith("i."))
    algos = {c.digest.split(":", 1)[0] if c.digest else None for c in chunks.values()}
    return {
        "dtype": grid.dtype,
        "encoding": _one(c.encoding for c in chunks.values()),
        "stored_bytes": sum(c.length for c in chunks.values()) + index_bytes,
        "raw_bytes": sum(grid.nbytes(i) for i in chunks),
        "digest": algos.pop() if len(algos) == 1 else None,
        "chunks": {
            "chunk_shape": list(grid.chunk_shape),
            "grid": list(grid.grid),
            "stored": len(chunks),
            "index_segments": len(grid.segments),
        },
    }


def _raw_bytes(obj: Object, role: str) -> int | None:
    try:
        return expected_nbytes(obj, role)
    except ZTensorError:
        return None


def _one(values):
    s = set(values)
    if len(s) == 1:
        return s.pop()
    return "mixed" if s else None


def _sum_or_none(values):
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def totals(objects: list[dict[str, Any]]) -> tuple[int, int]:
    """(stored, raw) bytes of described objects (an unknown raw size counts as 0)."""
    return (
        sum(o["stored_bytes"] for o in objects),
        sum(o["raw_bytes"] or 0 for o in objects),
    )


def summarize(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Described objects grouped by (format, dtype, encoding): one row per group with its
    object and element counts and byte totals, in a stable order."""
    groups: dict[tuple, list] = {}
    for o in objects:
        groups.setdefault((o["format"], o["dtype"], o["encoding"]), []).append(o)
    rows = []
    for (fmt, dtype, encoding), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        stored, raw = totals(members)
        rows.append(
            {
                "format": fmt,
                "dtype": dtype,
                "encoding": encoding,
                "objects": len(members),
                "elements": sum(math.prod(o["shape"]) for o in members),
                "stored_bytes": stored,
                "raw_bytes": raw,
            }
        )
    return rows


def largest(objects: list[dict[str, Any]], n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` described objects with the most stored bytes, largest first."""
    return sorted(objects, key=lambda o: -o["stored_bytes"])[:n]
