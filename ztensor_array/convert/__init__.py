"""Foreign formats in: safetensors, GGUF, PyTorch pickles, anything xarray opens.

Each converter module opens its input as a ``Source``: global attributes plus a stream of
``Item``s, one per tensor, each knowing how to write itself to a ``Writer``. ``convert`` runs
the shared part: format detection, name collisions, the atomic output, verification and the
deletion of originals. Converter modules are found through ``_SOURCES`` and imported when
their format is met, and none imports its dependency (gguf, xarray) before it is needed.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Sequence
from typing import Any

from .. import files
from ..codecs.policy import normalize_checksum, normalize_compress
from ..constants import MAGICS
from ..errors import FormatError, UnsupportedError, ZTensorError, counted
from ..ops.base import Progress, Report, check_output, output_mode
from ..ops.verify import verify
from ..reader import Reader
from ..writer import Writer
from . import safetensors
from .source import Item, Source  # noqa: F401 - the converters' interface, re-exported

# format -> (module of this package, Source class); modules are imported on first use
_SOURCES = {
    "safetensors": ("safetensors", "SafetensorsSource"),
    "gguf": ("gguf", "GGUFSource"),
    "pickle": ("pickle", "PickleSource"),
    "xarray": ("xarray", "XarraySource"),
}
FORMATS = tuple(_SOURCES)

_EXTENSIONS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".pt": "pickle",
    ".pth": "pickle",
    ".bin": "pickle",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".ckpt": "pickle",
    ".nc": "xarray",
    ".nc4": "xarray",
    ".cdf": "xarray",
    ".h5": "xarray",
    ".hdf5": "xarray",
    ".he5": "xarray",
    ".zarr": "xarray",
    ".grib": "xarray",
}


# --------------------------------------------------------------------------- detection


def detect_format(path: str) -> str:
    """The input format from its content first, then from its extension."""
    if os.path.isdir(path):
        entries = set(os.listdir(path))
        if entries & {".zgroup", ".zarray", "zarr.json", ".zattrs"}:
            return "xarray"
        raise UnsupportedError("a folder that is not a zarr store cannot be converted", path=path)
    fd, size = files.open_read(path)
    try:
        head = files.read_at(fd, 16, 0)
    except OSError as exc:
        raise ZTensorError(f"cannot read: {exc.strerror}", path=path) from None
    finally:
        os.close(fd)
    if head[:8] in MAGICS:
        raise UnsupportedError("already a zTensor file (use merge, compress or migrate)", path=path)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"PK\x03\x04":
        return "pickle"  # torch zip checkpoint
    if head[:8] == b"\x89HDF\r\n\x1a\n" or head[:4] in (b"CDF\x01", b"CDF\x02", b"CDF\x05"):
        return "xarray"
    if head[:2] == b"\x1f\x8b":
        return "xarray"  # gzip: xarray's scipy engine reads gzipped netCDF3
    if safetensors.sniff(head, size):
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise UnsupportedError(
        "cannot tell the input format from its content or extension (give -f)", path=path
    )


def open_source(
    path: str,
    fmt: str = "auto",
    *,
    dequantize: bool = False,
    compress: int | None = 0,
    checksum: str | None = None,
) -> Source:
    """Open one input as a Source of tensors (``compress``/``checksum``: for inputs such as
    xarray datasets that are encoded while they are opened; a compress of None keeps a
    dataset's own compression)."""
    path = files.fspath(path)
    if fmt == "auto":
        fmt = detect_format(path)
    elif not os.path.isdir(path):
        # what a converter then opens by path (xarray's engines) must not block on a FIFO
        os.close(files.open_read(path)[0])
    entry = _SOURCES.get(fmt)
    if entry is None:
        raise UnsupportedError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    source = getattr(importlib.import_module(f".{entry[0]}", __name__), entry[1])
    if fmt == "gguf":
        return source(path, dequantize=dequantize)
    if fmt == "xarray":
        return source(path, compress=compress, checksum=checksum)
    return source(path)


# --------------------------------------------------------------------------- convert


def input_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names
        )
    return os.path.getsize(path)


