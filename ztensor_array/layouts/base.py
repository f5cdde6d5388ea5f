"""What every layout provides, and the rules several layouts share.

A layout owns one manifest `format`: its structural rules (``check``), the decoded sizes its
geometry fixes (``expected_nbytes``, ``decoded_bound``), the dtype a read returns
(``value_dtype``) and the read itself. ``validation`` asks the layout of each object through
the registry in ``layouts/__init__.py``; layouts never import ``validation``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn, Protocol

import numpy as np

from .. import dtypes
from ..codecs import RAW
from ..codecs.policy import DEFAULT_LEVEL, MAX_DECODE_RATIO
from ..errors import FormatError, UnsupportedError
from ..manifest import Component, Object
from . import select


class Getter(Protocol):
    """How a layout reads the stored parts of one object (the reader provides it; layouts
    never touch files). ``get(role)``: the component decoded to a 1-D array of its storage
    dtype. ``get.prefix(role, nbytes)``: only its first ``nbytes`` decoded bytes, decoding
    no further than needed (a leading part of a compressed tensor)."""

    def __call__(self, role: str) -> np.ndarray: ...

    def prefix(self, role: str, nbytes: int) -> np.ndarray: ...

    def located(self, comp: Component, label: str, nbytes: int) -> np.ndarray:
        """A blob the manifest does not name (a chunk an index locates), checked against the
        file, decoded to exactly ``nbytes`` in its storage dtype; ``label`` names it in
        errors."""
        ...

    def prefetch(self, parts: Iterable[str | Component]) -> None:
        """A hint that these parts (roles, or blobs an index locates) are read next: a
        reader of a remote file fetches them now in few merged, concurrent requests, so
        reading k chunks costs about one round trip; a mapped file ignores it."""
        ...

    fetches: bool  # True when parts are fetched (a URL...), not mapped: ``window`` may help

    def window(self, role: str, start: int, stop: int) -> np.ndarray | None:
        """Bytes ``[start, stop)`` of a raw component as uint8, fetched alone, when the
        file is read through a byte source (a URL): a small selection of a large tensor
        then costs one range request of its bounding bytes. None for a mapped file (a view
        of the whole component is as cheap) or when digests are checked (they cover the
        whole component)."""
        ...

    def scattered(self, role: str) -> np.ndarray:
        """Like ``get(role)`` for a raw component to be read in a few scattered places (a
        small selection of a large tensor): a view of its own that reads only the pages
        touched, not the read-ahead around each."""
        ...


# roles that hold the values of a tensor, in the order 1.1.1 looks for them
_PRIMARY_ROLES = ("data", "values", "packed_weight")


class Layout:
    """The rules and the reader of one `format`. The defaults suit a format with no rules
    beyond the container's, whose value dtype is that of its primary component."""

    format: str = ""

    def check(self, name: str, obj: Object, path) -> None:
        """Raise FormatError (or UnsupportedError) if ``obj`` breaks the format's rules;
        only the manifest is available, not the data."""

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        """Decoded byte size of a component when the format's geometry fixes it."""
        return None

    def decoded_bound(self, obj: Object, role: str) -> int | None:
        """Most bytes a component may decode to, when more than shape x itemsize x ndim."""
        return None

    def value_dtype(self, obj: Object) -> str | None:
        """zTensor dtype name of what ``read`` returns; None when there is none, or it is a
        logical `type` this version does not know."""
        if unknown_type(obj) is not None:
            return None
        comp = primary_component(obj)
        return None if comp is None else dtypes.logical_name(comp.dtype, comp.type)

    def read(self, obj: Object, get: Getter, *, path=None, name=None) -> Any:
        """The user's value from component arrays (``get(role)``); never touches files."""
        raise UnsupportedError(
            f"format {obj.format!r} is not supported by this reader", path=path, obj=name
        )

    def stored_encoding(self, obj: Object) -> tuple[int, str | None]:
        """(zstd level, digest algorithm) that rewriting part of ``obj`` keeps when the
        caller asks for none (the level is not recorded: the default one when compressed)."""
        return components_encoding(obj.components.values())

    def read_selection(
        self, obj: Object, get: Getter, key: Any, *, path=None, name=None, copy: bool = True
    ) -> Any:
        """``value[key]``: this default reads the whole value, then indexes it (an owned
        array unless ``copy`` is False). Layouts that can read less override it."""
        value = self.read(obj, get, path=path, name=name)
        if is_whole(key, obj.shape):
            return value
        axes, keep = select.normalize(key, obj.shape)
        if not isinstance(value, np.ndarray):  # scipy.sparse: rows, then columns of a CSR
            rows, cols = (
                a.start if not k else select.as_slice(a) if isinstance(a, range) else a
                for a, k in zip(axes, keep)
            )
            return value.tocsr()[rows, :][:, cols]
        out = select.take(value, axes, keep)
        return np.array(out) if copy and out.base is not None else out

    def read_points(self, obj: Object, get: Getter, key: Any, *, path=None, name=None):
        """``value`` at a point-wise selection (``select.normalize_points``): this default
        reads the orthogonal selection of every distinct index per axis (as little as
        ``read_selection`` can), then picks the points from it. Layouts that can read
        less override it."""
        axes, _ = select.normalize_points(key, obj.shape)
        outer, inner = select.points_outer(axes)
        part = self.read_selection(obj, get, outer, path=path, name=name)
        if not isinstance(part, np.ndarray):  # scipy.sparse: only the selection densified
            part = part.toarray()
        return select.take_points(part, inner)


