"""safetensors in: the header is parsed and checked here, tensors are mmap views of the file.

Nothing is read into memory up front: each tensor is a zero-copy view written straight to the
Writer, and its pages are dropped from this process once written, so converting a file far
larger than RAM keeps the resident set flat.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from typing import Any

import numpy as np

from .. import dtypes, files
from ..errors import FormatError, UnsupportedError
from ..interop import shape_problem
from .source import Item, Source, add_array

# The safetensors library refuses headers above 100 MB; so do we (a header is JSON text).
MAX_HEADER = 100_000_000
BLOCK = 32 << 20  # tensors above STREAM_ABOVE bytes are written in blocks of this size
STREAM_ABOVE = 64 << 20
STREAM_ABOVE_COMPRESSED = 4 << 20  # pooled compressed frames wait in memory until written


def sniff(head: bytes, size: int) -> bool:
    """Whether the first bytes look like a safetensors header (u64 length, then '{')."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= n <= size - 8


def parse_header(raw: bytes, data_len: int, path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Validated {name: (dtype, shape, begin, end)} and the __metadata__ map."""
    try:
        header = json.loads(raw)
    except RecursionError:
        raise FormatError("safetensors header nests JSON too deeply", path=path) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"safetensors header is not valid JSON ({exc})", path=path) from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object", path=path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise FormatError("safetensors __metadata__ is not a map of text to text", path=path)
    entries: dict[str, Any] = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise FormatError("tensor entry is not a JSON object", path=path, obj=name)
        st_dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        try:
            zname = dtypes.from_safetensors(st_dtype)
        except UnsupportedError as exc:
            raise UnsupportedError(exc.reason, path=path, obj=name) from None
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"shape {shape!r} is not a list of sizes", path=path, obj=name)
        problem = shape_problem(shape, dtypes.itemsize(zname))
        if problem is not None:
            raise UnsupportedError(problem, path=path, obj=name)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise FormatError(f"data_offsets {offsets!r} are invalid", path=path, obj=name)
        begin, end = offsets
        if end > data_len:
            raise FormatError(
                f"data_offsets [{begin}, {end}) lie beyond the {data_len} data bytes of the file",
                path=path,
                obj=name,
            )
        want = math.prod(shape) * dtypes.itemsize(zname)
        if end - begin != want:
            raise FormatError(
                f"{end - begin} bytes stored but shape {shape} of {st_dtype} needs {want}",
                path=path,
                obj=name,
            )
        entries[name] = (zname, tuple(shape), begin, end)
    # like the safetensors library: the tensors must tile the data area exactly
    pos, prev = 0, None
    for begin, end, name in sorted((b, e, n) for n, (_, _, b, e) in entries.items()):
        if begin < pos:
            raise FormatError(
                f"data bytes [{begin}, {min(end, pos)}) overlap those of tensor {prev!r}",
                path=path,
                obj=name,
            )
        if begin > pos:
            raise FormatError(f"data bytes [{pos}, {begin}) belong to no tensor", path=path)
        pos, prev = end, name
    if pos != data_len:
        raise FormatError(
            f"{data_len - pos} data bytes after the last tensor belong to no tensor", path=path
        )
    return entries, meta


class SafetensorsSource(Source):
    """One safetensors file, opened and validated; tensors come out as mmap views."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd, size = files.open_read(path)
        try:
            head = files.read_at(self._fd, 8, 0)
            if len(head) < 8:
                raise FormatError("file is too short for a safetensors header", path=path)
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER or n > size - 8:
                raise FormatError(
                    f"safetensors header claims {n} bytes but the file has {size} "
                    f"(limit {MAX_HEADER})",
                    path=path,
                )
            self._data_start = 8 + n
            self._recent: deque[tuple[int, int]] = deque(maxlen=16)
            raw = files.read_at(self._fd, n, 8)
            entries, meta = parse_header(raw, size - self._data_start, path)
            self.attributes = dict(meta)
            self._entries = dict(sorted(entries.items(), key=lambda kv: kv[1][2]))
            self._map = files.map_read(self._fd) if size else None
        except BaseException:
            self.close()
            raise

    def items(self):
        for name, (zname, shape, begin, end) in self._entries.items():
            yield Item(name, end - begin, self._writer_of(name, zname, shape, begin, end))

    def _writer_of(self, name, zname, shape, begin, end):
        def write(writer, out_name, level, checksum, attributes=None) -> None:
            start = self._data_start + begin
            count = (end - begin) // dtypes.itemsize(zname)
            dt = dtypes.to_numpy(zname)
            if count == 0:
                array = np.zeros(shape, dtype=dt)
            else:
                array = np.frombuffer(self._map, dtype=dt, count=count, offset=start)
            limit = STREAM_ABOVE_COMPRESSED if level else STREAM_ABOVE
            if end - begin > limit and hasattr(writer, "stream_tensor"):
                # a big tensor goes block by block, so resident memory stays O(block)
                step = BLOCK // dt.itemsize
                with writer.stream_tensor(
                    out_name, shape, dt, compress=level, checksum=checksum, attributes=attributes
                ) as stream:
                    for i in range(0, count, step):
                        stream.write(array[i : i + step])
                        files.drop_pages(self._map, start + i * dt.itemsize, step * dt.itemsize)
                return
            add_array(writer, out_name, array.reshape(shape), level, checksum, attributes)
            # A compressed tensor is read later by the writer's pool: keep dropping the
            # pages of recent tensors until the pool must have finished with them.
            self._recent.append((start, end - begin))
            for offset, length in self._recent:
                if length:
                    files.drop_pages(self._map, offset, length)

        return write

    def close(self) -> None:
        # The map is not closed here: the writer's compression pool may still read views
        # of it; it is unmapped when the last view goes.
        self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
