"""Selections of an array, and how they split into per-chunk pieces of a chunked array.

Two kinds, as zarr and xarray have them:

- orthogonal (``Reader.read_slice``, zarr's ``oindex``, xarray's outer indexing): a tuple of
  ints, slices (any step), at most one Ellipsis and 1-D integer or boolean arrays, each
  array picking along its own axis. ``pieces`` yields, for every chunk that holds a selected
  element and only for those, which elements to take from the chunk and where they go.
- point-wise (``Reader.read_points``, zarr's ``vindex``, xarray's vectorised indexing):
  integer arrays that broadcast together pick one element per position; their broadcast
  dimensions come first in the result, then the axes selected by slices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

Axis = range | np.ndarray  # selected indices along one axis, in output order


def is_basic(selection) -> bool:
    """Whether numpy's own indexing means the same as ours: ints, slices and Ellipsis only
    (no arrays, which numpy would pick point-wise)."""
    key = selection if isinstance(selection, tuple) else (selection,)
    return all(
        isinstance(k, slice)
        or k is Ellipsis
        or (isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_))
        for k in key
    )


def normalize(selection, shape) -> tuple[list[Axis], list[bool]]:
    """Per axis: the selected indices (a range, or an int array), and whether the axis is
    kept in the output (an integer index drops it). IndexError for anything else."""
    selection = _per_axis(selection, shape)
    axes: list[Axis] = []
    keep: list[bool] = []
    for axis, (sel, n) in enumerate(zip(selection, shape)):
        if isinstance(sel, slice):
            axes.append(range(*sel.indices(n)))
            keep.append(True)
        elif isinstance(sel, (int, np.integer)) and not isinstance(sel, (bool, np.bool_)):
            i = int(sel) + n if sel < 0 else int(sel)
            if not 0 <= i < n:
                raise IndexError(f"index {sel} is out of bounds for axis {axis} with size {n}")
            axes.append(range(i, i + 1))
            keep.append(False)
        else:
            axes.append(_index_array(sel, n, axis))
            keep.append(True)
    return axes, keep


def _per_axis(selection, shape) -> tuple:
    """The selection as one entry per axis: ``...`` expanded, missing axes whole."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    if sum(s is Ellipsis for s in selection) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if any(s is Ellipsis for s in selection):
        i = next(k for k, s in enumerate(selection) if s is Ellipsis)
        fill = len(shape) - (len(selection) - 1)
        selection = selection[:i] + (slice(None),) * fill + selection[i + 1 :]
    if len(selection) > len(shape):
        raise IndexError(f"too many indices: {len(selection)} for {len(shape)} dimensions")
    return selection + (slice(None),) * (len(shape) - len(selection))