def is_whole(key: Any, shape: tuple[int, ...]) -> bool:
    """Whether an index selects a whole array as it is (``()``, ``...``, full slices)."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) == 1 and key[0] is Ellipsis:
        return True
    return len(key) <= len(shape) and all(
        isinstance(k, slice) and k.indices(n) == (0, n, 1) for k, n in zip(key, shape)
    )


def components_encoding(comps) -> tuple[int, str | None]:
    """(zstd level, digest algorithm) of some components: compressed if any is (at the
    default level: the level is not recorded), and the algorithm of the first digest."""
    comps = list(comps)
    level = DEFAULT_LEVEL if any(c.encoding != RAW for c in comps) else 0
    digest = next((c.digest for c in comps if c.digest), None)
    return level, digest.split(":", 1)[0] if digest else None


def primary_component(obj: Object) -> Component | None:
    """The component that holds the tensor's values (its digest and byte order are the
    ones 1.1.1 reports): data, values or packed_weight, else the first one."""
    comps = obj.components
    for role in _PRIMARY_ROLES:
        if role in comps:
            return comps[role]
    return next(iter(comps.values()), None)


def refuse(message: str, role: str | None = None, *, path, name, unsupported=False) -> NoReturn:
    """FormatError, or UnsupportedError for a variant this version cannot read (the rest of
    the file stays readable)."""
    cls = UnsupportedError if unsupported else FormatError
    raise cls(message, path=path, obj=name, component=role)


def logical_name(obj: Object, role: str) -> str:
    """Logical dtype name of a component (its `type` over its storage dtype)."""
    comp = obj.components[role]
    return dtypes.logical_name(comp.dtype, comp.type)


# from the numpy type strings ("<i4": kind "i"), so that no ml_dtypes import is needed
_INTEGERS = frozenset(d.name for d in dtypes.BY_NAME.values() if d.numpy_spec[1] in "iu")


def is_integer(dtype_name: str) -> bool:
    """Whether a zTensor dtype name is a (signed or unsigned) integer type."""
    return dtype_name in _INTEGERS


def check_size(
    name: str,
    role: str,
    comp: Component,
    nbytes: int | None,
    path,
    *,
    what: str = "raw length",
    detail: str = "",
) -> None:
    """A raw component holds exactly ``nbytes``; a compressed one must be able to decode to
    them within the decode-ratio bound. Nothing to check when ``nbytes`` is None."""
    if nbytes is None:
        return
    if comp.encoding == RAW:
        if comp.length != nbytes:
            refuse(f"{what} {comp.length} != {nbytes} bytes{detail}", role, path=path, name=name)
    elif nbytes > max(comp.length, 1) * MAX_DECODE_RATIO:
        refuse(
            f"declared decoded size {nbytes} is impossible for {comp.length} compressed bytes",
            role,
            path=path,
            name=name,
        )


def unknown_type(obj: Object, role: str | None = None) -> tuple[str, str] | None:
    """(role, type) of the first component (of ``role`` only, when given) whose `type` this
    version does not know."""
    comps = obj.components if role is None else {role: obj.components[role]}
    for r, comp in comps.items():
        if comp.type is not None and not dtypes.is_known_type(comp.type):
            return r, comp.type
    return None


def require_known_types(obj: Object, path=None, name=None, role: str | None = None) -> None:
    """UnsupportedError naming the component whose logical `type` is unknown (of ``role``
    only, when given). Such objects open and list, but their values cannot be read."""
    unknown = unknown_type(obj, role)
    if unknown is not None:
        r, type_ = unknown
        raise UnsupportedError(
            f"unknown logical type {type_!r} over storage dtype {obj.components[r].dtype!r} "
            "(written by a newer zTensor version?)",
            path=path,
            obj=name,
            component=r,
        )
