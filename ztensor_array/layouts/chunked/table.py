"""Where the chunks of a ``chunked`` object are stored: one component per written chunk,
whose role names its grid index (``c.0.3``; ``c`` for a 0-d array). Every other part of the
package asks this module, so the storage of chunk locations can change in one place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ...manifest import Component, Object


def chunk_role(index) -> str:
    """Component role of the chunk at a grid index: ``c.<i0>.<i1>...`` (``c`` when 0-d)."""
    return ".".join(["c", *(str(int(i)) for i in index)])


def parse_chunk_role(role: str, ndim: int) -> tuple[int, ...] | None:
    """Grid index named by a role, or None when the role is not ``c`` + ndim indices."""
    parts = role.split(".")
    if parts[0] != "c" or len(parts) != ndim + 1:
        return None
    out = []
    for p in parts[1:]:
        if not (p.isascii() and p.isdigit()) or (len(p) > 1 and p[0] == "0"):
            return None
        out.append(int(p))
    return tuple(out)


class ChunkTable:
    """The stored chunks of one object, by grid index."""

    __slots__ = ("_components", "_ndim")

    def __init__(self, obj: Object) -> None:
        self._components = obj.components
        self._ndim = len(obj.shape)

    def role(self, index) -> str | None:
        """The role to read the chunk at ``index`` by, or None when it was never written
        (it reads as the fill value)."""
        role = chunk_role(index)
        return role if role in self._components else None

    def __iter__(self) -> Iterator[tuple[tuple[int, ...], str, Component]]:
        """(grid index, role, component) of every stored chunk (unparseable roles are left
        out: the layout's check refuses them when the file opens)."""
        for role, comp in self._components.items():
            index = parse_chunk_role(role, self._ndim)
            if index is not None:
                yield index, role, comp

    def outside(self, box: tuple[tuple[int, int], ...]) -> dict[str, Component]:
        """The stored chunks whose grid index lies outside ``box`` (per axis [lo, hi) in
        grid units): what a write into that box keeps."""
        return {
            role: comp
            for index, role, comp in self
            if not all(lo <= i < hi for i, (lo, hi) in zip(index, box))
        }

    def with_chunks(self, kept: Mapping[str, Component], new: Mapping[tuple, Component]):
        """The components of an updated object: ``kept`` ones, then ``new`` ones by index."""
        out = dict(kept)
        out.update((chunk_role(index), comp) for index, comp in new.items())
        return out
