"""The ``zstd`` encoding: one frame per component, decoded with a hard bound on the output size.

The reference writes streaming frames without a content-size field. We write the same frames
(``compressobj`` gives byte-identical output to the reference at every level) and decode in
streaming mode straight into the destination buffer, so a frame can never produce more bytes
than the manifest promised: a decompression bomb costs at most the declared size.

Chunks of the ``chunked`` layout are frames that record their size, made by numcodecs' Zstd
(SPEC §5): they decode in one shot, twice as fast as streaming.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from functools import cache

import numpy as np
import zstandard
from numcodecs.zstd import Zstd  # stateless and thread-safe; releases the GIL

from . import ZSTD, CodecError, byte_view, get
from .abc import StoredCodec, check_size
from .policy import DEFAULT_LEVEL, check_level

_local = threading.local()
SMALL_FRAME = 1 << 20  # chunk frames below this use zstandard's reused contexts


@cache
def _sized(level: int) -> Zstd:
    return Zstd(level=level)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor of a level (a context is not safe to share across threads)."""
    compressors = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    c = compressors.get(level)
    if c is None:
        c = compressors[level] = zstandard.ZstdCompressor(level=level)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def _decode_small(src, out: np.ndarray) -> np.ndarray:
    """A small frame that declares ``out``'s size, decoded with this thread's reused
    context (numcodecs makes one per call: 26 us against 0.5 us for 256 bytes); bytes
    after the frame or a frame cut short are refused, as numcodecs refuses them."""
    dobj = _decompressor().decompressobj()
    try:
        data = dobj.decompress(src)
    except zstandard.ZstdError as exc:
        raise _corrupt(exc) from None
    if not dobj.eof or dobj.unused_data or len(data) != out.nbytes:
        raise CodecError("zstd frame does not hold exactly the bytes it declares")
    out[:] = np.frombuffer(data, dtype=np.uint8)
    return out


def _corrupt(exc: Exception) -> CodecError:
    return CodecError(f"corrupt zstd frame ({exc})")


