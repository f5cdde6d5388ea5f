"""GGUF in, through the ``gguf`` package's reader.

GGUF lists dimensions innermost first; zTensor shapes are row-major, so they are reversed.
Metadata key/values become global attributes (text stays text, numbers and arrays are stored
as CBOR by the attribute codec); the reader's own header pseudo-fields (``GGUF.*``) are not
copied. Quantized tensors are kept block for block (the ``ggml_quantized`` format), or, when
asked (``dequantize=True``), dequantized to float32 with ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import dtypes, files
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..writer import Writer
from .source import Item, Source, add_array

_HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


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
