"""Byte sources: the bytes of a .zt file that is not a local path.

A local path is mapped by the reader through files.py, exactly as before. Everything else
comes through a ``Source``, reached from a picklable ``Target``:

- ``BufferSource``: bytes, bytearray or memoryview holding a whole file (zero-copy views);
- ``StreamSource``: an open binary file object (``seek`` and ``readinto`` or ``read``);
- ``FsspecSource``: an fsspec URL (``s3://``, ``gs://``, ``az://``, ``memory://``, chained
  ``simplecache::``/``blockcache::``) with its storage options, ranges through ``cat_ranges``;
- ``HTTPSource`` and ``S3Source``: HTTP(S) and S3 read with range requests whose answers are
  checked (status, Content-Range, size, ETag), opened with one suffix request that brings the
  size and the ETag along with the tail.

Every source fetches the file's last ``tail`` bytes when it opens (the speculative tail
read: footer, manifest, and often the index segments and small tensors before them) and
serves later reads inside them from memory. ``read_many`` sorts the spans asked for, merges
those less than ``MAX_GAP`` apart into one range and fetches the ranges concurrently. What a
server sends must be exactly the bytes asked for, of the object as it was opened; anything
else raises ``RemoteError`` (``ObjectChangedError`` when the object changed), never data.

fsspec (the ``remote`` extra: fsspec, aiohttp, s3fs) is imported only for URLs.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

from .constants import MAGICS
from .errors import (
    ArgumentTypeError,
    FileExistsZTError,
    FormatError,
    InvalidArgumentError,
    MissingFileError,
    ObjectChangedError,
    RemoteError,
    ZTensorError,
)

MAX_GAP = 256 << 10  # spans closer than this are fetched as one range
MAX_BLOCK = 256 << 20  # merged ranges grow no larger (big reads stay concurrent)
MAX_CONCURRENT = 16  # range requests in flight per read
HEAD_READ = 64 << 10  # bytes an HTTP or S3 open asks for from the start, with the tail
WHOLE_FILE_LIMIT = 256 << 20  # largest file fetched whole from a server that ignores Range
_PATH_MAX = 4096  # bytes longer than any path are file contents
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
_EXTRA = "install the remote extra: pip install 'ztensor-array[remote]'"


class Version(NamedTuple):
    """Which state of a non-local file: its size and its tag (ETag, version or
    modification time, whatever the store reports; "" when none)."""

    size: int
    tag: str


# --------------------------------------------------------------------------- targets


class Target:
    """How to reach a file that is not a local path. Hashable (caches key on it)."""

    name: str  # what errors name

    def open(self, tail: int) -> Source:
        raise NotImplementedError

    @property
    def token(self) -> tuple:
        """What fixes the bytes, for dask keys (with the Version the reader saw)."""
        raise NotImplementedError


class URLTarget(Target):
    """An fsspec URL and its storage options; pickles by value, so a Dask worker opens the
    file itself."""

    __slots__ = ("name", "options", "url")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})
        self.name = _redacted(url)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, URLTarget) and self.url == other.url and self.options == other.options
        )

    def __hash__(self) -> int:
        return hash(self.url)

    def __getstate__(self):
        return (self.url, self.options)

    def __setstate__(self, state) -> None:
        self.__init__(*state)

    def __repr__(self) -> str:
        return f"URLTarget({self.name!r})"

    @property
    def token(self) -> tuple:
        return ("url", self.url)

    def filesystem(self):
        """(fsspec filesystem, path in it) of the URL; a clear error without fsspec."""
        try:
            import fsspec  # optional: only URLs need it
        except ImportError:
            raise ZTensorError(f"reading URLs needs fsspec; {_EXTRA}", path=self.name) from None
        try:
            return fsspec.core.url_to_fs(self.url, **self.options)
        except ImportError as exc:  # a protocol whose package is missing (aiohttp, s3fs...)
            raise ZTensorError(f"{exc}; {_EXTRA}", path=self.name) from None
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"cannot open the URL: {exc}", path=self.name) from None

    def open(self, tail: int) -> Source:
        fs, path = self.filesystem()
        module = type(fs).__module__
        if module.startswith("fsspec.implementations.http") and hasattr(fs, "set_session"):
            cls = HTTPSource
        elif module.startswith("s3fs"):
            cls = S3Source
        else:
            cls = FsspecSource
        return cls(fs, path, self.name, tail)


class BufferTarget(Target):
    """A whole file in memory; pickles by value."""

    __slots__ = ("_token", "buffer", "name")

    def __init__(self, buffer, token: str | None = None) -> None:
        view = memoryview(buffer)
        if not view.c_contiguous:
            raise ArgumentTypeError("file contents must be a contiguous buffer")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self.buffer = view.toreadonly()  # arrays over it are read-only, as over a map
        self.name = f"<{self.buffer.nbytes}-byte buffer>"
        self._token = token or os.urandom(8).hex()

    def __reduce__(self):
        return (BufferTarget, (bytes(self.buffer), self._token))

    @property
    def token(self) -> tuple:
        return ("buffer", self._token)

    def open(self, tail: int) -> Source:
        return BufferSource(self.buffer, self.name)


class StreamTarget(Target):
    """An open binary file object of this process: cannot be sent to another one."""

    __slots__ = ("_token", "file", "lock", "name")

    def __init__(self, file) -> None:
        self.file = file
        name = getattr(file, "name", None)
        self.name = name if isinstance(name, str) else f"<{type(file).__name__}>"
        self.lock = threading.Lock()  # seek + read must not interleave between threads
        self._token = os.urandom(8).hex()

    def __reduce__(self):
        raise ArgumentTypeError(
            "a file object cannot be sent to another process; pass its path or URL",
            path=self.name,
        )

    @property
    def token(self) -> tuple:
        return ("stream", self._token)

    def open(self, tail: int) -> Source:
        return StreamSource(self.file, self.name, self.lock, tail)


def _redacted(url: str) -> str:
    """A URL without the user and password it may carry (errors show it)."""
    return re.sub(r"://[^/@]*@", "://", url)


def is_url(text: str) -> bool:
    """Whether a path string is an fsspec URL or chain (``s3://``, ``a::b``), not a local
    file (``file://`` URLs are local)."""
    if "::" in text:
        return True
    return bool(_URL.match(text)) and not text.startswith(("file://", "local://"))


def target(obj: Any, storage_options: dict[str, Any] | None = None) -> str | Target:
    """Where a reader's bytes come from: a local path (text, as given; ``file://`` stripped)
    or a Target. Accepts paths, URLs, bytes-like file contents (bytes only when they begin
    with a zTensor magic, hold a NUL or are longer than any path: other bytes are a path, as
    ``open`` reads them), open binary file objects, and Targets."""
    if isinstance(obj, Target):
        return obj
    if isinstance(obj, bytearray | memoryview) or (
        isinstance(obj, bytes) and (obj[:8] in MAGICS or b"\0" in obj or len(obj) > _PATH_MAX)
    ):
        _no_options(storage_options, "file contents")
        return BufferTarget(obj)
    if isinstance(obj, str | bytes | os.PathLike):
        try:
            text = os.fsdecode(obj)
        except TypeError:  # a PathLike whose __fspath__ returns neither str nor bytes
            raise ArgumentTypeError(
                f"a file path must be str or os.PathLike, not {type(obj).__name__}"
            ) from None
        if is_url(text):
            return URLTarget(text, storage_options)
        _no_options(storage_options, "a local path")
        for prefix in ("file://", "local://"):
            if text.startswith(prefix):
                return text[len(prefix) :]
        return text
    if callable(getattr(obj, "seek", None)) and (
        callable(getattr(obj, "readinto", None)) or callable(getattr(obj, "read", None))
    ):
        _no_options(storage_options, "a file object")
        return StreamTarget(obj)
    raise ArgumentTypeError(
        "a file must be a path, a URL, bytes-like contents or a binary file object, "
        f"not {type(obj).__name__}"
    )


def _no_options(options, what: str) -> None:
    if options:
        raise InvalidArgumentError(f"storage_options apply to URLs only, not to {what}")


# --------------------------------------------------------------------------- sources


class Source:
    """The bytes of one file (one state of it): its size, its tail, and ranged reads."""

    buffer: memoryview | None = None  # the whole file, when it is in memory
    head: bytes | None = None  # its first 8 bytes, when they came with the open
    _front = memoryview(b"")  # its first bytes, when they came with the open

    def __init__(self, name: str, size: int, tag: str, tail) -> None:
        self.name = name
        self.size = size
        self.version = Version(size, tag)
        self._tail = memoryview(tail).cast("B") if not isinstance(tail, memoryview) else tail
        self.tail_start = size - self._tail.nbytes
        self.closed = False

    @property
    def tail(self) -> memoryview:
        """The file's last bytes, fetched when it was opened."""
        return self._tail

    def read(self, offset: int, n: int) -> memoryview:
        """Exactly ``n`` bytes at ``offset`` (FormatError past the end of the file)."""
        return self.read_many([(offset, n)])[0]

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[memoryview]:
        """The bytes of each (offset, length) span: inside the tail from memory, the others
        merged when close (``MAX_GAP``) and fetched concurrently."""
        out: list[memoryview | None] = [None] * len(spans)
        todo = []
        for i, (offset, n) in enumerate(spans):
            if offset < 0 or n < 0 or offset + n > self.size:
                raise FormatError(
                    f"unexpected end of file at byte {min(offset + n, self.size)}", path=self.name
                )
            if offset >= self.tail_start:
                start = offset - self.tail_start
                out[i] = self._tail[start : start + n]
            elif offset + n <= self._front.nbytes:
                out[i] = self._front[offset : offset + n]
            elif n == 0:
                out[i] = memoryview(b"")
            else:
                todo.append(i)
        if todo:
            groups = merge([spans[i] for i in todo])
            blobs = self._checked_fetch([(g[0], g[1]) for g in groups])
            for (start, _, members), blob in zip(groups, blobs):
                view = memoryview(blob).toreadonly()
                for m in members:
                    offset, n = spans[todo[m]]
                    out[todo[m]] = view[offset - start : offset - start + n]
        return out  # type: ignore[return-value]

    def held(self, offset: int, n: int) -> bool:
        """Whether these bytes came with the open (the tail, or the front)."""
        return offset >= self.tail_start or offset + n <= self._front.nbytes

    def _checked_fetch(self, ranges: list[tuple[int, int]]) -> list:
        if self.closed:
            raise ZTensorError("reader is closed", path=self.name)
        try:
            blobs = self._fetch(ranges)
        except ZTensorError:
            raise
        except FileNotFoundError:
            raise ObjectChangedError(
                "the object is gone since it was opened", path=self.name
            ) from None
        except Exception as exc:  # the store's own errors (network, permissions, ...)
            raise RemoteError(f"read failed: {_describe(exc)}", path=self.name) from None
        for (start, end), blob in zip(ranges, blobs):
            if len(blob) != end - start:
                raise RemoteError(
                    f"asked for bytes {start}-{end - 1}, got {len(blob)} bytes instead of "
                    f"{end - start} (truncated or changed)",
                    path=self.name,
                )
        return blobs

    def _fetch(self, ranges: list[tuple[int, int]]) -> list:
        """The bytes of each [start, end) range; subclasses read them."""
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def merge(spans: Sequence[tuple[int, int]], gap: int = MAX_GAP) -> list[tuple[int, int, list]]:
    """(start, end, members) of the ranges to fetch for (offset, length) spans: spans sorted,
    and those whose gap is at most ``gap`` joined while the range stays within MAX_BLOCK
    (overlapping spans always). ``members`` index ``spans``."""
    groups: list[list] = []
    for i in sorted(range(len(spans)), key=lambda k: spans[k][0]):
        offset, n = spans[i]
        last = groups[-1] if groups else None
        if last is not None and (
            offset <= last[1] or (offset - last[1] <= gap and offset + n - last[0] <= MAX_BLOCK)
        ):
            last[1] = max(last[1], offset + n)
            last[2].append(i)
        else:
            groups.append([offset, offset + n, [i]])
    return [(g[0], g[1], g[2]) for g in groups]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BufferSource(Source):
    """A whole file in memory: every read is a zero-copy view."""

    def __init__(self, buffer: memoryview, name: str) -> None:
        super().__init__(name, buffer.nbytes, "", buffer)
        self.buffer = buffer


class StreamSource(Source):
    """An open binary file object: its size by seeking to the end, reads under a lock (one
    position for all threads), merged like any source's."""

    def __init__(self, file, name: str, lock: threading.Lock, tail: int) -> None:
        self._file, self._lock = file, lock
        try:
            with lock:
                size = file.seek(0, os.SEEK_END)
                if size is None:
                    size = file.tell()
            super().__init__(name, size, "", b"")
            data = self._fetch([(max(0, size - tail), size)])[0]
        except ZTensorError:
            raise
        except (OSError, ValueError, AttributeError) as exc:
            reason = f"cannot read the file object: {_describe(exc)}"
            raise ZTensorError(reason, path=name) from None
        if len(data) != min(size, tail):
            raise FormatError("the file object ended early", path=name)
        self._tail = memoryview(data)
        self.tail_start = size - len(data)

    def _fetch(self, ranges):
        out = []
        with self._lock:
            for start, end in ranges:
                self._file.seek(start)
                out.append(self._read(end - start))
        return out

    def _read(self, n: int) -> bytearray:
        """Up to ``n`` bytes from the position (fewer only at the end): ``readinto`` where
        the object has it, else ``read``, each called until done (raw streams may return
        less than asked)."""
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        readinto = getattr(self._file, "readinto", None)
        while got < n:
            try:
                if not callable(readinto):
                    raise NotImplementedError
                k = readinto(view[got:])
            except (NotImplementedError, io.UnsupportedOperation):
                readinto = None
                chunk = self._file.read(n - got)
                k = len(chunk) if chunk else 0
                view[got : got + k] = chunk or b""
            if not k:
                break
            got += k
        return buf if got == n else buf[:got]


class FsspecSource(Source):
    """Any fsspec filesystem: the size and tag from ``info``, ranges via ``cat_ranges``."""

    def __init__(self, fs, path: str, name: str, tail: int) -> None:
        self.fs, self.path = fs, path
        try:
            info = _info(fs, path)
        except FileNotFoundError:
            raise MissingFileError("no such file", path=name) from None
        except Exception as exc:
            raise RemoteError(f"cannot open: {_describe(exc)}", path=name) from None
        if info.get("type") == "directory":
            raise ZTensorError("is a folder, not a file", path=name)
        size = int(info.get("size") or 0)
        tag = next((str(info[k]) for k in _TAG_KEYS if info.get(k)), "")
        super().__init__(name, size, tag, b"")
        if size:
            data = self._checked_fetch([(max(0, size - tail), size)])[0]
            self._tail = memoryview(data)
            self.tail_start = size - len(data)

    def _fetch(self, ranges):
        if not ranges:
            return []
        paths = [self.path] * len(ranges)
        starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
        return self.fs.cat_ranges(paths, starts, ends, on_error="raise")


def _info(fs, path: str) -> dict:
    """``fs.info(path)``; for a caching wrapper (``blockcache::``) whose own ``info`` cannot
    place the path, the wrapped filesystem's."""
    try:
        return fs.info(path)
    except FileNotFoundError:
        inner = getattr(fs, "fs", None)
        if inner is None or inner is fs:
            raise
        return inner.info(path)


_TAG_KEYS = ("ETag", "etag", "VersionId", "version_id", "generation", "mtime", "LastModified")


class _AsyncRangeSource(Source):
    """A store read with our own checked range requests on fsspec's event loop: the open is
    one round trip of two concurrent requests, a suffix request (tail, size and tag in one
    answer) and one for the header magic (kept when it is of the same object); reads run
    concurrently."""

    def __init__(self, fs, path: str, name: str, tail: int) -> None:
        self.fs, self.path = fs, path
        super().__init__(name, 0, "", b"")
        size, tag, data, head = self._run(self._open_both(tail))
        self.size, self.version = size, Version(size, tag)
        self._tail = memoryview(data)
        self.tail_start = size - len(data)
        if self.tail_start == 0:
            self.buffer = self._tail  # the whole file came in the first answer
        elif head is not None and head[1:] == (size, tag) and len(head[0]) >= min(8, size):
            # the first bytes too: the magic, and what a writer puts first (often the
            # coordinates of a Dataset)
            self.head = bytes(head[0][:8])
            self._front = memoryview(head[0]).toreadonly()

    async def _open_both(self, tail: int):
        import asyncio  # fsspec's loop is asyncio's

        opened, head = await asyncio.gather(self._open(tail), self._head(), return_exceptions=True)
        if isinstance(opened, BaseException):
            raise opened
        # a failed or odd head answer is no error: the reader asks for those bytes again
        return (*opened, None if isinstance(head, BaseException) else head)

    async def _head(self) -> tuple[bytes, int | None, str] | None:
        """(first 8 bytes, object size, tag) from a range answer, or None."""
        raise NotImplementedError

    def _run(self, coro):
        from fsspec.asyn import sync  # optional: URLs only

        try:
            return sync(self.fs.loop, _await, coro)
        except ZTensorError:
            raise
        except FileNotFoundError:
            raise MissingFileError("no such file", path=self.name) from None
        except Exception as exc:
            raise RemoteError(f"read failed: {_describe(exc)}", path=self.name) from None

    def _fetch(self, ranges):
        import asyncio  # fsspec's loop is asyncio's

        async def fetch_all():
            gate = asyncio.Semaphore(MAX_CONCURRENT)

            async def one(start, end):
                async with gate:
                    return await self._range(start, end)

            return await asyncio.gather(*(one(s, e) for s, e in ranges))

        return self._run(fetch_all())

    async def _open(self, tail: int) -> tuple[int, str, bytes]:
        raise NotImplementedError

    async def _range(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _check_answer(self, start: int, end: int, total: int | None, tag: str | None) -> None:
        """A range answer must be of this object as opened and exactly the range asked."""
        if tag and self.version.tag and tag != self.version.tag:
            raise ObjectChangedError(
                f"the object changed since it was opened (tag {tag}, was {self.version.tag})",
                path=self.name,
            )
        if total is not None and total != self.size:
            raise ObjectChangedError(
                f"the object changed since it was opened ({total} bytes, was {self.size})",
                path=self.name,
            )


async def _await(coro):
    return await coro


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")


def _content_range(text: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of a Content-Range value; Nones where absent or unparsable."""
    m = _CONTENT_RANGE.match(text or "")
    if not m:
        return None, None, None
    first, last, total = m.groups()
    as_int = lambda v: int(v) if v and v != "*" else None  # noqa: E731
    return as_int(first), as_int(last), as_int(total)


class HTTPSource(_AsyncRangeSource):
    """HTTP(S) through fsspec's aiohttp session and request options. A server that ignores
    Range is read whole once (at most WHOLE_FILE_LIMIT bytes), then served from memory."""

    async def _get(self, range_value: str, if_match: bool):
        session = await self.fs.set_session()
        kw = dict(self.fs.kwargs)
        headers = dict(kw.pop("headers", None) or {})
        headers["Range"] = range_value
        headers["Accept-Encoding"] = "identity"  # byte offsets are of the stored object
        tag = self.version.tag
        if if_match and tag.startswith('"'):  # a strong ETag: the server refuses a change
            headers["If-Match"] = tag
        return session.get(self.fs.encode_url(self.path), headers=headers, **kw)

    async def _open(self, tail: int):
        async with await self._get(f"bytes=-{tail}", False) as r:
            tag = r.headers.get("ETag") or r.headers.get("Last-Modified") or ""
            if r.status == 404:
                raise MissingFileError("no such file", path=self.name)
            if r.status == 416:  # an empty object has no last bytes
                return _content_range(r.headers.get("Content-Range"))[2] or 0, tag, b""
            _raise_status(r.status, self.name)
            if r.status == 206:
                first, last, total = _content_range(r.headers.get("Content-Range"))
                if first is None or total is None or last != total - 1:
                    raise RemoteError("the server sent no valid Content-Range", path=self.name)
                if last - first + 1 != min(tail, total):  # never more than asked for
                    raise RemoteError(
                        f"asked for the last {tail} bytes, the server sent "
                        f"{r.headers.get('Content-Range')!r}",
                        path=self.name,
                    )
                data = await _body(r, last - first + 1, self.name)
                return total, tag, data
            # 200: the server ignored Range; the whole file is in this answer
            length = r.headers.get("Content-Length")
            if length is None or int(length) > WHOLE_FILE_LIMIT:
                raise RemoteError(
                    "the server ignores Range requests and the file is larger than "
                    f"{WHOLE_FILE_LIMIT} bytes (or of unknown size): it cannot be read in "
                    "parts; copy it, or open it through simplecache::",
                    path=self.name,
                )
            data = await _body(r, int(length), self.name)
            return len(data), tag, data

    async def _head(self):
        async with await self._get(f"bytes=0-{HEAD_READ - 1}", False) as r:
            if r.status != 206:  # never the body of a server ignoring Range
                return None
            first, last, total = _content_range(r.headers.get("Content-Range"))
            if first != 0 or last is None or last >= HEAD_READ:
                return None
            tag = r.headers.get("ETag") or r.headers.get("Last-Modified") or ""
            return await _body(r, last + 1, self.name), total, tag

    async def _range(self, start: int, end: int) -> bytes:
        async with await self._get(f"bytes={start}-{end - 1}", True) as r:
            if r.status in (404, 410, 412, 416):
                raise ObjectChangedError(
                    f"the object changed since it was opened (HTTP {r.status})", path=self.name
                )
            _raise_status(r.status, self.name)
            if r.status != 206:
                raise RemoteError(
                    f"the server ignored the range request (HTTP {r.status})", path=self.name
                )
            first, last, total = _content_range(r.headers.get("Content-Range"))
            tag = r.headers.get("ETag") or r.headers.get("Last-Modified")
            self._check_answer(start, end, total, tag)
            if (first, last) != (start, end - 1):
                raise RemoteError(
                    f"asked for bytes {start}-{end - 1}, the server sent "
                    f"{r.headers.get('Content-Range')!r}",
                    path=self.name,
                )
            return await _body(r, end - start, self.name)


def _raise_status(status: int, name: str) -> None:
    if status in (401, 403):
        raise RemoteError(f"access denied (HTTP {status})", path=name)
    if status >= 400 or status not in (200, 206):
        raise RemoteError(f"the server answered HTTP {status}", path=name)


async def _body(r, n: int, name: str) -> bytes:
    """Exactly ``n`` bytes of a response body: a shorter body is truncated, a longer one is
    not the range asked for (never more than n + 1 bytes are read)."""
    import asyncio  # aiohttp's stream errors

    import aiohttp  # HTTP(S) only

    try:
        data = await r.content.readexactly(n)
        extra = await r.content.read(1)
    except asyncio.IncompleteReadError as exc:
        raise RemoteError(
            f"the server sent {len(exc.partial)} of {n} bytes (truncated)", path=name
        ) from None
    except aiohttp.ClientPayloadError as exc:  # fewer bytes than its Content-Length
        raise RemoteError(
            f"the server sent fewer than the {n} bytes asked for (truncated): {exc}", path=name
        ) from None
    if extra:
        raise RemoteError(f"the server sent more than the {n} bytes asked for", path=name)
    return data


class S3Source(_AsyncRangeSource):
    """S3 through s3fs's client (its credentials, retries and endpoint options)."""

    async def _get(self, range_value: str):
        bucket, key, version = self.fs.split_path(self.path)
        kw = {"VersionId": version} if version else {}
        return await self.fs._call_s3("get_object", Bucket=bucket, Key=key, Range=range_value, **kw)

    async def _open(self, tail: int):
        try:
            resp = await self._get(f"bytes=-{tail}")
        except OSError as exc:  # an empty object has no last bytes (InvalidRange)
            if isinstance(exc, FileNotFoundError) or "range" not in str(exc).lower():
                raise
            info = await self.fs._info(self.path)
            return int(info.get("size") or 0), str(info.get("ETag") or ""), b""
        tag = str(resp.get("ETag") or "")
        first, last, total = _content_range(resp.get("ContentRange"))
        length = int(resp.get("ContentLength") or 0)
        if total is None:  # the whole (small) object
            total, first, last = length, 0, length - 1
        # never more than asked for: _s3_body refuses any other length unread
        data = await _s3_body(resp, min(tail, total), self.name)
        if first is None or last != total - 1 or len(data) != last - first + 1:
            raise RemoteError("the server sent no valid tail of the object", path=self.name)
        return total, tag, data

    async def _head(self):
        resp = await self._get(f"bytes=0-{HEAD_READ - 1}")
        first, last, total = _content_range(resp.get("ContentRange"))
        tag = str(resp.get("ETag") or "")
        if first is None:  # the whole (small) object
            length = int(resp.get("ContentLength") or 0)
            first, last, total = 0, length - 1, length
        if first != 0 or last >= HEAD_READ:
            resp["Body"].close()
            return None
        return await _s3_body(resp, last + 1, self.name), total, tag

    async def _range(self, start: int, end: int) -> bytes:
        resp = await self._get(f"bytes={start}-{end - 1}")
        try:
            first, last, total = _content_range(resp.get("ContentRange"))
            self._check_answer(start, end, total, str(resp.get("ETag") or ""))
            if (first, last) != (start, end - 1):
                raise RemoteError(
                    f"asked for bytes {start}-{end - 1}, the server sent "
                    f"{resp.get('ContentRange')!r}",
                    path=self.name,
                )
        except BaseException:
            resp["Body"].close()
            raise
        return await _s3_body(resp, end - start, self.name)


async def _s3_body(resp, n: int, name: str) -> bytes:
    length = int(resp.get("ContentLength") or 0)
    try:
        if length != n:
            raise RemoteError(f"the server sends {length} bytes, {n} were asked for", path=name)
        data = await resp["Body"].read()
    finally:
        resp["Body"].close()
    return data


# --------------------------------------------------------------------------- writing


class Upload:
    """A file bound for a URL, written locally first: ``local`` is a path in a private
    temporary folder; ``commit`` uploads it whole, so the object appears only complete (a
    failed write uploads nothing), and removes the folder; ``discard`` only removes it."""

    def __init__(self, dest: URLTarget, *, exclusive: bool = False) -> None:
        import tempfile  # writing to URLs only

        self._dir: str | None = None
        self.target = dest
        self.fs, self.path = dest.filesystem()
        if exclusive and self._exists():
            raise FileExistsZTError("path exists (mode='x')", path=dest.name)
        self._dir = tempfile.mkdtemp(prefix="ztensor-upload-")
        base = self.path.rstrip("/").rsplit("/", 1)[-1] or "upload.zt"
        self.local = os.path.join(self._dir, base)

    def _exists(self) -> bool:
        try:
            return bool(self.fs.exists(self.path))
        except Exception as exc:
            raise RemoteError(
                f"cannot check the URL: {_describe(exc)}", path=self.target.name
            ) from None

    def commit(self) -> None:
        """Upload the finished local file, then remove the local copy."""
        try:
            self.fs.put_file(self.local, self.path)
        except Exception as exc:
            raise RemoteError(f"upload failed: {_describe(exc)}", path=self.target.name) from None
        finally:
            self.discard()
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if callable(invalidate):  # the next open must see the new object, not a listing
            invalidate(self.path)

    def discard(self) -> None:
        import shutil  # writing to URLs only

        folder, self._dir = self._dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __del__(self) -> None:
        self.discard()


def remote_destination(path: Any, storage_options: dict[str, Any] | None = None):
    """The URLTarget a write to ``path`` goes to, or None for a local path (storage options
    then refused). Writers take paths and URLs only."""
    if isinstance(path, URLTarget):
        return path
    if isinstance(path, str | os.PathLike) and is_url(os.fspath(path)):
        return URLTarget(os.fspath(path), storage_options)
    _no_options(storage_options, "a local path")
    return None
