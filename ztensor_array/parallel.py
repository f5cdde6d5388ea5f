"""The multi-process write protocol: one .zt file written by many processes at once (Dask
tasks, distributed workers), with no Dask import here.

1. ``plan`` (client; touches no file, so an uncomputed graph costs nothing): the temp file's
   name for modes "w"/"x", or the finalized file's state for mode "a"; whether the folder is
   on a network filesystem (then appends reserve their offsets under a lock, see 3).
2. ``begin`` (once, before any worker writes): create the temp file, or in mode "a", under
   the writers' lock (files.FileLock), create the append marker (kind "parallel", holding
   the plan's token: from now on every other writer refuses the file) and pad the file to
   an aligned end; preallocate one aligned region per raw dense object. A failure undoes
   all of it.
3. Workers: ``pwrite_block`` fills raw regions (disjoint, no lock); ``append_blob`` appends a
   compressed or chunked blob where the kernel puts it (O_APPEND), or on a network
   filesystem at the end of file read under an exclusive flock of the file; in mode "a"
   each write holds the plan's ``WriteFence`` (a shared flock of the marker).
4. ``commit`` (one task, any process): under the writers' lock, the manifest of the old
   objects plus the new ones (carrying the marker's token), through ``Writer.adopt``
   (footer, atomic rename for "w"/"x"), then the marker goes; or ``abort``.

Workers know nothing but a path and offsets, so every piece pickles small. SPEC §9.1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import constants, files
from .codecs import byte_view, digests
from .errors import (
    FileBusyError,
    FileExistsZTError,
    InvalidArgumentError,
    UnsupportedError,
    ZTensorError,
)
from .manifest import Object
from .reader import Reader, refuse_marker
from .writer import Writer

MODES = ("w", "x", "a")


@dataclass(frozen=True)
class ParallelPlan:
    """Picklable state of a parallel write (what the committing task needs)."""

    path: str  # the final path
    target: str  # the file workers write: a hidden temp file, or ``path`` in mode "a"
    mode: str  # "w", "x" or "a"
    base_size: int  # mode "a": size of the finalized file before this write
    attributes: Mapping[str, Any]
    durable: bool = False
    token: str = ""  # names this write in the append marker (mode "a")
    locked_appends: bool = False  # network filesystem: appends reserve offsets under flock

    @property
    def lock_path(self) -> str:
        """Mode "a": the append marker that says a parallel append is in progress."""
        return files.marker_path(self.path)

    @property
    def fence(self) -> WriteFence | None:
        """What workers need to refuse writing once the append was aborted (mode "a")."""
        return WriteFence(self.path, self.lock_path, self.token) if self.mode == "a" else None

    def with_attributes(self, attributes: Mapping[str, Any]) -> ParallelPlan:
        """The plan, with ``attributes`` merged over the file's global attributes."""
        return replace(self, attributes={**self.attributes, **attributes})

    def small(self) -> ParallelPlan:
        """What ``abort`` needs, without the (possibly large) attributes."""
        return replace(self, attributes={})


def _lock_token(fd: int) -> str:
    """The token of the append marker open as ``fd`` ("" if it is not one)."""
    marker = files.Marker.decode(os.pread(fd, 4096, 0))
    return marker.token if marker is not None else ""


@dataclass(frozen=True)
class WriteFence:
    """Keeps late workers from writing into a finalized file after an aborted append.

    Workers hold a shared lock on the append marker while they write, and write only if
    it still exists and names their append; ``abort`` takes the exclusive lock, so it waits
    for writes in flight, then removes the marker before cutting the file back. (Modes
    "w"/"x" need no fence: a late write lands in a removed temp file or fails.)"""

    path: str
    lock_path: str
    token: str

    @contextmanager
    def hold(self):
        """Shared lock for one write; raises if the append was aborted meanwhile."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ZTensorError(
                "the parallel append was aborted or committed", path=self.path
            ) from None
        try:
            files.lock(fd, shared=True)
            if not files.same_file(fd, self.lock_path) or _lock_token(fd) != self.token:
                raise ZTensorError("the parallel append was aborted", path=self.path)
            yield
        finally:
            os.close(fd)  # releases the shared lock


def held(fence: WriteFence | None):
    """The fence's hold for one write (nothing to hold in modes "w"/"x")."""
    return fence.hold() if fence is not None else nullcontext()


