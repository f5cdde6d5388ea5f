"""The ``raw`` encoding: stored bytes are the little-endian element bytes themselves.

The reader maps raw components instead of decoding them (zero-copy views); this codec gives
the same bytes to numcodecs pipelines and to code that handles any encoding alike. Decoding
returns views of the source wherever the interface allows.
"""

from __future__ import annotations

import numpy as np

from . import RAW, CodecError, byte_view
from .abc import StoredCodec, check_size


class _PassThrough:
    """The stream encoder of ``raw``: every chunk is stored as it is."""

    def compress(self, chunk) -> memoryview:
        return byte_view(chunk)

    def flush(self) -> bytes:
        return b""


class RawCodec(StoredCodec):
    """Identity codec, so a pipeline can name the zTensor ``raw`` encoding explicitly."""

    codec_id = "ztensor.raw"
    encoding = RAW
    max_ratio = 1

    def encode_parts(self, buf) -> tuple[memoryview]:
        return (byte_view(buf),)

    def encode(self, buf) -> np.ndarray:
        return np.frombuffer(byte_view(buf), dtype=np.uint8)

    def stream_encoder(self) -> _PassThrough:
        return _PassThrough()

    def decode_exact(self, src, nbytes: int) -> np.ndarray:
        data = np.frombuffer(byte_view(src), dtype=np.uint8)
        check_size(data.size, nbytes, "raw component")
        return data

    def decode_prefix(self, src, nbytes: int, total: int) -> np.ndarray:
        return self.decode_exact(src, total)[:nbytes]

    def decode_into(self, src, out) -> None:
        dest = byte_view(out, into=True)
        dest[:] = self.decode_exact(src, dest.nbytes)

    def decode_limited(self, src, limit: int) -> np.ndarray:
        data = np.frombuffer(byte_view(src), dtype=np.uint8)
        if data.size > limit:
            raise CodecError(f"raw component holds more than {limit} bytes")
        return data