class ZstdCodec(StoredCodec):
    """numcodecs codec for the zTensor ``zstd`` encoding (frames without content size)."""

    codec_id = "ztensor.zstd"
    encoding = ZSTD

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        self.level = check_level(level)

    # ------------------------------------------------------------------ writing

    def encode_parts(self, buf) -> tuple[bytes, bytes]:
        """One frame without content size, exactly as the reference writes it, as the two
        pieces the encoder hands out (joining them would copy the frame once more)."""
        cobj = _compressor(self.level).compressobj()
        return cobj.compress(byte_view(buf)), cobj.flush()

    def encode_chunk(self, buf) -> bytes:
        """A frame that records its decoded size (checked against the manifest before
        decoding). numcodecs' Zstd, the codec zarr uses, compresses float data 20-45% faster
        here than zstandard's one-shot call (1-64 MiB float32 blocks at level 3); below
        1 MiB this thread's reused zstandard context is faster (it makes no context per
        call: 4 us instead of 98 us for 256 bytes)."""
        data = byte_view(buf)
        if data.nbytes < SMALL_FRAME:
            return _compressor(self.level).compress(data)
        return _sized(self.level).encode(data)

    def stream_encoder(self):
        return zstandard.ZstdCompressor(level=self.level).compressobj()

    # ------------------------------------------------------------------ reading

    def decode_into(self, src, out) -> None:
        dest = byte_view(out, into=True)
        want = dest.nbytes
        got = 0
        try:
            reader = _decompressor().stream_reader(src, read_across_frames=True, closefd=False)
            with reader:
                while got < want:
                    n = reader.readinto(dest[got:])
                    if n == 0:
                        break
                    got += n
                extra = reader.read(1) if got == want else b""
        except zstandard.ZstdError as exc:
            raise _corrupt(exc) from None
        check_size(got + len(extra), want, "zstd frame")

    def decode_exact(self, src, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, dtype=np.uint8)
        if nbytes and _declared_size(src) == nbytes:
            # A frame that declares the expected size decodes in one shot straight into the
            # output (chunk frames do; the reference's do not). numcodecs refuses trailing
            # or missing bytes.
            if nbytes < SMALL_FRAME:
                return _decode_small(src, out)
            try:
                _sized(DEFAULT_LEVEL).decode(src, out)
            except (RuntimeError, ValueError) as exc:
                raise _corrupt(exc) from None
            return out
        self.decode_into(src, out)
        return out

    def decode_pieces(self, src, sizes: Iterable[int]) -> Iterator[np.ndarray]:
        try:
            # a decompressor of its own: the stream stays open across yields
            with zstandard.ZstdDecompressor().stream_reader(
                src, read_across_frames=True, closefd=False
            ) as reader:
                for size in sizes:
                    out = np.empty(size, dtype=np.uint8)
                    dest = memoryview(out)
                    got = 0
                    while got < size:
                        n = reader.readinto(dest[got:])
                        if n == 0:
                            raise CodecError("zstd frame decodes to fewer bytes than expected")
                        got += n
                    yield out
                if reader.read(1):
                    raise CodecError("zstd frame decodes to more bytes than expected")
        except zstandard.ZstdError as exc:
            raise _corrupt(exc) from None

    def decode_prefix(self, src, nbytes: int, total: int) -> np.ndarray:
        """Streaming decode that stops after ``nbytes``: the leading rows of a compressed
        tensor cost the decode of those rows only (the frame is read from its start)."""
        out = np.empty(nbytes, dtype=np.uint8)
        dest = memoryview(out)
        got = 0
        try:
            with zstandard.ZstdDecompressor().stream_reader(
                src, read_across_frames=True, closefd=False
            ) as reader:
                while got < nbytes:
                    n = reader.readinto(dest[got:])
                    if n == 0:
                        raise CodecError("zstd frame decodes to fewer bytes than expected")
                    got += n
        except zstandard.ZstdError as exc:
            raise _corrupt(exc) from None
        return out

    def decode_limited(self, src, limit: int) -> np.ndarray:
        parts = []
        total = 0
        try:
            with _decompressor().stream_reader(src, read_across_frames=True, closefd=False) as r:
                while True:
                    chunk = r.read(min(limit + 1 - total, 1 << 24) or 1)
                    if not chunk:
                        break
                    parts.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise CodecError(f"zstd frame decodes to more than {limit} bytes")
        except zstandard.ZstdError as exc:
            raise _corrupt(exc) from None
        if not _frames_complete(src):  # a stream reader ends quietly at a truncated frame
            raise CodecError("zstd frame is truncated")
        return np.frombuffer(b"".join(parts), dtype=np.uint8)


def _declared_size(src) -> int:
    try:
        return zstandard.frame_content_size(src)
    except zstandard.ZstdError:
        return -1  # the streaming path reports the corruption


def _frames_complete(src) -> bool:
    """Whether every frame in ``src`` ends properly. Called after a bounded decode of the
    same bytes succeeded, so decoding again here cannot allocate more than that."""
    data = byte_view(src)
    try:
        while data.nbytes:
            dobj = _decompressor().decompressobj()
            dobj.decompress(data)
            if not dobj.eof:
                return False
            data = data[data.nbytes - len(dobj.unused_data) :]
    except zstandard.ZstdError:
        return False
    return True


# Frame-level functions of the codec, for callers that have not moved to the registry yet
# (backends/dask.py, the benchmarks).
ZstdFrameError = CodecError


def compress(data, level: int = DEFAULT_LEVEL) -> bytes:
    """A reference-identical frame (``ZstdCodec(level).encode``)."""
    return get(ZSTD, level=check_level(level)).encode(data)


def compress_sized(data, level: int = DEFAULT_LEVEL) -> bytes:
    """A chunk frame that records its size (``ZstdCodec(level).encode_chunk``)."""
    return get(ZSTD, level=check_level(level)).encode_chunk(data)


def decompress(src, nbytes: int) -> np.ndarray:
    """``src`` decoded into a fresh uint8 array of exactly ``nbytes`` (``decode_exact``)."""
    return get(ZSTD).decode_exact(src, nbytes)
