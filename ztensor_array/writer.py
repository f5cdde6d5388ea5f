"""Writer: streams blobs to disk in add order, then writes the manifest and footer.

``mode="w"`` and ``"x"`` write into an unnamed temporary file in the target folder
(O_TMPFILE, or a hidden named file where that is unavailable) that only becomes visible at
the path when finalized, so an exception or a kill never leaves a half-written file and
never harms a previous file at the path. ``mode="a"`` appends blobs after the current end of
a finalized file and then a new manifest and footer: the previous state stays readable
until the new footer is complete (see SPEC.md, "Appending").

Compressed components are encoded on a small thread pool (zstd releases the GIL) while
earlier blobs are written, and are written strictly in add order, so the bytes are exactly
the reference writer's.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import attributes as attrs_codec
from . import codecs, constants, dtypes, files, manifest, sources, validation
from .codecs import byte_view, digests
from .codecs.policy import normalize_checksum, normalize_compress
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    UnsupportedError,
    ZTensorError,
)
from .interop import as_array
from .layouts import dense, ggml, layout_for, quantized, sparse
from .manifest import Component, Manifest, Object
from .reader import Parts, Reader, refuse_marker

if TYPE_CHECKING:  # concurrent.futures costs ~15 ms at import: loaded when first compressing
    from concurrent.futures import Future, ThreadPoolExecutor

    from .codecs.abc import StoredCodec

_MODES = ("w", "x", "a")
# to_ztensor's modes (xarray/zarr's words) -> the Writer's: "w-" and "x" create, "w"
# replaces, "a" and "r+" change a file in place ("a-" is "a" that keeps existing variables)
STORE_MODES = {"w": "w", "w-": "x", "x": "x", "a": "a", "a-": "a", "r+": "a"}
# Gathered writes go out when this many buffers or bytes wait (IOV_MAX is 1024 on Linux)
_GATHER_IOVECS = 512
_GATHER_BYTES = 64 << 20
# Compressed blobs queued at most, beyond 2 per worker, under copy_inputs=False (see _drain)
_QUEUE_ITEMS = 64
_QUEUE_BYTES = 64 << 20
INLINE_BYTES = 64 << 10  # data up to this is encoded in the calling thread, not on the pool
_ZEROS = bytes(64)  # padding up to the next 64-byte boundary


@dataclass
class _Pending:
    """A component whose blob is queued: raw bytes or a future of encoded bytes."""

    name: str
    role: str
    dtype: str
    type: str | None
    encoding: str
    checksum: str | None
    payload: Future | memoryview
    nbytes: int = 0  # input bytes, while it is being encoded


def writer_mode(mode: str) -> str:
    """The Writer mode ("w", "x", "a") of a ``to_ztensor``/store mode."""
    try:
        return STORE_MODES[mode]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"mode must be one of {sorted(STORE_MODES)}, got {mode!r}"
        ) from None


def _encode(data: np.ndarray, codec: StoredCodec, checksum: str | None) -> tuple[tuple, str | None]:
    """An encoded blob in pieces (written back to back, never joined) and its digest."""
    parts = codec.encode_parts(data)
    if not checksum:
        return parts, None
    hasher = digests.Hasher(checksum)
    for part in parts:
        hasher.update(part)
    return parts, hasher.text()


def _nbytes(blob) -> int:
    """Size of a blob given as one buffer or as a tuple of pieces."""
    if isinstance(blob, tuple):
        return sum(memoryview(part).nbytes for part in blob)
    return memoryview(blob).nbytes


class Writer:
    """Write a .zt file. Use as a context manager; ``finalize()`` runs on clean exit.

    mode: "w" create or replace, "x" fail if the path exists, "a" append to a finalized file.
    durable: fsync blobs, then the manifest, then the folder (power-loss safety).
    copy_inputs: compressed tensors are encoded in the background, so by default a writable
    input is copied first; pass False if you will not modify the arrays before finalize().
    path may be an fsspec URL (with ``storage_options``): the file is written to a local
    temporary file and uploaded whole by ``finalize()``, so the object appears only complete
    (an aborted write leaves no object and no temporary file); mode "a" needs a local file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "w",
        *,
        durable: bool = False,
        workers: int | None = None,
        copy_inputs: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
        self._upload: sources.Upload | None = None
        dest = sources.remote_destination(path, storage_options)
        if dest is not None:
            if mode == "a":
                raise UnsupportedError(
                    "mode 'a' needs a local file: a remote object cannot be modified in "
                    "place (append to a local copy and write it whole)",
                    path=dest.name,
                )
            self._upload = sources.Upload(dest, exclusive=mode == "x")
            path = self._upload.local  # written here, uploaded by finalize()
        self.path = files.fspath(path)
        self.mode = mode
        self.durable = durable
        self.attributes: dict[str, Any] = {}
        self._workers = workers or min(4, os.cpu_count() or 1)
        self._copy_inputs = copy_inputs
        self._pool: ThreadPoolExecutor | None = None
        self._queue: deque[_Pending] = deque()
        self._objects: dict[str, Object] = {}  # added (or replacing) since opening
        self._base = Manifest({})  # append mode: the finalized file's manifest, as it was read
        self._removed: set[str] = set()  # append mode: objects of the base dropped
        self._base_span = (0, 0)  # append mode: where the base's manifest bytes are
        self._base_attributes: dict[str, Any] = {}
        self._incoming: dict[str, dict[str, Component]] = {}
        self._planned: dict[str, tuple] = {}  # name -> (shape, format, attributes, roles)
        self._pos = 0
        self._gathered: list[memoryview] = []  # written but not yet sent: they end at _pos
        self._gathered_bytes = 0
        self._lock = threading.RLock()
        self._fd = -1
        self._tmp_name: str | None = None
        self._done = False
        self._append_base = 0
        self._streaming: str | None = None
        self._flock: files.FileLock | None = None  # mode "a": the writers' lock, held
        self._marker: files.Marker | None = None  # mode "a": our append marker
        self._held: files.FileLock | None = None  # mode "w": the caller's lock (compact)
        if mode == "a":
            self._open_append()
        else:
            self._open_new()

    @classmethod
    def adopt(
        cls,
        path: str | os.PathLike,
        mode: str,
        *,
        target: str | None = None,
        base_size: int = 0,
        attributes: Mapping[str, Any] | None = None,
        durable: bool = False,
        token: str = "",
    ) -> Writer:
        """A Writer that finishes a file whose blobs other processes wrote (the parallel
        write protocol, ``parallel.py``): mode "w"/"x" takes over the temp file ``target``,
        mode "a" the file at ``path`` whose finalized state ended at ``base_size`` (its
        objects are read there) and whose append marker holds ``token``. Record the new
        objects with ``put_object``, then ``finalize``."""
        self = cls.__new__(cls)
        self._adopted = (target, base_size, token)
        cls.__init__(self, path, mode, durable=durable)
        self.attributes = dict(attributes or {})
        return self

    # ------------------------------------------------------------------ file handling

    def _open_new(self) -> None:
        adopted = getattr(self, "_adopted", None)
        if adopted is not None:  # a parallel write's temp file, blobs already in it
            self._tmp_name = adopted[0]
            self._fd = files.open_target(adopted[0], os.O_RDWR, self.path)
            self._pos = os.fstat(self._fd).st_size
            return
        self._fd, self._tmp_name = files.create_temp(self.path, exclusive=self.mode == "x")
        self._pos = 0
        self._write_all(constants.MAGIC)

    def _open_append(self) -> None:
        # One writer at a time (SPEC §9.3): the lock first, then the marker check; two
        # appenders would interleave blobs and lose a manifest
        self._flock = files.FileLock.acquire(self.path, missing="no such file to append to")
        self._fd = self._flock.fd
        adopted = getattr(self, "_adopted", None)
        try:
            size = self._flock.size
            if adopted is not None:  # a parallel append's commit: its marker must be there
                marker = self._flock.marker()
                if marker is None or marker.token != adopted[2] or marker.kind != "parallel":
                    raise ZTensorError(
                        "the parallel append was aborted (its marker is gone)", path=self.path
                    )
            else:
                refuse_marker(self._flock)
                marker = None
            # a parallel append's workers wrote after the finalized state: read it there
            end = adopted[1] if adopted is not None else size
            with Reader(self.path, end=end) as r:
                if r.manifest_offset is None:
                    raise UnsupportedError(
                        "legacy v0.1 files cannot be appended to; migrate them first",
                        path=self.path,
                    )
                if (r.identity.dev, r.identity.ino) != self._flock.ident:
                    raise ZTensorError("file changed while opening for append", path=self.path)
                self._base = r.manifest  # kept as it is: no object is parsed to append
                # where its bytes are: the append copies its entries from there
                self._base_span = (r.manifest_offset, r.size - constants.FOOTER_SIZE)
                self.attributes = r.attributes
                self._base_attributes = r.attributes
            if marker is None:  # before any byte after the finalized state is written
                marker = self._flock.begin_append("append", size, durable=self.durable)
            self._marker = marker
        except BaseException:
            self._unlock()
            raise
        self._pos = size
        self._append_base = end

    def _unlock(self) -> None:
        """Close the file and let go of the writers' lock."""
        if self._flock is not None:
            self._flock.release()
            self._flock = None
            self._fd = -1

    def _write_all(self, data, *, gather: bool = False) -> None:
        """Write ``data`` (a buffer or a tuple of pieces) at the current position.

        ``gather``: the buffer stays unchanged until finalize (a raw array under
        ``copy_inputs=False``, or padding), so it may wait and go out with its neighbours in
        one ``pwritev``: one big write costs measurably less than the same bytes in hundreds
        of writes. Any other write goes out at once, in the same ``pwritev`` as the gathered
        ones before it (the padding in front of a blob costs no call of its own), so the
        file is always written in order.
        """
        if isinstance(data, tuple):  # a blob in pieces
            for part in data:
                self._write_all(part, gather=gather)
            return
        view = memoryview(data).cast("B")
        if view.nbytes:
            self._gathered.append(view)
            self._gathered_bytes += view.nbytes
            self._pos += view.nbytes
        if (
            not gather
            or len(self._gathered) >= _GATHER_IOVECS
            or self._gathered_bytes >= _GATHER_BYTES
        ):
            self._write_gathered()

    def _write_gathered(self) -> None:
        """Send the gathered buffers, which end at ``_pos``, in as few ``pwritev`` as can be."""
        views = self._gathered
        if not views:
            return
        self._gathered = []
        pos = self._pos - self._gathered_bytes
        self._gathered_bytes = 0
        first = 0
        while first < len(views):
            try:
                n = os.pwritev(self._fd, views[first:] if first else views, pos)
            except OSError as exc:  # EFBIG, ENOSPC, EIO: the system names no file
                raise files.system_error(exc, self.path, "write") from None
            pos += n
            while first < len(views) and n >= views[first].nbytes:  # skip what was written
                n -= views[first].nbytes
                first += 1
            if n:  # a short write stopped inside this buffer
                views[first] = views[first][n:]

    def _pad(self) -> None:
        gap = -self._pos % constants.ALIGNMENT
        if gap:
            self._write_all(_ZEROS[:gap], gather=True)

    # ------------------------------------------------------------------ adding

    def _check_name(self, name: str, *, replacing: bool = False) -> None:
        if self._done:
            raise ZTensorError("writer is finalized or closed", path=self.path)
        if self._streaming is not None:
            raise ZTensorError(f"stream of {self._streaming!r} is still open", path=self.path)
        if not isinstance(name, str):
            raise ArgumentTypeError(
                f"tensor names must be str, not {type(name).__name__}", path=self.path
            )
        if "\x00" in name:  # C readers (ztensor 1.1.1) cut the name there: wrong tensor
            raise ZTensorError("tensor names must not contain U+0000", path=self.path, obj=name)
        if not name.isascii():
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: not storable as CBOR text
                raise ZTensorError(
                    "tensor names must be valid Unicode (no lone surrogates)",
                    path=self.path,
                    obj=ascii(name),
                ) from None
        exists = name in self or name in self._incoming
        if exists and not replacing:
            raise ZTensorError(
                "an object of this name already exists (use replace() in append mode)",
                path=self.path,
                obj=name,
            )

    def add_tensor(
        self,
        name: str,
        array: Any,
        compress: bool | int = False,
        *,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a dense tensor (numpy, torch or array-like; any dtype of the table).
        ``compress`` may be positional, as in the reference's ``add_tensor``."""
        self._check_name(name)
        with self._naming(name):
            arr = as_array(array)
        try:
            storage, type_, data = dense.encode(arr)
        except ZTensorError as exc:
            raise ZTensorError(exc.reason, path=self.path, obj=name) from None
        # The caller's own memory (not a copy made here): under copy_inputs=False it stays
        # as it is until finalize, so its write may be gathered with the next ones
        borrowed = (
            not self._copy_inputs
            and (arr is array or arr.base is not None)
            and np.may_share_memory(data, arr)
        )
        self._add_object(
            name,
            "dense",
            arr.shape,
            {"data": (storage, type_, data)},
            compress,
            checksum,
            attributes,
            borrowed=borrowed,
        )

    def add_sparse_csr(
        self,
        name: str,
        values,
        indices,
        indptr,
        shape,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._check_name(name)
        with self._naming(name):
            comps = sparse.encode_csr(as_array(values), as_array(indices), as_array(indptr), shape)
        self._add_sparse(name, "sparse_csr", shape, comps, compress, checksum, attributes)

    def add_sparse_coo(
        self,
        name: str,
        values,
        indices,
        shape,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """``indices``: (ndim, nnz) or the flat structure-of-arrays form."""
        self._check_name(name)
        with self._naming(name):
            comps = sparse.encode_coo(as_array(values), as_array(indices), shape)
        self._add_sparse(name, "sparse_coo", shape, comps, compress, checksum, attributes)

    def add_sparse(
        self,
        name: str,
        matrix,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Add any scipy.sparse array or matrix (CSR stays CSR, everything else as COO)."""
        self._check_name(name)
        with self._naming(name):
            fmt, comps, shape = sparse.from_scipy(matrix)
        self._add_sparse(name, fmt, shape, comps, compress, checksum, attributes)

    @contextmanager
    def _naming(self, name: str):
        """Re-raise a ZTensorError from an encoder with this file and object named in it."""
        try:
            yield
        except ZTensorError as exc:
            raise type(exc)(exc.reason, path=self.path, obj=name) from None

    def _add_sparse(self, name, fmt, shape, comps, compress, checksum, attributes) -> None:
        parts = {}
        for role, arr in comps.items():
            storage, type_, data = dense.encode(arr)
            parts[role] = (storage, type_, data)
        self._add_object(
            name, fmt, tuple(int(s) for s in shape), parts, compress, checksum, attributes
        )

    def add_object(
        self,
        name: str,
        fmt: str,
        shape,
        components: Mapping[str, np.ndarray],
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Low-level: an object of any format from its component arrays (written in the
        given order). Layout modules (chunked, quantized) build on this."""
        self._check_name(name)
        parts = {role: dense.encode(as_array(a)) for role, a in components.items()}
        self._add_object(
            name, fmt, tuple(int(s) for s in shape), parts, compress, checksum, attributes
        )

    def add_quantized_group(
        self,
        name: str,
        packed_weight,
        scales,
        zeros,
        shape,
        *,
        bits: int,
        group_size: int,
        packing: str | None = None,
        g_idx=None,
        zero_offset: int = 0,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """A GPTQ-style `quantized_group` (SPEC.md): GPTQ's qweight, scales and qzeros (or
        float zero points) as they are, ``shape`` = [out_features, in_features]. ``packing``
        defaults to the GPTQ packing of ``bits`` in the qweight dtype ("8_per_i32" at 4 bits);
        ``zero_offset=1`` for checkpoints that store zero points minus one (GPTQ v1)."""
        self._check_name(name)
        comps, attrs = quantized.encode(
            name,
            as_array(packed_weight),
            as_array(scales),
            as_array(zeros),
            shape,
            bits=bits,
            group_size=group_size,
            packing=packing,
            g_idx=None if g_idx is None else as_array(g_idx),
            zero_offset=zero_offset,
            attributes=attributes,
        )
        self.add_object(
            name,
            "quantized_group",
            shape,
            comps,
            compress=compress,
            checksum=checksum,
            attributes=attrs,
        )

    def add_ggml_quantized(
        self,
        name: str,
        blocks,
        ggml_type,
        shape,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """GGUF/GGML quantized blocks kept byte for byte (`ggml_quantized`, SPEC.md).

        ``blocks``: the tensor's raw bytes as uint8 (any shape, e.g. gguf's ``tensor.data``);
        ``ggml_type``: name ("Q4_0"), ``gguf.GGMLQuantizationType`` or its integer id;
        ``shape``: the logical row-major shape (GGUF's dims reversed).
        """
        self._check_name(name)
        comps, attrs = ggml.encode(name, as_array(blocks), ggml_type, shape, attributes)
        self.add_object(
            name,
            "ggml_quantized",
            shape,
            comps,
            compress=compress,
            checksum=checksum,
            attributes=attrs,
        )

    def _add_object(
        self, name, fmt, shape, parts, compress, checksum, attributes, *, borrowed: bool = False
    ) -> None:
        level = normalize_compress(compress)
        checksum = normalize_checksum(checksum)
        attrs = attrs_codec.check_object(attributes, path=self.path, obj=name)
        if not parts:  # complete as it is (a chunked object with no chunk written, §4.3)
            self._put_empty(name, Object(tuple(int(s) for s in shape), fmt, {}, attrs))
            return
        with self._lock:
            self._incoming[name] = {}
            self._planned[name] = (tuple(int(s) for s in shape), fmt, attrs, list(parts))
            for role, (storage, type_, data) in parts.items():
                self._queue_component(
                    name, role, storage, type_, data, level, checksum, borrowed=borrowed
                )

    def _put_empty(self, name: str, obj: Object) -> None:
        """Record an object without components after its layout's check (nothing else
        would check it before a reader refuses the whole file)."""
        layout = layout_for(obj.format)
        if layout is not None:
            layout.check(name, obj, self.path)
        with self._lock:
            self._objects[name] = obj

    def _encode_later(self, data: np.ndarray, codec: StoredCodec, checksum: str | None) -> Future:
        """Encode (and digest) ``data`` on the writer's thread pool."""
        if data.nbytes <= INLINE_BYTES:  # encoded now: nothing to copy
            return self._run(_encode, data, codec, checksum, now=True)
        # The caller may reuse its buffer as soon as we return: encode from a copy,
        # unless it promised (copy_inputs=False) to leave its arrays alone until the end.
        src = data.copy() if self._copy_inputs and data.flags.writeable else data
        return self._run(_encode, src, codec, checksum)

    def _run(self, fn, *args, now: bool = False) -> Future:
        """``fn(*args)`` on the writer's thread pool, or ``now`` in this thread (small
        work: starting the pool's threads costs more than encoding a few KiB)."""
        from concurrent.futures import Future

        if now:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # ~15 ms: on first compression

            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ztensor-compress")
        return self._pool.submit(fn, *args)

    def _put_blob(
        self, storage, type_, encoding: str, blob, digest, *, gather: bool = False
    ) -> Component:
        """Write ``blob`` (one buffer or a tuple of pieces) at the next aligned offset;
        ``gather`` as in ``_write_all``."""
        self._pad()
        offset = self._pos
        self._write_all(blob, gather=gather)
        return Component(storage, offset, _nbytes(blob), encoding, digest, None, type_)

    def _queue_component(
        self,
        name,
        role,
        storage,
        type_,
        data: np.ndarray,
        level: int,
        checksum: str | None,
        *,
        borrowed: bool = False,
    ) -> None:
        """``borrowed``: ``data`` is the caller's memory, unchanged until finalize."""
        if level:
            codec = codecs.compressor(level)
            fut = self._encode_later(data, codec, checksum)
            self._queue.append(
                _Pending(name, role, storage, type_, codec.encoding, checksum, fut, data.nbytes)
            )
            self._drain(limit=2 * self._workers)
        else:
            self._drain(limit=0)
            self._write_component(
                name, role, storage, type_, codecs.RAW, byte_view(data), checksum, None, borrowed
            )

    def _drain(self, limit: int) -> None:
        """Write queued blobs in order until at most ``limit`` remain (or none is ready).

        Under ``copy_inputs=False`` more may stay queued while their inputs total at most
        ``_QUEUE_BYTES``: queued inputs are the caller's arrays (no memory of ours), and a
        deeper queue keeps every encoder busy while this thread writes finished frames.
        """
        while self._queue and (self._must_wait(limit) or self._queue[0].payload.done()):
            item = self._queue.popleft()
            frame, digest = item.payload.result()
            self._write_component(
                item.name, item.role, item.dtype, item.type, item.encoding, frame, None, digest
            )

    def _must_wait(self, limit: int) -> bool:
        n = len(self._queue)
        if n <= limit:
            return False
        if self._copy_inputs or not limit:
            return True
        return n > _QUEUE_ITEMS or sum(item.nbytes for item in self._queue) > _QUEUE_BYTES

    def _write_component(
        self, name, role, storage, type_, encoding, blob, checksum, digest, gather=False
    ) -> None:
        if checksum and digest is None:
            digest = digests.compute(checksum, blob)
        # gather only the caller's arrays: they cost no memory while they wait (compressed
        # frames and copies made here would: they are written, then freed, at once)
        self._incoming[name][role] = self._put_blob(
            storage, type_, encoding, blob, digest, gather=gather
        )
        shape, fmt, attrs, roles = self._planned[name]
        if len(self._incoming[name]) == len(roles):
            comps = self._incoming.pop(name)
            self._objects[name] = Object(shape, fmt, {r: comps[r] for r in roles}, attrs)

    # ------------------------------------------------------------------ append-mode edits

    def __contains__(self, name: object) -> bool:
        """Whether the file as written so far holds an object of that name."""
        return name in self._objects or (name in self._base.objects and name not in self._removed)

    def remove(self, name: str) -> None:
        """Drop an object (append mode). Its bytes stay until ``compact``."""
        self._flush()
        if name not in self:
            raise ZTensorError("no such object to remove", path=self.path, obj=name)
        self._objects.pop(name, None)
        if name in self._base.objects:
            self._removed.add(name)

    def replace(self, name: str, array: Any, **kwargs) -> None:
        """Write a new blob for an existing name; the old blob is orphaned until compact."""
        self._flush()
        before = (self._objects.get(name), name in self._removed)
        self.remove(name)
        try:
            self.add_tensor(name, array, **kwargs)
            self._flush()
        except BaseException:
            old, was_removed = before
            if old is not None:
                self._objects[name] = old
            if not was_removed:
                self._removed.discard(name)
            raise

    def put_blob(self, data: np.ndarray, *, checksum: str | None = None) -> Component:
        """Write one raw component (an array of any dtype of the table) at the next aligned
        offset and return it; the caller makes it part of an object (``put_object``)."""
        storage, type_, arr = dense.encode(as_array(data))
        blob = byte_view(arr)
        digest = digests.compute(checksum, blob) if checksum else None
        self._flush()
        return self._put_blob(storage, type_, codecs.RAW, blob, digest)

    def put_object(self, name: str, obj: Object) -> None:
        """Record an object whose blobs are already in the file (written by the workers of a
        parallel write); replaces one of that name."""
        self._check_name(name, replacing=True)
        self._objects[name] = obj

    def copy_object(self, name: str, obj: Object, stored: Mapping[str, Any]) -> None:
        """Write an object's stored component bytes verbatim (encoding, digest and all).

        ``stored`` maps each role to its stored bytes; used by compact, merge and rewrite
        tools that must keep compressed blobs and digests exactly as they are.
        """
        self._check_name(name)
        self._flush()
        comps = {}
        for role in sorted(obj.components, key=lambda r: obj.components[r].offset):
            comp = obj.components[role]
            blob = memoryview(stored[role]).cast("B")
            if blob.nbytes != comp.length:
                raise ZTensorError(
                    f"stored bytes are {blob.nbytes} long, manifest says {comp.length}",
                    path=self.path,
                    obj=name,
                    component=role,
                )
            self._pad()
            offset = self._pos
            self._write_all(blob)
            comps[role] = comp.moved(offset)
        self._objects[name] = Object(
            obj.shape, obj.format, {r: comps[r] for r in obj.components}, obj.attributes
        )

    def copy_chunked(self, name: str, obj: Object, chunks: Iterable[tuple]) -> None:
        """Write a ``chunked`` object's chunks as given (``chunks``: (grid index, component,
        stored bytes), consumed one at a time) and index them afresh (one segment per
        encoding and digest algorithm, over the whole grid): compact, merge, rewrites and
        converters copy chunked objects this way, their chunks not all being components."""
        from .layouts import chunked  # concurrent.futures comes with it: chunked files only

        self._check_name(name)
        self._flush()
        copied = {}
        for index, comp, blob in chunks:
            blob = memoryview(blob).cast("B")
            if blob.nbytes != comp.length:
                raise ZTensorError(
                    f"stored bytes are {blob.nbytes} long, the index says {comp.length}",
                    path=self.path,
                    obj=name,
                    component=chunked.chunk_role(index),
                )
            self._pad()
            copied[index] = comp.moved(self._pos)
            self._write_all(blob)
        update = chunked.rebuilt(obj, copied)
        comps = [self.put_blob(e, checksum=seg.digest) for seg, e in update.new]
        self._objects[name] = update.finish(comps)

    def copy_from(self, reader, name: str, new_name: str | None = None) -> None:
        """Copy an object of an open Reader verbatim (stored bytes, encoding, digests)."""
        obj = reader.manifest.objects[name]
        new_name = name if new_name is None else new_name
        if obj.format == "chunked":
            blobs = reader.chunk_blobs(name)
            self.copy_chunked(new_name, obj, ((i, c, b) for i, (c, b) in blobs.items()))
            return
        self.copy_object(
            new_name, obj, {role: reader.stored_bytes(name, role) for role in obj.components}
        )

    def write_chunked(
        self,
        name: str,
        base: Object,
        shape,
        box,
        source: Any,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        band_bytes: int = 8 << 20,
    ) -> None:
        """Write ``source`` into the ``chunked`` object ``base``, grown to ``shape`` first:
        ``box`` ((start, stop) per axis) is where ``source`` (shaped like the box: numpy, or
        a lazy array with ``compute()``) lands. Only the chunks the box touches get new
        blobs (a chunk it covers in part is the stored chunk, digest checked, patched); the
        others keep theirs (layouts/chunked plans and encodes, as the parallel writer does).
        ``base`` may be a new object with no chunks (then nothing is read back). A lazy
        source is computed a band of chunks along axis 0 at a time when the band holds at
        most ``band_bytes``, else chunk by chunk. If an exception escapes, nothing is
        recorded for ``name``."""
        from .layouts import chunked  # concurrent.futures comes with it: chunked files only

        self._check_name(name, replacing=True)
        for role, comp in base.components.items():
            if self.mode != "a" or comp.offset + comp.length > self._append_base:
                raise ZTensorError(
                    "component is not part of the finalized file (write_chunked changes an "
                    "object of the file this append mode writer opened)",
                    path=self.path,
                    obj=name,
                    component=role,
                )
        grid = chunked.grown(base, shape)
        box = tuple((int(a), int(b)) for a, b in box)
        level = normalize_compress(compress)
        checksum = normalize_checksum(checksum)
        self._flush()
        old_state = old_parts = None
        if base.components and self.mode == "a":
            old_state = Reader(self.path, verify=True, end=self._append_base)
            old_parts = Parts(old_state, name, True)
        written: dict[tuple, Component] = {}
        inflight: deque[tuple[tuple, Future]] = deque()
        itemsize = dtypes.itemsize(grid.dtype)
        # small work is encoded in this thread: a pool's hand-off costs more than a few KiB
        cells = min(math.prod(b - a for a, b in box), math.prod(grid.chunk_shape))
        inline = cells * itemsize <= INLINE_BYTES

        def drain(limit: int) -> None:
            while len(inflight) > limit:
                index, fut = inflight.popleft()
                blob, comp = fut.result()
                self._pad()
                written[index] = comp.moved(self._pos)
                self._write_all(blob, gather=True)  # sent by the index's put_blob at the latest

        def empty_of(write):
            return lambda: chunked.fill_array(grid, write.extent, path=self.path, name=name)

        def chunk_of(write, part) -> np.ndarray:
            old = None
            if write.patch and old_parts is not None:
                stored = old_state.metadata(name).object
                old = chunked.read_chunk(stored, old_parts, write.index, path=self.path, name=name)
            return chunked.assemble(write, part, old, empty_of(write))

        try:
            for write, part in _source_parts(
                chunked.plan_write(grid, box), source, band_bytes, itemsize
            ):
                data = chunk_of(write, _as_stored(part, grid.dtype, self.path, name))
                if not inline:
                    data = np.array(data) if self._copy_inputs and data.base is not None else data
                fut = self._run(chunked.encode_chunk, data, level, checksum, now=inline)
                inflight.append((write.index, fut))
                drain(2 * self._workers)
            drain(0)
            update = chunked.updated(
                base,
                grid,
                box,
                written,
                attributes=attributes,
                get=old_parts,
                path=self.path,
                name=name,
            )
            comps = [self.put_blob(e, checksum=seg.digest) for seg, e in update.new]
            self._write_gathered()  # nothing of the caller's arrays is held past the call
        except BaseException:
            for _, fut in inflight:
                fut.cancel()
            raise
        finally:
            if old_state is not None:
                old_state.close()
        self._objects[name] = update.finish(comps)

    def stream_tensor(
        self,
        name: str,
        shape,
        dtype,
        *,
        compress: bool | int = False,
        checksum: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> TensorStream:
        """Write a dense tensor block by block (C order) without holding it in memory.

        Use as a context manager: ``with w.stream_tensor(...) as s: s.write(block)``. If the
        blocks do not add up to the shape, or an exception escapes, the partial blob is cut
        away and the file keeps its previous state.
        """
        self._check_name(name)
        self._flush()
        return TensorStream(
            self,
            name,
            shape,
            dtype,
            normalize_compress(compress),
            normalize_checksum(checksum),
            attributes,
        )

    def _rewind(self, pos: int) -> None:
        """Cut everything written after ``pos`` (a failed stream)."""
        self._write_gathered()
        self._pos = pos
        os.ftruncate(self._fd, pos)

    # ------------------------------------------------------------------ finishing

    def _flush(self) -> None:
        """Every queued blob written and sent to the file."""
        self._drain(limit=0)
        self._write_gathered()

    def finalize(self) -> int:
        """Write the manifest and footer and make the file visible. Returns its size."""
        if self._done:
            raise ZTensorError("writer is already finalized or closed", path=self.path)
        try:
            self._flush()
            unchanged = not self._objects and not self._removed
            if self.mode == "a" and unchanged and self.attributes == self._base_attributes:
                # nothing to record (blobs written for objects since removed included):
                # the file goes back to exactly what it was
                self.abort()
                return self._append_base
            attrs = attrs_codec.encode_root(self.attributes, self.path)
            if self.mode == "a":
                mbytes, kept = self._appended_manifest(attrs)
            else:
                mbytes = manifest.encode(Manifest(self._objects, attrs))
            count = len(kept.objects) if self.mode == "a" else len(self._objects)
            if count > constants.MAX_OBJECTS:
                raise ZTensorError(
                    f"the file would hold {count} objects, over the {constants.MAX_OBJECTS} "
                    "every reader of this package opens (SPEC §8)",
                    path=self.path,
                )
            if len(mbytes) > constants.MAX_MANIFEST_SIZE:
                raise ZTensorError(
                    f"the manifest would be {len(mbytes)} bytes, over the "
                    f"{constants.MAX_MANIFEST_SIZE}-byte limit every reader enforces",
                    path=self.path,
                )
            if self.durable:
                self._fsync()
            if self._flock is not None:
                self._flock.check_named()  # compact or a rename replaced the file: fail
            start = self._pos
            self._write_all(mbytes + manifest.footer(mbytes))
            size = self._pos
            if self.durable:
                self._fsync()
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._marker is not None:  # the new state is complete: the append is over
            self._flock.end_append(self._marker)
        self._release()
        if self._upload is not None:  # the object appears whole, or not at all
            self._upload.commit()
        if self.mode == "a":  # the next open of this state in this process decodes nothing
            validation.remember(self.path, start, mbytes, kept)
        return size

    def _appended_manifest(self, attrs) -> tuple[bytes, Manifest]:
        """The manifest of an append: the entries of the objects kept are copied from the
        base's bytes as they are (``manifest.splice``; when the base is laid out otherwise,
        every entry is encoded from its decoded map, unknown keys and all), the added ones
        encoded after them; and that manifest as a table, the added objects validated,
        ready for the memo."""
        base = self._base
        table = base.objects
        added = self._objects
        dropped = self._removed | {n for n in added if n in table}
        source = self._base_manifest_bytes()
        # the marker's token: the manifest that ends this append says so (SPEC §9.3)
        extra = {**(base.extra or {}), files.APPEND_KEY: self._marker.token}
        mbytes = manifest.splice(source, base, attrs, dropped, added, extra=extra)
        if mbytes is None:
            names = [n for n in table.sorted_names() if n not in dropped]
            names = list(heapq.merge(names, sorted(added)))
            entries = ((n, added[n] if n in added else table.entry(n)) for n in names)
            mbytes = manifest.encode_entries(base.version, attrs, extra, len(names), entries)
        kept = Manifest(table.derived(added, self._removed), attrs, base.version, extra)
        validation.validate_appended(kept, table, added, dropped, self._pos, self.path)
        return mbytes, kept

    def _base_manifest_bytes(self) -> bytes | memoryview:
        """The base's manifest bytes: those the memo keeps beside it (the open just
        compared or decoded them: no second read of a manifest of megabytes), else read."""
        start, end = self._base_span
        kept = validation.memo_entry(self.path, end + constants.FOOTER_SIZE)
        if kept is not None and kept[1] is self._base:
            return memoryview(kept[0])[: end - start]
        return files.read_at(self._fd, end - start, start)

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise files.system_error(exc, self.path, "sync") from None

    def _commit(self) -> None:
        if self.mode == "a":
            return
        held = None
        if self.mode == "w" and self._held is None:
            # a file replaced is replaced between writers, never in the middle of one
            held = files.lock_to_replace(self.path)
        try:
            files.commit(
                self._fd,
                self._tmp_name,
                self.path,
                exclusive=self.mode == "x",
                durable=self.durable,
            )
        finally:
            if held is not None:
                held.release()
        self._tmp_name = None

    def abort(self) -> None:
        """Discard everything added since opening; the file at the path is untouched."""
        if self._done:
            return
        self._done = True
        for item in self._queue:
            item.payload.cancel()
        self._queue.clear()
        self._gathered, self._gathered_bytes = [], 0
        if self.mode == "a" and self._fd >= 0:
            try:
                os.ftruncate(self._fd, self._append_base)
            except OSError:
                pass  # the marker stays: repair() cuts the tail back to its base
            else:
                if self._marker is not None and getattr(self, "_adopted", None) is None:
                    self._flock.end_append(self._marker)  # (a parallel one: its abort)
        if self._tmp_name is not None:
            files.unlink_quietly(self._tmp_name)
            self._tmp_name = None
        self._release()
        if self._upload is not None:
            self._upload.discard()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._flock is not None:
            self._unlock()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Finalize if not done yet (as the reference does on close)."""
        if not self._done:
            self.finalize()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._done:
                self.finalize()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0 and not self._done:
            self.abort()


def _source_parts(writes, source, band_bytes: int, itemsize: int):
    """(write, its part of ``source``) for each planned chunk write, in order; a lazy
    source (with ``compute``) is computed one band of chunks (same index along axis 0) at
    a time when the band holds at most ``band_bytes``, else part by part."""
    lazy = hasattr(source, "compute")
    if not lazy or not writes or not writes[0].index:
        for w in writes:
            part = source[w.source] if w.source else source
            yield w, part.compute() if lazy else part
        return
    for _, group in itertools.groupby(writes, key=lambda w: w.index[0]):
        group = list(group)
        rows = group[0].source[0]
        nbytes = (rows.stop - rows.start) * itemsize * math.prod(n for n in source.shape[1:])
        if nbytes <= band_bytes:
            band = np.asarray(source[rows].compute())
            for w in group:
                yield w, band[(slice(None), *w.source[1:])]
        else:
            for w in group:
                yield w, np.asarray(source[w.source].compute())


def _as_stored(part, dtype_name: str, path: str, name: str) -> np.ndarray:
    """``part`` as a C-contiguous array of the object's dtype (little-endian)."""
    arr = as_array(part)
    want = dtypes.to_numpy(dtype_name)
    if arr.dtype != want:
        if dtypes.from_numpy(arr.dtype) != dtype_name and arr.dtype.kind != want.kind:
            raise ZTensorError(
                f"cannot write {arr.dtype} data into a {dtype_name} object", path=path, obj=name
            )
        arr = arr.astype(want)
    return np.ascontiguousarray(arr)


class TensorStream:
    """A dense tensor being written block by block; see ``Writer.stream_tensor``."""

    def __init__(
        self,
        writer: Writer,
        name: str,
        shape,
        dtype,
        level: int,
        checksum: str | None,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._w = writer
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtypes.little_endian(np.dtype(dtype))
        self._dtype_name = dtypes.from_numpy(self.dtype)
        self.nbytes = int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize
        self.written = 0
        self._attrs = dict(attributes) if attributes else None
        self._hasher = digests.Hasher(checksum) if checksum else None
        codec = codecs.compressor(level) if level else None
        self._encoder = codec.stream_encoder() if codec is not None else None
        self._encoding = codec.encoding if codec is not None else codecs.RAW
        self._origin = self._w._pos  # before padding: a discard cuts back to here
        self._w._pad()
        self._start = self._w._pos
        self._w._streaming = name
        self._open = True

    def write(self, block: Any) -> None:
        """Append the next elements in C order (any shape; only the element count matters)."""
        if not self._open:
            raise ZTensorError("stream is closed", path=self._w.path, obj=self.name)
        arr = as_array(block)
        if dtypes.little_endian(arr.dtype) != self.dtype:
            raise ZTensorError(
                f"block dtype {arr.dtype} does not match the stream's {self.dtype}",
                path=self._w.path,
                obj=self.name,
            )
        data = np.ascontiguousarray(arr.astype(self.dtype, copy=False))
        view = byte_view(data)
        if self.written + view.nbytes > self.nbytes:
            raise ZTensorError(
                f"more data than shape {list(self.shape)} holds "
                f"({self.written + view.nbytes} > {self.nbytes} bytes)",
                path=self._w.path,
                obj=self.name,
            )
        self._emit(view if self._encoder is None else self._encoder.compress(view))
        self.written += view.nbytes

    def _emit(self, chunk) -> None:
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._w._write_all(chunk)

    def close(self) -> None:
        """Check the size and record the tensor in the manifest."""
        if not self._open:
            return
        if self.written != self.nbytes:
            raise ZTensorError(
                f"stream ended after {self.written} of {self.nbytes} bytes "
                f"for shape {list(self.shape)}",
                path=self._w.path,
                obj=self.name,
            )
        if self._encoder is not None:
            self._emit(self._encoder.flush())
        storage, type_ = dtypes.storage_spelling(self._dtype_name)
        comp = Component(
            storage,
            self._start,
            self._w._pos - self._start,
            self._encoding,
            self._hasher.text() if self._hasher else None,
            None,
            type_,
        )
        self._w._objects[self.name] = Object(self.shape, "dense", {"data": comp}, self._attrs)
        self._finish()

    def discard(self) -> None:
        """Drop the partial tensor; the writer continues as if it was never started."""
        if self._open:
            self._w._rewind(self._origin)
            self._finish()

    def _finish(self) -> None:
        self._open = False
        self._w._streaming = None

    def __enter__(self) -> TensorStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.close()
        except BaseException:
            self.discard()
            raise
