"""Other backends' encodings (netCDF4, h5netcdf, zarr and numcodecs) in zTensor's terms.

A Dataset opened from a netCDF or zarr file carries its source's storage encoding: zlib and
complevel, ``compression=``, numcodecs or zarr compressors, chunk shapes, Fletcher-32. What
has a meaning here becomes a zstd level, a chunk shape or a digest, so a converted file
stays about as small and as chunked as its source. What has none (byte shuffle, filters,
lossy quantization, big-endian storage...) is left out when it came with the source, as
``to_zarr`` leaves out another backend's keys, and refused when the caller asked for it
explicitly, naming the variable and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...codecs.policy import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from ...errors import InvalidArgumentError

# A source chunk smaller than this is grown (in whole multiples of itself, by dask's own
# sizing) towards CHUNK_TARGET_BYTES: every chunk costs a component in the manifest and
# 64-byte alignment, and tiny zstd frames compress poorly.
SOURCE_CHUNK_FLOOR = 64 << 10
CHUNK_TARGET_BYTES = 1 << 20

# netCDF4 writes zlib at this level when complevel is not given.
NETCDF_DEFAULT_COMPLEVEL = 4

# Keys xarray's CF coders or the writer itself handle; never this module's business.
CF_KEYS = frozenset(
    {
        "dtype",
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "units",
        "calendar",
        "_Unsigned",
        "_Encoding",
        "coordinates",
        "source",
        "original_shape",
        "preferred_chunks",
    }
)
# Flags of netCDF4's createVariable that turn on one compressor each.
_FLAG_COMPRESSORS = ("zlib", "zstd", "bzip2", "blosc", "szip")


# Keys whose only values with a meaning here are "off" (the storage as zTensor does it),
# each with the test of a value that asks for nothing else.
def _off(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and not value)


_HARMLESS = {
    "shuffle": _off,
    "blosc_shuffle": _off,
    "filters": _off,
    "serializer": lambda v: v is None or v == "auto",
    "shards": _off,
    "endian": lambda v: v in (None, "native", "little"),
    "least_significant_digit": _off,
    "significant_digits": _off,
    "quantize_mode": _off,
    "write_empty_chunks": lambda v: v is None or bool(v),
    "fill_value": lambda v: v is None,
    "dimension_separator": lambda v: v is None,
    "object_codec": lambda v: v is None,
}
# Parameters of a compression: fine when the variable is compressed.
_COMPRESSION_PARAMETERS = ("szip_coding", "szip_pixels_per_block", "compression_opts")
_WHY = {
    "shuffle": "zTensor has no byte-shuffle filter (zstd compresses the bytes as they are)",
    "blosc_shuffle": "zTensor has no byte-shuffle filter",
    "filters": "zTensor applies no filters before compression",
    "serializer": "zTensor stores elements little-endian in C order, with no serializer",
    "shards": "zTensor's chunked layout has no shards (every chunk is its own component)",
    "endian": "zTensor stores every element little-endian",
    "least_significant_digit": "zTensor never quantizes (stores are lossless)",
    "significant_digits": "zTensor never quantizes (stores are lossless)",
    "quantize_mode": "zTensor never quantizes (stores are lossless)",
    "write_empty_chunks": "every chunk is written",
    "fill_value": "missing chunks read as the variable's _FillValue; set that instead",
    "dimension_separator": "chunk names are fixed by the format",
    "object_codec": "object arrays are stored as CF character arrays",
}


def translate(
    enc: Mapping[str, Any], *, name: str, shape: tuple[int, ...], itemsize: int, explicit: bool
) -> dict[str, Any]:
    """{"compress": level or None, "chunks": shape or None, "checksum": name or None} from a
    variable's foreign encoding keys (None: the encoding does not say). ``explicit``: the
    caller passed this encoding, so a key without a meaning here is an error."""
    out: dict[str, Any] = {"compress": None, "chunks": None, "checksum": None}
    level = _compression(enc, name, explicit)
    if level is not None:
        out["compress"] = level
    chunks = _chunks(enc, name, shape, itemsize, explicit)
    if chunks is not None:
        out["chunks"] = chunks
    if enc.get("fletcher32"):
        out["checksum"] = "crc32c"  # the source kept a checksum per chunk: so do we
    if explicit:
        _refuse_meaningless(enc, name, compressed=bool(level))
    return out


# --------------------------------------------------------------------------- compression


def _compression(enc: Mapping[str, Any], name: str, explicit: bool) -> int | None:
    """The zstd level the source's compression maps to: 0 for none, None if not said."""
    said = False
    on = False
    level: int | None = None
    for flag in _FLAG_COMPRESSORS:
        if flag in enc:
            said = True
            on = on or bool(enc[flag])
    comp = enc.get("compression")
    if "compression" in enc:
        said = True
        if comp not in (None, False, "none", ""):
            on = True
            opts = enc.get("compression_opts")
            if isinstance(opts, int | np.integer) and not isinstance(opts, bool):
                level = int(opts)  # h5py's gzip level
    if on:
        complevel = enc.get("complevel")
        if complevel is not None:
            level = _int_level(complevel, name, "complevel")
        elif level is None and (enc.get("zlib") or comp in ("zlib", "gzip")):
            level = NETCDF_DEFAULT_COMPLEVEL
    codecs_said, codec_level = _codecs(enc, name, explicit)
    if codecs_said:
        said = True
        if codec_level is not None:
            on = True
            level = codec_level if level is None else level
    if not said:
        return None
    if not on:
        return 0
    return _zstd_level(DEFAULT_LEVEL if level is None else level)