def _index_array(sel, n: int, axis: int) -> np.ndarray:
    arr = np.asarray(sel)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} does not match axis {axis}")
        return np.flatnonzero(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise IndexError(
            "only integers, slices, ..., and 1-D integer or boolean arrays are supported, "
            f"got {type(sel).__name__}"
        )
    return _in_bounds(arr, n, axis)


def _in_bounds(arr: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Integer indices along an axis of ``n`` as int64, negative ones counted from the end."""
    arr = arr.astype(np.int64, copy=False)
    arr = np.where(arr < 0, arr + n, arr)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise IndexError(f"index out of bounds for axis {axis} with size {n}")
    return arr


class AxisChunks:
    """The chunks one axis selection touches, along an axis of ``n`` cut into chunks of
    ``c``: how many (``count``), which (``indices``, ascending; ``touched`` tests many at
    once) and what each one takes (``piece``). Nothing is done per chunk that is not asked
    for, so a selection over millions of never-written chunks costs no Python step each."""

    __slots__ = ("c", "count", "n", "sel", "_order", "_pieces", "_sorted", "_unique")

    def __init__(self, sel: Axis, c: int, n: int) -> None:
        self.sel, self.n = sel, n
        self._pieces: dict[int, tuple | None] = {}  # asked for once per chunk of the axis
        self.c = max(1, min(c, n))  # a chunk wider than the axis is the whole axis
        if isinstance(sel, range):
            first, last = (sel[0], sel[-1]) if sel else (0, -1)
            lo, hi = min(first, last), max(first, last)
            if not sel:
                self.count = 0
            elif abs(sel.step) >= self.c:  # one element per chunk at most
                self.count = len(sel)
            else:
                self.count = hi // self.c - lo // self.c + 1
        else:
            which = sel // self.c
            self._order = np.argsort(which, kind="stable")
            self._sorted = which[self._order]
            self._unique = np.unique(self._sorted)
            self.count = int(self._unique.size)

    def _walk(self) -> tuple[int, int, int]:
        """(first, step, length) of a range selection walked in ascending order."""
        r = self.sel
        lo = min(r[0], r[-1])
        return lo, abs(r.step), len(r)

    def indices(self) -> Iterator[int]:
        """The touched chunk indices, ascending."""
        if not isinstance(self.sel, range):
            yield from self._unique.tolist()
            return
        if not self.sel:
            return
        first, step, length = self._walk()
        if step >= self.c:
            for j in range(length):
                yield (first + j * step) // self.c
        else:
            yield from range(first // self.c, (first + (length - 1) * step) // self.c + 1)

    def touched(self, ks: np.ndarray) -> np.ndarray:
        """Whether each chunk index of ``ks`` (int64, inside the grid) holds a selected
        element."""
        if not isinstance(self.sel, range):
            return np.isin(ks, self._unique)
        if not self.sel:
            return np.zeros(ks.shape, dtype=bool)
        first, step, length = self._walk()
        start = ks * self.c
        # the last position of each chunk; the edge chunk ends at the axis end
        edge = start > self.n - self.c
        end = np.where(edge, self.n - 1, start + (self.c - 1))
        j_lo = np.maximum(0, -((first - start) // step))  # ceil((start - first) / step)
        j_hi = np.minimum(length - 1, (end - first) // step)
        return (j_hi >= j_lo) & (end >= first)

    def piece(self, k: int):
        """(key into chunk ``k``, key into the output) of what the selection takes from it;
        None when it takes nothing."""
        try:
            return self._pieces[k]
        except KeyError:
            out = self._pieces[k] = self._piece(k)
            return out

    def _piece(self, k: int):
        c = self.c
        if not isinstance(self.sel, range):
            lo = int(np.searchsorted(self._sorted, k, "left"))
            hi = int(np.searchsorted(self._sorted, k, "right"))
            if lo == hi:
                return None
            group = self._order[lo:hi]
            return self.sel[group] - k * c, group
        if not self.sel:
            return None
        first, step, length = self._walk()
        start, end = k * c, min(k * c + c, self.n) - 1
        j_lo = max(0, -((first - start) // step))
        j_hi = min(length - 1, (end - first) // step)
        if end < first or j_hi < j_lo:
            return None
        a, b = first + j_lo * step, first + j_hi * step
        local = slice(a - start, b - start + 1, step)
        if self.sel.step > 0:
            out = slice(j_lo, j_hi + 1)
        else:  # the output runs backwards over the ascending walk
            stop = length - 2 - j_hi
            out = slice(length - 1 - j_lo, stop if stop >= 0 else None, -1)
        return local, out


def piece(axes: list[AxisChunks], index) -> tuple[tuple, tuple]:
    """(key into the chunk, key into the output) of the chunk at grid ``index``, which
    holds a selected element. Keys with several arrays are open meshes (``np.ix_``), so
    they pick orthogonally."""
    parts = [a.piece(k) for a, k in zip(axes, index)]
    local = tuple(p[0] for p in parts)
    where = tuple(p[1] for p in parts)
    return _orthogonal(local), _orthogonal(where)


def grid_indices(axes: list[AxisChunks]) -> Iterator[tuple[int, ...]]:
    """Every grid index a selection touches (``prod(a.count)`` of them)."""
    return itertools.product(*(list(a.indices()) for a in axes))


def _orthogonal(key: tuple) -> tuple:
    """``key`` as numpy applies it orthogonally: with two or more arrays, every entry
    becomes an index array of an open mesh (a single array already acts orthogonally)."""
    if sum(isinstance(k, np.ndarray) for k in key) < 2:
        return key
    return np.ix_(
        *[k if isinstance(k, np.ndarray) else np.arange(*k.indices(1 << 62)) for k in key]
    )


def out_shape(axes: list[Axis]) -> tuple[int, ...]:
    return tuple(len(a) for a in axes)


def as_slice(r: range) -> slice:
    """The slice selecting ``r`` on any array at least ``r.start + 1`` long (no negative
    positions left to count from the end)."""
    if not r:
        return slice(0, 0)
    return slice(r.start, r.stop if r.stop >= 0 else None, r.step)


def take(value, axes: list[Axis], keep: list[bool]):
    """``value`` at the normalized orthogonal selection: ranges slice (a view), each array
    picks along its own axis, axes of an integer index are dropped. ``value`` may hold more
    than the selection (a prefix of the rows, say): positions are absolute."""
    out = value[tuple(as_slice(a) if isinstance(a, range) else slice(None) for a in axes)]
    for axis, sel in enumerate(axes):
        if isinstance(sel, np.ndarray):
            out = np.take(out, sel, axis=axis)
    return out.reshape(tuple(len(a) for a, k in zip(axes, keep) if k))


def normalize_points(selection, shape) -> tuple[list[Axis], tuple[int, ...]]:
    """A point-wise selection per axis: a range (from a slice), or the integer array
    broadcast to the common shape of all arrays (negative indices counted from the end),
    and that shape. IndexError for anything else, or for arrays that do not broadcast."""
    selection = _per_axis(selection, shape)
    arrays = {}
    for axis, (sel, n) in enumerate(zip(selection, shape)):
        if isinstance(sel, slice):
            continue
        arr = np.asarray(sel)
        if arr.dtype == bool or (arr.size and arr.dtype.kind not in "iu"):
            raise IndexError(
                "point-wise selections take integer arrays and slices, got "
                f"{type(sel).__name__} of {arr.dtype} for axis {axis}"
            )
        arrays[axis] = _in_bounds(arr, n, axis)
    try:
        broadcast = np.broadcast_arrays(*arrays.values()) if arrays else []
    except ValueError:
        shapes = [a.shape for a in arrays.values()]
        raise IndexError(f"index arrays of shapes {shapes} do not broadcast together") from None
    together = dict(zip(arrays, broadcast))
    axes: list[Axis] = [
        together[axis] if axis in together else range(*sel.indices(n))
        for axis, (sel, n) in enumerate(zip(selection, shape))
    ]
    return axes, (broadcast[0].shape if broadcast else ())


def points_outer(axes: list[Axis]) -> tuple[tuple, list[Axis]]:
    """A point-wise selection as an orthogonal one that holds every selected element (the
    distinct indices of each array, sorted), and the point-wise selection to apply to its
    result (positions in it)."""
    outer, inner = [], []
    for sel in axes:
        if isinstance(sel, range):
            outer.append(as_slice(sel))
            inner.append(range(len(sel)))
        else:
            distinct = np.unique(sel)
            outer.append(distinct)
            inner.append(np.searchsorted(distinct, sel))
    return tuple(outer), inner


def take_points(value: np.ndarray, axes: list[Axis]) -> np.ndarray:
    """``value`` at the point-wise selection ``axes`` (from ``normalize_points``): the
    broadcast dimensions first, then the sliced axes."""
    picked = [i for i, a in enumerate(axes) if isinstance(a, np.ndarray)]
    moved = np.moveaxis(value, picked, range(len(picked)))
    key = [axes[i] for i in picked]
    key += [as_slice(a) for a in axes if isinstance(a, range)]
    return np.asarray(moved[tuple(key)])


SCATTERED_RUN = 32 << 10  # contiguous runs shorter than this make a read "scattered"
SCATTERED_MIN = 4 << 20  # ... of a tensor at least this large


def scattered(axes: list[Axis], shape, itemsize: int) -> bool:
    """Whether reading this selection from a C-order tensor touches only short runs of
    bytes far apart (a 50 x 50 window of a wide matrix, a column), so read-ahead around
    each would read far more than the selection: the longest contiguous run it reads is
    the trailing whole axes times the step-1 range before them."""
    if math.prod(shape) * itemsize < SCATTERED_MIN:
        return False
    run = itemsize
    for sel, n in zip(reversed(axes), reversed(shape)):
        if isinstance(sel, range) and sel.step == 1:
            run *= len(sel)
            if len(sel) == n:
                continue
        break
    return run < SCATTERED_RUN


def last_index(sel: Axis) -> int:
    """The highest index an axis selection reaches (-1 when it selects nothing)."""
    if len(sel) == 0:
        return -1
    return max(sel[0], sel[-1]) if isinstance(sel, range) else int(sel.max())
