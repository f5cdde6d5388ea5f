"""Encodings: the registry that maps a manifest ``encoding`` to its codec, and the one error
type every codec raises.

Each encoding is one numcodecs ``Codec`` class (``raw.py``, ``zstd.py``) implementing the
interface of ``abc.py``; adding an encoding is one such class plus its entry in ``_CODECS``
(and in the ``numcodecs.codecs`` entry points of pyproject.toml). The codec modules import
numcodecs (~70 ms), so they are loaded on first use: importing this package stays cheap, and
the manifest takes ``ENCODINGS`` from here without loading any codec.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .abc import StoredCodec

RAW = "raw"  # stored bytes are the element bytes: the reader maps them, nothing decodes
ZSTD = "zstd"
COMPRESSED = ZSTD  # the encoding that ``compress=True`` or a level selects

# encoding -> (module of this package, class)
_CODECS: dict[str, tuple[str, str]] = {
    RAW: ("raw", "RawCodec"),
    ZSTD: ("zstd", "ZstdCodec"),
}
ENCODINGS = frozenset(_CODECS)  # what a manifest may name


class CodecError(ValueError):
    """Stored bytes that are corrupt or decode to a size other than the expected one. The
    reader turns it into a DecodeError naming the file, object and component."""


def byte_view(buf, *, into: bool = False) -> memoryview:
    """The bytes of a buffer (numpy arrays of any dtype, ml_dtypes included), without a copy
    of a contiguous one. A non-contiguous array is copied first, unless the bytes are to be
    written ``into`` (then it is refused: the writes would be lost in the copy)."""
    if not isinstance(buf, np.ndarray):
        return memoryview(buf).cast("B")
    if not buf.flags.c_contiguous:
        if into:
            raise InvalidArgumentError("cannot decode into a non-contiguous array")
        buf = np.ascontiguousarray(buf)
    if buf.dtype != np.uint8 or buf.ndim != 1:
        buf = buf.reshape(-1).view(np.uint8)
    return memoryview(buf)


def codec_class(encoding: str) -> type[StoredCodec]:
    """The codec class of a manifest encoding."""
    entry = _CODECS.get(encoding)
    if entry is None:
        raise InvalidArgumentError(
            f"unknown encoding {encoding!r}; expected one of {sorted(ENCODINGS)}"
        )
    module = importlib.import_module(f".{entry[0]}", __name__)
    return getattr(module, entry[1])


@lru_cache(maxsize=None, typed=True)  # typed: level=True must not find level=1's codec
def get(encoding: str, **config) -> StoredCodec:
    """The codec of a manifest encoding, configured by ``config`` (e.g. ``level=3``).

    Codecs are stateless (zstd contexts are per thread), so one instance per configuration
    is shared."""
    return codec_class(encoding)(**config)


def compressor(level: int) -> StoredCodec:
    """The codec ``compress=level`` (1..22) writes with."""
    return get(COMPRESSED, level=level)


def register() -> None:
    """Register our codecs with numcodecs (the entry points do this for installed copies)."""
    import numcodecs  # heavy (~70 ms): only when asked

    for encoding in ENCODINGS:
        numcodecs.register_codec(codec_class(encoding))
