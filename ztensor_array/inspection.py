"""Looking at a .zt file without changing it: a description for ``info`` and ``verify``.

``describe`` turns a manifest into plain data (for a table or JSON). ``verify`` opens a file
and collects every problem it finds (structure, digests, and with ``deep`` every decode)
instead of stopping at the first, so a user sees the whole damage at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import dtypes
from .errors import MissingFileError, ZTensorError


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
    from .reader import Reader

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
            objects.append(
                {
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
            )
        return {
            "path": os.fspath(path),
            "version": r.version,
            "legacy": getattr(r, "manifest_offset", 0) is None or r.version.startswith("0."),
            "file_bytes": r.size,
            "attributes": _jsonable(r.attributes),
            "objects": objects,
        }


def _raw_bytes(obj, role: str) -> int | None:
    from .validation import expected_nbytes

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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, where it is, and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def verify(
    path: str | os.PathLike,
    *,
    deep: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Problem]:
    """Every problem of a file: structure and digests (of the stored bytes, without
    decoding), and with ``deep`` every component decoded and every object read.

    An empty list means clean. ``progress(n)`` is called with the stored bytes checked.
    """
    from .reader import Reader

    path = os.fspath(path)
    try:
        r = Reader(path)
    except MissingFileError:
        raise
    except ZTensorError as exc:
        return [Problem("", exc.reason)]
    problems: list[Problem] = []
    with r:
        for name in r.tensor_names:
            obj = r.manifest.objects[name]
            ok = True
            for role, comp in obj.components.items():
                where = f"object {name!r} component {role!r}"
                try:
                    if comp.digest is not None:
                        _check_digest(r, name, role, comp.digest, where, problems)
                    if deep:
                        r.read_component(name, role, verify=False, copy=False)
                except ZTensorError as exc:
                    ok = False
                    problems.append(Problem(where, exc.reason))
                if progress is not None:
                    progress(comp.length)
            if deep and ok:
                try:
                    value = r.read_tensor(name)
                    _touch(value)
                except ZTensorError as exc:
                    problems.append(Problem(f"object {name!r}", exc.reason))
                except (ValueError, TypeError, IndexError) as exc:
                    problems.append(Problem(f"object {name!r}", f"cannot be decoded ({exc})"))
    return problems


def _check_digest(r, name: str, role: str, digest: str, where: str, problems: list) -> None:
    from .codecs import digests

    ok = digests.matches(digest, r.stored_bytes(name, role))
    if ok is None:
        problems.append(Problem(where, f"digest {digest!r} has an unknown algorithm"))
    elif not ok:
        problems.append(Problem(where, f"digest mismatch (expected {digest})"))


def _touch(value: Any) -> None:
    """Force a lazily decoded value to materialise (sparse matrices check their indices)."""
    check = getattr(value, "check_format", None)
    if callable(check):
        check(full_check=True)
