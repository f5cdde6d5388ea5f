"""Compression and digest policy, defined once: levels, the default level, the decode-ratio
bound, the digest algorithms, and the one place user arguments for them are checked."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError

DEFAULT_LEVEL = 3  # what compress=True means (the reference's default)
MIN_LEVEL, MAX_LEVEL = 1, 22
# zstd cannot expand a frame by more than this (RLE blocks: ~3 bytes per 128 KiB); a declared
# decoded size beyond this many times the stored length is a lie or a bomb.
MAX_DECODE_RATIO = 1 << 16
CHECKSUMS = ("crc32c", "sha256")


def normalize_compress(compress: Any) -> int:
    """0 for raw, else the zstd level: False/None/0 -> 0, True -> DEFAULT_LEVEL, 1..22 as is."""
    if compress is True:
        return DEFAULT_LEVEL
    if compress is False or compress is None:
        return 0
    if type(compress) is int and (compress == 0 or MIN_LEVEL <= compress <= MAX_LEVEL):
        return compress
    raise InvalidArgumentError(
        f"compress must be False, True or a zstd level {MIN_LEVEL}..{MAX_LEVEL}, got {compress!r}"
    )


def check_level(level: Any) -> int:
    """A zstd level as given to a codec (no False/True spelling)."""
    if type(level) is not int or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise InvalidArgumentError(
            f"zstd level must be an int in {MIN_LEVEL}..{MAX_LEVEL}, got {level!r}"
        )
    return level


def normalize_checksum(checksum: Any) -> str | None:
    """None (also spelled "none") or one of CHECKSUMS."""
    if checksum is None or checksum == "none":
        return None
    if checksum not in CHECKSUMS:
        raise InvalidArgumentError(f"checksum must be None, 'crc32c' or 'sha256', got {checksum!r}")
    return checksum
