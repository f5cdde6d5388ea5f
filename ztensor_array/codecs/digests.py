"""Component digests in the reference's text form: ``crc32c:0xXXXXXXXX`` or ``sha256:<hex>``.

A digest always covers the stored bytes of a component (the compressed frame for zstd).
CRC32C comes from google-crc32c (hardware accelerated; numcodecs' choice too), SHA-256 from
hashlib. google-crc32c's C functions parse their argument as a read-only buffer, which
refuses memoryviews and mmaps but takes a numpy array of the same memory: so every buffer is
handed over as a uint8 array view, never copied (a memory-mapped component is hashed in
place). It releases the GIL only for ``bytes`` of 1 MiB or more.
"""

from __future__ import annotations

import hashlib

import google_crc32c
import numpy as np

from ..errors import InvalidArgumentError
from .policy import CHECKSUMS as ALGORITHMS


class Hasher:
    """Incremental digest over a stream of byte chunks (used by streaming writes)."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in ALGORITHMS:
            raise InvalidArgumentError(
                f"unknown checksum {algorithm!r}; expected one of {ALGORITHMS}"
            )
        self.algorithm = algorithm
        self._crc = 0
        self._sha = hashlib.sha256() if algorithm == "sha256" else None

    def update(self, chunk) -> None:
        if self._sha is not None:
            self._sha.update(chunk)
        else:
            if type(chunk) is not bytes:  # a view of the same memory, as the C code accepts
                chunk = np.frombuffer(chunk, dtype=np.uint8)
            self._crc = google_crc32c.extend(self._crc, chunk)

    def text(self) -> str:
        if self._sha is not None:
            return "sha256:" + self._sha.hexdigest()
        return f"crc32c:0x{self._crc:08X}"


def compute(algorithm: str, data) -> str:
    """Digest text of ``data`` (any contiguous buffer)."""
    h = Hasher(algorithm)
    h.update(data if type(data) is bytes else memoryview(data).cast("B"))
    return h.text()


def parse(digest: str) -> tuple[str, str] | None:
    """(algorithm, normalized hex) of a digest string, or None for an unknown algorithm."""
    algo, sep, value = digest.partition(":")
    if not sep or algo not in ALGORITHMS:
        return None
    if algo == "crc32c":
        value = value[2:] if value[:2].lower() == "0x" else value
    return algo, value.lower()


def matches(digest: str, data) -> bool | None:
    """Whether ``data`` has this digest; None when the algorithm is unknown (not checked)."""
    parsed = parse(digest)
    if parsed is None:
        return None
    algo, want = parsed
    have = parse(compute(algo, data))
    return have is not None and have[1] == want
