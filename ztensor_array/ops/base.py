"""What every operation that writes a file shares with its caller (the CLI, converters).

The ``Progress`` it reports to and the ``Report`` it returns; the output rules (an existing
output needs ``overwrite``, an input is never the output) and the one translation of
``overwrite`` into a Writer mode; how a ``compress``/``level`` pair becomes one zstd level;
and the ``checksum`` vocabulary, where ``"keep"`` means "each object keeps the digest
algorithm it had" wherever there is something to keep.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import layouts
from ..codecs import digests
from ..codecs.policy import normalize_checksum, normalize_compress
from ..errors import FileExistsZTError, ZTensorError
from ..manifest import Object
from ..writer import Writer

KEEP = "keep"  # checksum: every object that had a digest gets one of the same algorithm


class Progress:
    """Where long operations report progress; this base class reports nowhere."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class Report:
    """What an operation wrote."""

    output: str
    tensors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_output(out: str, inputs: Sequence[str], overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite`` and an output that is also an input."""
    real_out = os.path.realpath(out)
    for src in inputs:
        if os.path.realpath(src) == real_out:
            raise ZTensorError("the output is also an input", path=out)
    if os.path.lexists(out) and not overwrite:
        raise FileExistsZTError("output exists (use --force to overwrite)", path=out)
    if os.path.isdir(out):
        raise ZTensorError("output is a folder", path=out)


def output_mode(overwrite: bool) -> str:
    """The Writer mode of an operation's output: replace it, or refuse an existing path."""
    return "w" if overwrite else "x"


def open_output(out: str, inputs: Sequence[str], overwrite: bool) -> Writer:
    """A Writer for an operation's output, after ``check_output`` (atomic: nothing appears
    at ``out`` until it is finalized)."""
    check_output(out, inputs, overwrite)
    return Writer(out, output_mode(overwrite))


def compression(compress: bool | int, level: int | None = None) -> int:
    """The zstd level to write (0 = raw) from a compress flag or level and an optional
    level: a level alone also asks for compression."""
    if level is not None and (compress is True or compress is False):
        compress = level
    return normalize_compress(compress)


def checksum_policy(checksum: Any) -> str | None:
    """KEEP, None (also spelled "none") or a digest algorithm; anything else is refused."""
    return KEEP if checksum == KEEP else normalize_checksum(checksum)


def digest_algorithm(obj: Object, checksum: str | None) -> str | None:
    """The algorithm to write ``obj`` with under ``checksum_policy(checksum)``: with KEEP,
    the one its components use (the first known one), or None when it had none."""
    if checksum != KEEP:
        return checksum
    algo = layouts.stored_encoding(obj)[1]  # a chunked object's chunks, not its index
    return algo if algo in digests.ALGORITHMS else None


def stored_size(obj: Object) -> int:
    """The bytes an object occupies in its file (for progress)."""
    return sum(c.length for c in obj.components.values())
