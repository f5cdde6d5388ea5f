"""The interface every converter implements: a ``Source`` of ``Item``s, one per tensor, each
knowing how to write itself to a Writer.

Kept apart from ``convert/__init__.py`` so that converters and the code that runs them import
it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    """One tensor of a source: its name, size and how to write it to a Writer.

    ``write(writer, out_name, level, checksum, attributes=None)``.
    """

    name: str
    nbytes: int
    write: Callable[..., None]
    attributes: dict[str, Any] | None = None


@dataclass
class Source:
    """An opened foreign file: global attributes and its tensors, in file order."""

    path: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def items(self) -> Iterator[Item]:
        return iter(())

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_array(writer, out_name: str, array, level: int, checksum, attributes=None) -> None:
    """Write one array as a dense tensor (what most items' ``write`` does)."""
    writer.add_tensor(out_name, array, compress=level, checksum=checksum, attributes=attributes)