def plan(path: str | os.PathLike, mode: str = "w", *, durable: bool = False) -> ParallelPlan:
    """Plan a parallel write without touching any file: the temp file name for "w"/"x", or
    the finalized file's state for "a" (checking that no writer is appending now)."""
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
    path = os.fspath(path)
    locked = files.on_network_filesystem(os.path.dirname(files.target(path)) or ".")
    if mode != "a":
        if mode == "x" and os.path.lexists(path):
            raise FileExistsZTError("path exists (mode='x')", path=path)
        files.check_replaceable(path)  # a device or FIFO is refused before any work
        target = files.temp_name(path)
        return ParallelPlan(path, target, mode, 0, {}, durable, locked_appends=locked)
    with files.FileLock.acquire(path, write=False, missing="no such file to append to") as held:
        refuse_marker(held)
        with Reader(path) as r:
            if r.manifest_offset is None:
                raise UnsupportedError(
                    "legacy v0.1 files cannot be appended to; migrate them first", path=path
                )
            attrs, size = r.attributes, r.size
    return ParallelPlan(path, path, "a", size, attrs, durable, files.token(8), locked)


def begin(plan: ParallelPlan, regions: list[int]) -> list[int]:
    """Create the temp file (modes "w"/"x") or, in mode "a", the append marker and pad the
    finalized file to an aligned end, then preallocate one aligned region per entry of
    ``regions`` (byte sizes); returns their offsets. Runs once, before any worker writes
    (the first graph task). A failure (disk full, the file size limit) undoes it all: no
    temp file, no marker, the file at its previous size."""
    if plan.mode != "a":
        try:
            fd = os.open(plan.target, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise ZTensorError(f"cannot create: {exc.strerror}", path=plan.path) from None
        try:
            try:
                files.write_at(fd, constants.MAGIC, 0, path=plan.path)
                _grow(fd, constants.ALIGNMENT, plan.path)
            finally:
                os.close(fd)
            return [reserve_region(plan, n) for n in regions]
        except BaseException:
            files.unlink_quietly(plan.target)
            raise
    with files.FileLock.acquire(plan.path, missing="the file to append to vanished") as held:
        size = held.size
        refuse_marker(held)  # another parallel append began since the plan
        if size != plan.base_size:  # another writer finished meanwhile: plan again
            raise FileBusyError(
                f"file changed since the write was planned ({size} bytes, expected "
                f"{plan.base_size}): another writer changed it; nothing was written",
                path=plan.path,
            )
        marker = held.begin_append("parallel", size, token=plan.token, durable=plan.durable)
        try:
            _grow(held.fd, size + (-size % constants.ALIGNMENT), plan.path)
            return [reserve_region(plan, n) for n in regions]
        except BaseException:
            try:
                held.truncate(size, durable=False)
            finally:
                held.end_append(marker)
            raise


def _grow(fd: int, size: int, path: str) -> None:
    """ftruncate up to ``size``; a refusal (file size limit, disk quota) names the file."""
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        raise files.system_error(exc, path, "extend") from None


def reserve_region(plan: ParallelPlan, nbytes: int) -> int:
    """Preallocate an aligned region of ``nbytes`` at the end of the target (before any
    worker appends; the end stays aligned); returns its offset."""
    fd = files.open_target(plan.target, os.O_RDWR, plan.path)
    try:
        size = os.fstat(fd).st_size
        offset = size + (-size % constants.ALIGNMENT)
        end = offset + nbytes
        _grow(fd, end + (-end % constants.ALIGNMENT), plan.path)  # appends need an aligned end
    finally:
        os.close(fd)
    return offset


def pwrite_block(
    target: str,
    offset: int,
    shape: tuple[int, ...],
    start: tuple[int, ...],
    block: np.ndarray,
) -> None:
    """Write ``block`` (C-contiguous, little-endian storage) into the C-order array of
    ``shape`` whose bytes begin at ``offset``, at index ``start``. Disjoint blocks may be
    written concurrently from any process: no lock, one pwrite per contiguous run."""
    data = np.ascontiguousarray(block)
    itemsize = data.dtype.itemsize
    ext = data.shape
    k = 0  # runs are contiguous from axis k on: the trailing axes are covered in full
    for axis in range(len(shape) - 1, -1, -1):
        if ext[axis] != shape[axis]:
            k = axis
            break
    tail = int(np.prod(shape[k + 1 :], dtype=np.int64)) if shape else 1
    run = (ext[k] if shape else 1) * tail * itemsize
    flat = byte_view(data)
    fd = files.open_target(target, os.O_WRONLY, target)
    try:
        if data.size == 0:
            return
        strides = [int(np.prod(shape[a + 1 :], dtype=np.int64)) for a in range(len(shape))]
        for i, lead in enumerate(np.ndindex(*ext[:k])):
            elem = sum((start[a] + lead[a]) * strides[a] for a in range(k))
            elem += (start[k] * strides[k]) if shape else 0
            files.write_at(fd, flat[i * run : (i + 1) * run], offset + elem * itemsize, path=target)
    finally:
        os.close(fd)


def append_blob(target: str, blob, *, locked: bool = False) -> int:
    """Append one blob at the next aligned offset of ``target`` and return that offset."""
    return append_blobs(target, [blob], locked=locked)[0]


_APPEND_BUFFERS = 512  # buffers per writev (the system allows 1024)
_APPEND_BYTES = 64 << 20


def append_blobs(target: str, blobs, *, locked: bool = False) -> list[int]:
    """Append blobs, each at the next aligned offset of ``target``; returns their offsets.

    Any number of processes may call this at once: blobs go out in O_APPEND writevs, each
    blob with its zero padding to the next multiple of 64 and never split between two
    calls, so the kernel assigns offsets in completion order and the end of file stays
    aligned. Several blobs share one writev (up to 256 blobs or 64 MiB), so a task writing
    many small chunks makes few system calls.

    ``locked`` (network filesystems, where O_APPEND of two clients may overwrite each
    other): the offsets are reserved under an exclusive flock of ``target`` instead; the
    end of file is read after taking it (taking a lock revalidates NFS's cached size) and
    the bytes are flushed to the server before it is let go."""
    views = [byte_view(b) for b in blobs]
    if locked:
        return _append_locked(target, views)
    offsets: list[int] = []
    fd = files.open_target(target, os.O_WRONLY | os.O_APPEND, target)
    try:
        start = 0
        while start < len(views):
            stop, size = start, 0
            while (
                stop < len(views)
                and stop - start < _APPEND_BUFFERS // 2
                and (stop == start or size + views[stop].nbytes <= _APPEND_BYTES)
            ):
                size += views[stop].nbytes + (-views[stop].nbytes % constants.ALIGNMENT)
                stop += 1
            buffers, lengths = [], []
            for view in views[start:stop]:
                pad = -view.nbytes % constants.ALIGNMENT
                buffers += [view, bytes(pad)] if pad else [view]
                lengths.append(view.nbytes + pad)
            n = os.writev(fd, buffers)
            if n != size:
                raise ZTensorError(
                    f"short append ({n} of {size} bytes; disk full, or a chunk over 2 GiB)",
                    path=target,
                )
            pos = os.lseek(fd, 0, os.SEEK_CUR) - n
            for length in lengths:
                offsets.append(pos)
                pos += length
            start = stop
    finally:
        os.close(fd)
    return offsets


def _append_locked(target: str, views: list[memoryview]) -> list[int]:
    """``append_blobs`` by offsets reserved under the file's flock (network filesystems)."""
    fd = files.open_target(target, os.O_RDWR, target)
    try:
        files.lock(fd)  # the writers' lock of the file: held for the appends only
        pos = os.fstat(fd).st_size
        pos += -pos % constants.ALIGNMENT
        offsets = []
        for view in views:
            offsets.append(pos)
            pos = files.write_at(fd, view, pos, path=target)
            pad = -view.nbytes % constants.ALIGNMENT
            if pad:
                pos = files.write_at(fd, bytes(pad), pos, path=target)
        try:
            os.fsync(fd)  # on the server before the next client reads the size
        except OSError as exc:
            raise files.system_error(exc, target, "sync") from None
    finally:
        os.close(fd)  # releases the lock
    return offsets


def region_digest(target: str, offset: int, length: int, algorithm: str) -> str:
    """Digest of a byte range of the target (raw regions filled by many writers)."""
    h = digests.Hasher(algorithm)
    fd = files.open_target(target, os.O_RDONLY, target)
    try:
        done = 0
        while done < length:
            piece = files.read_at(fd, min(length - done, 1 << 24), offset + done)
            if not piece:
                raise ZTensorError("file ended inside a region", path=target)
            h.update(piece)
            done += len(piece)
    finally:
        os.close(fd)
    return h.text()


def commit(
    plan: ParallelPlan, objects: Mapping[str, Object], chunked_updates: Mapping[str, Any] = ()
) -> int:
    """Write the manifest (the file's objects plus ``objects``, whose blobs the workers
    wrote, plus each chunked object of ``chunked_updates`` once its new index segment is
    written: ``layouts.chunked.Update``) and footer, make the file visible, and end the
    append (its lock file goes). Returns the file's size. On failure the write is undone."""
    w = Writer.adopt(
        plan.path,
        plan.mode,
        target=plan.target,
        base_size=plan.base_size,
        attributes=plan.attributes,
        durable=plan.durable,
        token=plan.token,
    )
    try:
        for name, obj in objects.items():
            w.put_object(name, obj)
        for name, update in dict(chunked_updates).items():
            comps = [w.put_blob(e, checksum=seg.digest) for seg, e in update.new]
            w.put_object(name, update.finish(comps))
        size = w.finalize()  # mode "a": removes the marker once the footer is written
    except BaseException:
        w.abort()
        abort(plan)
        raise
    if plan.mode == "a":  # an append that recorded nothing left the file as it was
        files.remove_marker(plan.path, plan.token)
    return size


def abort(plan: ParallelPlan) -> None:
    """Undo a parallel write that will not be committed: the previous file stays as it was.

    Mode "a" takes the marker's flock first (waiting for the writes in flight), then the
    writers' lock of the file: the order every holder of both follows (SPEC §9.3)."""
    if plan.mode != "a":
        files.unlink_quietly(plan.target)
        return
    try:
        fd = os.open(plan.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # our first task never ran, or the write was committed or undone
    try:
        files.lock(fd)  # waits for the writes in flight (WriteFence)
        if _lock_token(fd) != plan.token or not files.same_file(fd, plan.lock_path):
            return  # another append's marker, or ours is gone: not ours to undo
        marker = files.Marker.decode(os.pread(fd, 4096, 0))
        try:
            held = files.FileLock.acquire(plan.path, wait=60.0)
        except ZTensorError:
            held = None  # the file is gone or busy: the marker still names the tail
        if held is None:
            return
        with held:
            if marker is not None and marker.names(held.ident):
                try:
                    held.truncate(marker.base, durable=plan.durable)
                except ZTensorError:
                    return  # the marker stays: repair(abandon=True) cuts the tail
            files.unlink_quietly(plan.lock_path)  # from now on no worker writes
    finally:
        os.close(fd)