def _codecs(enc: Mapping[str, Any], name: str, explicit: bool) -> tuple[bool, int | None]:
    """(whether zarr's compressor keys are present, the level of the compression they
    describe, None for none). Checksum codecs (crc32c) count as no compression."""
    if "compressor" not in enc and "compressors" not in enc:
        return False, None
    found: list = []
    for key in ("compressor", "compressors"):
        value = enc.get(key)
        if value is None:
            continue
        found.extend(value if isinstance(value, list | tuple) else [value])
    level: int | None = None
    for codec in found:
        kind = _codec_kind(codec)
        if kind in ("crc32c", "checksum"):
            continue
        if explicit and not _is_codec(codec):
            raise InvalidArgumentError(
                f"variable {name!r}: encoding 'compressors' holds {codec!r}, which is not a "
                "numcodecs or zarr codec"
            )
        lvl = _codec_level(codec, kind)
        level = lvl if level is None else max(level, lvl)
    return True, level


def _codec_kind(codec: Any) -> str:
    kind = getattr(codec, "codec_id", None)
    if not isinstance(kind, str):
        kind = type(codec).__name__
    kind = kind.lower()
    return kind[: -len("codec")] if kind.endswith("codec") and kind != "codec" else kind


def _is_codec(codec: Any) -> bool:
    module = type(codec).__module__.split(".", 1)[0]
    return module in ("numcodecs", "zarr")


def _codec_level(codec: Any, kind: str) -> int:
    """A compressor's level on zstd's scale (0 and below: zstd's default; levels of other
    compressors count as the same number)."""
    for attr in ("level", "clevel", "preset"):
        value = getattr(codec, attr, None)
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            value = int(value)
            if kind == "zstd" and value <= 0:  # zstd's 0 is its default; below, fast modes
                return DEFAULT_LEVEL if value == 0 else MIN_LEVEL
            return max(value, 0)  # gzip/blosc level 0 store the bytes uncompressed
    return DEFAULT_LEVEL


def _int_level(value: Any, name: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(
            f"variable {name!r}: encoding {key!r} must be an integer level, got {value!r}"
        )
    return int(value)


def _zstd_level(level: int) -> int:
    """A level in zstd's range: 0 stays "none", negatives (fast modes) become the lowest."""
    if level == 0:
        return 0
    return min(max(level, MIN_LEVEL), MAX_LEVEL)


# --------------------------------------------------------------------------- chunks


def _chunks(
    enc: Mapping[str, Any], name: str, shape: tuple[int, ...], itemsize: int, explicit: bool
) -> tuple[int, ...] | None:
    """The chunk shape of netCDF's ``chunksizes`` (None when contiguous), grown when tiny."""
    if enc.get("contiguous") or "chunksizes" not in enc:
        return None
    sizes = enc["chunksizes"]
    if sizes is None:
        return None
    try:
        sizes = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        if explicit:
            raise InvalidArgumentError(
                f"variable {name!r}: encoding 'chunksizes' must be a sequence of integers, "
                f"got {sizes!r}"
            ) from None
        return None
    if len(sizes) != len(shape) or any(s < 1 for s in sizes):
        if explicit:
            raise InvalidArgumentError(
                f"variable {name!r}: encoding 'chunksizes' {sizes} does not fit its shape {shape}"
            )
        return None
    return grown_chunks(tuple(min(c, max(n, 1)) for c, n in zip(sizes, shape)), shape, itemsize)


def grown_chunks(chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int):
    """``chunks``, or, when one holds under SOURCE_CHUNK_FLOOR bytes while the array is
    larger, whole multiples of it of about CHUNK_TARGET_BYTES (dask's sizing)."""
    if not shape or math.prod(chunks) * itemsize >= SOURCE_CHUNK_FLOOR:
        return chunks
    if math.prod(shape) <= math.prod(chunks) or 0 in shape:
        return chunks
    from dask.array.core import normalize_chunks  # dask: imported with the writer anyway

    grown = normalize_chunks(
        "auto",
        shape,
        limit=CHUNK_TARGET_BYTES,
        dtype=np.dtype(f"V{itemsize}"),
        previous_chunks=chunks,
    )
    return tuple(max(c[0], 1) if c else 1 for c in grown)


# --------------------------------------------------------------------------- refusals


def _refuse_meaningless(enc: Mapping[str, Any], name: str, *, compressed: bool) -> None:
    for key, value in enc.items():
        if key in _COMPRESSION_PARAMETERS:
            if compressed or _off(value):
                continue
            why = "it tunes a compression that is not turned on"
        elif key in _HARMLESS:
            if _HARMLESS[key](value):
                continue
            why = _WHY[key]
        else:
            continue
        raise InvalidArgumentError(
            f"variable {name!r}: encoding {key!r}={value!r} has no zTensor equivalent ({why})"
        )


KNOWN_KEYS = frozenset(
    {
        *_FLAG_COMPRESSORS,
        *_HARMLESS,
        *_COMPRESSION_PARAMETERS,
        "complevel",
        "compression",
        "compressor",
        "compressors",
        "chunksizes",
        "contiguous",
        "fletcher32",
    }
)
