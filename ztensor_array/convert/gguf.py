"""GGUF in, through the ``gguf`` package's reader.

GGUF lists dimensions innermost first; zTensor shapes are row-major, so they are reversed.
Metadata key/values become global attributes (text stays text, numbers and arrays are stored
as CBOR by the attribute codec); the reader's own header pseudo-fields (``GGUF.*``) are not
copied. Quantized tensors are kept block for block (the ``ggml_quantized`` format), or, when
asked (``dequantize=True``), dequantized to float32 with ``gguf.quants.dequantize``.

``gguf.GGUFReader`` trusts every count, length and offset the header declares (an array of
2^40 items grows memory without bound, a string cut at the end of the file is read short,
a tensor offset near 2^64 wraps around to the header), so ``check_header`` first walks the
header and checks each of them against the bytes that remain, before the reader runs.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import dtypes, files
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..interop import shape_problem
from ..writer import Writer
from .source import Item, Source, add_array

_HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")
# bytes of each GGUF metadata value type (GGUFValueType names); STRING and ARRAY vary
_VALUE_BYTES = {
    "UINT8": 1,
    "INT8": 1,
    "BOOL": 1,
    "UINT16": 2,
    "INT16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FLOAT32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FLOAT64": 8,
}
_MAX_NESTING = 8  # arrays of arrays deeper than this are refused (llama.cpp writes none)


class _Walk:
    """A cursor over a GGUF header that refuses to step past the end of the file."""

    def __init__(self, buf, path: str, gguf) -> None:
        self.buf, self.size, self.path, self.gguf = buf, len(buf), path, gguf
        self.pos = 0
        self.order = "<"

    def fail(self, message: str, obj: str | None = None):
        return FormatError(f"not a valid GGUF file: {message}", path=self.path, obj=obj)

    def take(self, n: int, what: str) -> int:
        """Step over ``n`` bytes; returns where they start."""
        if n > self.size - self.pos:
            raise self.fail(
                f"{what} at byte {self.pos} needs {n} bytes, the file ends at {self.size}"
            )
        start, self.pos = self.pos, self.pos + n
        return start

    def u32(self, what: str) -> int:
        return struct.unpack_from(self.order + "I", self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack_from(self.order + "Q", self.buf, self.take(8, what))[0]

    def count(self, what: str, each: int) -> int:
        """A declared number of items of at least ``each`` bytes, checked to fit."""
        n = self.u64(what)
        if n * each > self.size - self.pos:
            raise self.fail(
                f"{what} declares {n} items at byte {self.pos - 8}, more than the "
                f"{self.size - self.pos} bytes left can hold"
            )
        return n

    def string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        start = self.take(n, what)
        return bytes(self.buf[start : start + n])

    def value(self, raw_type: int, what: str, depth: int = 0) -> None:
        """Step over one metadata value of GGUF value type ``raw_type``."""
        vtype = self.value_type(raw_type, what)
        if vtype.name in _VALUE_BYTES:
            self.take(_VALUE_BYTES[vtype.name], what)
        elif vtype.name == "STRING":
            self.string(what)
        else:  # ARRAY: item type, count, items
            if depth >= _MAX_NESTING:
                raise self.fail(f"{what} nests arrays more than {_MAX_NESTING} deep")
            item_type = self.value_type(self.u32(f"item type of {what}"), what)
            fixed = _VALUE_BYTES.get(item_type.name)
            n = self.count(what, fixed or (8 if item_type.name == "STRING" else 12))
            if fixed:
                self.take(n * fixed, what)
                return
            for _ in range(n):
                self.value(item_type, what, depth + 1)

    def value_type(self, raw: int, what: str):
        try:
            return self.gguf.GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {raw}") from None


def check_header(buf, path: str, gguf) -> None:
    """Walk a GGUF header (magic, version, counts, metadata, tensor infos) checking every
    declared count, length and offset against the file's size (``buf``: its bytes)."""
    walk = _Walk(buf, path, gguf)
    if walk.take(4, "magic") != 0 or bytes(buf[:4]) != b"GGUF":
        raise walk.fail("no GGUF magic")
    version = walk.u32("version")
    if version & 0xFFFF == 0:  # written on a big-endian machine (what GGUFReader checks)
        walk.order = ">"
        version = struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        return  # gguf.GGUFReader names the versions it reads
    n_tensors = walk.u64("tensor count")
    n_kv = walk.count("metadata count", 13)  # key length, value type, at least one byte
    if n_tensors * 24 > walk.size - walk.pos:  # name length, dims, type, offset
        raise walk.fail(f"tensor count {n_tensors} is more than the file can hold")
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = walk.string("metadata key").decode("utf-8", "replace")
        raw_type = walk.u32(f"value type of {key!r}")
        start = walk.pos
        walk.value(raw_type, f"metadata {key!r}")
        if key == "general.alignment" and raw_type == gguf.GGUFValueType.UINT32:
            alignment = struct.unpack_from(walk.order + "I", buf, start)[0]
    if alignment <= 0 or alignment & (alignment - 1):
        raise walk.fail(f"general.alignment {alignment} is not a power of two")
    tensors = []
    for _ in range(n_tensors):
        name = walk.string("tensor name").decode("utf-8", "replace")
        n_dims = walk.u32(f"dimension count of tensor {name!r}")
        walk.take(8 * n_dims, f"dimensions of tensor {name!r}")
        dims = struct.unpack_from(f"{walk.order}{n_dims}Q", buf, walk.pos - 8 * n_dims)
        raw_type = walk.u32(f"type of tensor {name!r}")
        offset = walk.u64(f"offset of tensor {name!r}")
        try:
            block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(raw_type)]
        except (ValueError, KeyError):
            raise walk.fail(f"unknown tensor type {raw_type}", obj=name) from None
        problem = shape_problem(dims, max(1, type_bytes // block))
        if problem is not None:
            raise walk.fail(problem, obj=name)
        tensors.append((name, offset, math.prod(dims) * type_bytes // block))
    data_start = walk.pos + (-walk.pos % alignment)
    for name, offset, nbytes in tensors:
        if data_start + offset + nbytes > walk.size:
            raise walk.fail(
                f"tensor data of {nbytes} bytes at offset {offset} lies beyond the end of "
                f"the file (data starts at byte {data_start}, the file ends at {walk.size})",
                obj=name,
            )


def _plain(value: Any) -> Any:
    """Field contents as CBOR-encodable Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


def _lossless() -> bool:
    """Whether this installation can keep GGML blocks as they are (``ggml_quantized``)."""
    return hasattr(Writer, "add_ggml_quantized")


class GGUFSource(Source):
    """One GGUF file, parsed and bounds-checked by ``gguf.GGUFReader``."""

    def __init__(self, path: str, *, dequantize: bool = False) -> None:
        self.path = path
        self.notes: list[str] = []
        self.dequantize = dequantize
        try:
            import gguf  # optional dependency (the convert extra)
        except ImportError:  # pragma: no cover - gguf is declared in the convert extra
            raise UnsupportedError("reading GGUF needs the 'gguf' package", path=path) from None
        self._gguf = gguf
        # opened here (a FIFO or folder is refused); the reader's map outlives the file object
        with files.open_stream(path) as f:
            try:
                mm = files.map_read(f.fileno())
            except ValueError:  # an empty file cannot be mapped
                raise FormatError("not a valid GGUF file: it is empty", path=path) from None
            with mm:
                check_header(mm, path, gguf)
            try:
                self._reader = gguf.GGUFReader(f, "r")
            except Exception as exc:  # the reader raises anything from ValueError to IndexError
                raise FormatError(
                    f"not a valid GGUF file ({type(exc).__name__}: {exc})", path=path
                ) from None
        self.attributes = {}
        for key, field in self._reader.fields.items():
            if key in _HEADER_FIELDS:
                continue
            try:
                self.attributes[key] = _plain(field.contents())
            except Exception as exc:
                raise FormatError(f"metadata {key!r} is unreadable ({exc})", path=path) from None
        self._recent: deque[tuple[int, int]] = deque(maxlen=16)
        self._check_quantized()

    def _check_quantized(self) -> None:
        if self.dequantize or _lossless():
            return
        for t in self._reader.tensors:
            if self._plain_dtype(t) is None:
                raise UnsupportedError(
                    f"tensor is quantized ({t.tensor_type.name}); pass --dequantize to store "
                    "it as float32 (lossless GGML block storage is not available)",
                    path=self.path,
                    obj=t.name,
                )

    @staticmethod
    def _plain_dtype(t) -> str | None:
        try:
            return dtypes.from_gguf(t.tensor_type.name)
        except UnsupportedError:
            return None

    def items(self) -> Iterator[Item]:
        for t in self._reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            zname = self._plain_dtype(t)
            if zname is not None:
                nbytes = math.prod(shape) * dtypes.itemsize(zname)
            else:
                nbytes = int(t.n_bytes)
            yield Item(t.name, nbytes, self._writer_of(t, shape, zname))

    def _writer_of(self, t, shape: tuple[int, ...], zname: str | None):
        def write(writer, out_name, level, checksum, attributes=None) -> None:
            try:
                self._write(t, shape, zname, writer, out_name, level, checksum, attributes)
            finally:
                self._release(int(t.data_offset), int(t.n_bytes))

        return write

    def _release(self, offset: int, length: int) -> None:
        """Drop the pages of recently written tensors (the writer's pool may re-read)."""
        mm = getattr(getattr(self._reader, "data", None), "_mmap", None)
        if mm is None:
            return
        self._recent.append((offset, length))
        for off, n in self._recent:
            if n:
                files.drop_pages(mm, off, n)

    def _write(self, t, shape, zname, writer, out_name, level, checksum, attributes) -> None:
        """Write one tensor: plain dtypes as they are, quantized ones as blocks or
        dequantized."""
        raw = np.asarray(t.data).reshape(-1).view(np.uint8)
        if raw.size != int(t.n_bytes):
            raise FormatError(
                f"{raw.size} bytes stored, {int(t.n_bytes)} expected",
                path=self.path,
                obj=t.name,
            )
        if zname is not None:
            add_array(
                writer,
                out_name,
                raw.view(dtypes.to_numpy(zname)).reshape(shape),
                level,
                checksum,
                attributes,
            )
            return
        if not self.dequantize and hasattr(writer, "add_ggml_quantized"):
            writer.add_ggml_quantized(
                out_name,
                raw,
                t.tensor_type.name,
                shape,
                compress=level,
                checksum=checksum,
                attributes=attributes,
            )
            return
        try:
            values = self._gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        except Exception as exc:
            raise ZTensorError(
                f"cannot dequantize {t.tensor_type.name} ({exc})",
                path=self.path,
                obj=t.name,
            ) from None
        attrs = dict(attributes or {})
        attrs["gguf_type"] = t.tensor_type.name
        add_array(
            writer, out_name, values.astype(np.float32).reshape(shape), level, checksum, attrs
        )

    def close(self) -> None:
        # Never unmap explicitly: the writer's compression pool may still read views of the
        # map after the source is closed; the map goes when the last view does.
        self._reader = None
