"""Encodings and digests. ``get_codec`` maps a manifest ``encoding`` to a numcodecs codec.

The codec modules import numcodecs, so this package is imported lazily by the reader and
writer (only when a compressed component is met) to keep ``import ztensor_array`` cheap.
"""

from __future__ import annotations


def get_codec(encoding: str, **config):
    """The numcodecs codec instance for a manifest encoding name."""
    if encoding == "raw":
        from .raw import RawCodec

        return RawCodec()
    if encoding == "zstd":
        from .zstd import ZstdCodec

        return ZstdCodec(**config)
    raise ValueError(f"unknown encoding {encoding!r}")


def register() -> None:
    """Register our codecs with numcodecs (entry points do this for installed copies)."""
    import numcodecs

    from .raw import RawCodec
    from .zstd import ZstdCodec

    numcodecs.register_codec(RawCodec)
    numcodecs.register_codec(ZstdCodec)
