"""The interface of an encoding's codec: numcodecs' ``encode``/``decode``, plus what the reader
and writer need to keep memory bounded and avoid copies.

Reading never trusts stored bytes: every decode is bounded by a size the manifest fixes (or a
limit), and a mismatch is a ``CodecError``. Writing may hand a blob out in pieces that are
written back to back, so a frame is never joined just to be written.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import ClassVar, Protocol

import numpy as np
from numcodecs.abc import Codec

from . import CodecError, byte_view
from .policy import MAX_DECODE_RATIO


class StreamEncoder(Protocol):
    """Encodes a blob given chunk by chunk (zstandard's ``compressobj`` shape)."""

    def compress(self, chunk) -> bytes | memoryview: ...

    def flush(self) -> bytes: ...


class StoredCodec(Codec):
    """A numcodecs codec for one zTensor ``encoding``, with the core's extra methods."""

    encoding: ClassVar[str]  # the manifest's name for it
    max_ratio: ClassVar[int] = MAX_DECODE_RATIO  # decoded bytes per stored byte, at most

    # ------------------------------------------------------------------ writing

    @abstractmethod
    def encode_parts(self, buf) -> tuple:
        """The stored bytes of ``buf`` as pieces to be written one after the other."""

    def encode_chunk(self, buf):
        """The stored bytes of one chunk of the ``chunked`` layout (SPEC §5)."""
        return self.encode(buf)

    @abstractmethod
    def stream_encoder(self) -> StreamEncoder:
        """An encoder for a blob given chunk by chunk, in order."""

    def encode(self, buf):
        parts = self.encode_parts(buf)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ------------------------------------------------------------------ reading

    @abstractmethod
    def decode_into(self, src, out) -> None:
        """Decode ``src`` into the writable buffer ``out``, which it must fill exactly."""

    def decode_exact(self, src, nbytes: int) -> np.ndarray:
        """``src`` decoded into a uint8 array of exactly ``nbytes``."""
        out = np.empty(nbytes, dtype=np.uint8)
        self.decode_into(src, out)
        return out

    @abstractmethod
    def decode_limited(self, src, limit: int) -> np.ndarray:
        """``src`` decoded to a uint8 array, when no size is known: refuses more than
        ``limit`` bytes (without ever holding more)."""

    def decode_prefix(self, src, nbytes: int, total: int) -> np.ndarray:
        """The first ``nbytes`` of ``src``'s decoded bytes (``total`` of them in all), decoding
        no further than needed where the codec can stop early. Only those bytes are checked:
        a corruption further on is found by the reads that reach it."""
        return self.decode_exact(src, total)[:nbytes]

    def decode_pieces(self, src, sizes: Iterable[int]) -> Iterator[np.ndarray]:
        """``src`` decoded piece by piece, one uint8 array per size, in order. The sizes must
        add up to the decoded size (checked once the last one is taken). This default holds
        the whole decoded blob; streaming codecs keep memory at one piece."""
        sizes = list(sizes)
        whole = self.decode_exact(src, sum(sizes))
        start = 0
        for size in sizes:
            yield whole[start : start + size]
            start += size

    def decode(self, buf, out=None):
        if out is None:  # size unknown: bounded by the most a blob can expand
            src = byte_view(buf)
            return self.decode_limited(src, max(src.nbytes, 1) * self.max_ratio)
        self.decode_into(buf, out)
        return out


def check_size(got: int, want: int, what: str) -> None:
    """The CodecError for a decoded size other than the expected one."""
    if got != want:
        more = "more than" if got > want else f"only {got} of"
        raise CodecError(f"{what} decodes to {more} the expected {want} bytes")