def _prefix(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for ext in _EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def convert(
    inputs: Sequence[str],
    out: str,
    *,
    fmt: str = "auto",
    compress: bool | int | None = None,
    checksum: str | None = None,
    dequantize: bool = False,
    prefix_with_filename: bool = False,
    combine: str | None = None,
    concat_dim: str | None = None,
    overwrite: bool = False,
    delete_original: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Convert one or more foreign files into one .zt, atomically.

    Tensor names must be unique across inputs unless ``prefix_with_filename`` prefixes each
    with its file's stem. Global attributes of the inputs are merged (a conflicting value is
    an error). ``combine`` ("by_coords", or "nested" along ``concat_dim``) makes datasets
    one dataset instead, as ``xarray.open_mfdataset`` does. ``compress`` None (the
    default): raw, but datasets keep their own compression. Originals are deleted only
    after the output is finalized and verified.
    """
    inputs = [files.fspath(p) for p in inputs]
    out = files.fspath(out)
    if not inputs:
        raise ZTensorError("no input files given")
    level = normalize_compress(compress)
    dataset_level = None if compress is None else level
    checksum = normalize_checksum(checksum)
    progress = progress or Progress()
    check_output(out, inputs, overwrite)
    fmts = [detect_format(p) if fmt == "auto" else fmt for p in inputs]
    prefixes = [_prefix(p) + "/" if prefix_with_filename else "" for p in inputs]
    if prefix_with_filename and len(set(prefixes)) != len(prefixes):
        raise ZTensorError(
            "two inputs have the same file name; --prefix-with-filename is ambiguous"
        )
    opens = [
        (
            path,
            lambda p=path, f=f: open_source(
                p, f, dequantize=dequantize, compress=dataset_level, checksum=checksum
            ),
            prefix,
        )
        for path, f, prefix in zip(inputs, fmts, prefixes)
    ]
    if combine is not None:
        opens = [
            (
                inputs[0],
                _combined(
                    inputs, fmts, combine, concat_dim, dataset_level, checksum, prefix_with_filename
                ),
                "",
            )
        ]
    report = Report(out)
    report.bytes_in = sum(input_size(p) for p in inputs)
    progress.start(f"convert -> {os.path.basename(out)}", report.bytes_in)
    expected: dict[str, tuple[str, str]] = {}  # out name -> (input, tensor name)
    attributes: dict[str, Any] = {}
    writer = Writer(out, output_mode(overwrite))
    try:
        for path, opener, prefix in opens:
            with opener() as src:
                for item in src.items():
                    name = prefix + item.name
                    if name in expected:
                        other = expected[name][0]
                        raise ZTensorError(
                            f"tensor name collides with one from {other} "
                            "(use --prefix-with-filename)",
                            path=path,
                            obj=item.name,
                        )
                    expected[name] = (path, item.name)
                    item.write(writer, name, level, checksum, item.attributes)
                    progress.advance(item.nbytes)
                # after the items: some sources find attributes while walking their content
                _merge_attributes(attributes, src.attributes, path)
                report.notes.extend(getattr(src, "notes", []))
        writer.attributes.update(attributes)
        report.bytes_out = writer.finalize()
    except BaseException:
        writer.abort()
        raise
    report.tensors = len(expected)
    if delete_original:
        verify_written(out, expected)
        for path in inputs:
            _delete(path)
            report.deleted.append(path)
    return report


def _combined(inputs, fmts, combine, concat_dim, level, checksum, prefix_with_filename):
    """The opener of one dataset combined from every input (all must be datasets)."""
    if prefix_with_filename:
        raise ZTensorError("--combine makes one dataset: it takes no --prefix-with-filename")
    others = [p for p, f in zip(inputs, fmts) if f != "xarray"]
    if others:
        raise UnsupportedError("--combine takes datasets only (netCDF, HDF5, zarr)", path=others[0])
    from .xarray import XarraySource  # imports xarray when a dataset is met

    return lambda: XarraySource(
        inputs, compress=level, checksum=checksum, combine=combine, concat_dim=concat_dim
    )


def _merge_attributes(into: dict[str, Any], new: dict[str, Any], path: str) -> None:
    for key, value in new.items():
        if key in into and into[key] != value:
            raise ZTensorError(f"global attribute {key!r} differs between inputs", path=path)
        into[key] = value


def verify_written(out: str, expected) -> None:
    """Re-open an output, check every digest and structure and that it holds ``expected``."""
    problems = verify(out)
    if problems:
        raise FormatError(f"output failed verification: {problems[0]}", path=out)
    with Reader(out) as r:
        missing = [n for n in expected if n not in r]
    if missing:
        raise FormatError(
            f"output lacks {counted(len(missing), 'tensor')}, e.g. {missing[0]!r}", path=out
        )


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
