"""`chunked` (our extension, SPEC §4.3): a dense array stored as a regular grid of chunks.

The one owner of the layout. ``grid`` parses and checks the grid attribute; ``table`` knows
where each chunk is stored (today one component per chunk, named by its grid index);
``select`` turns selections into per-chunk pieces; ``read`` decodes the chunks a selection
touches; ``write`` plans writes into (and growth of) an object, builds each new chunk and
encodes it with the one frame policy. Both backends and the Writer call these; none of
them knows how chunks are named.
"""

from __future__ import annotations

from .grid import (
    CHUNK_GRID_KEY,
    FORMAT,
    ChunkGrid,
    chunk_grid,
    fill_array,
    grid_attributes,
    regular_chunks,
)
from .layout import Chunked
from .read import read_chunk, read_region
from .table import ChunkTable, chunk_role, parse_chunk_role
from .write import (
    ChunkWrite,
    assemble,
    chunk_write,
    encode_chunk,
    grown,
    growth,
    plan_write,
    rebuilt,
    source_chunks,
    updated,
)

__all__ = [
    "CHUNK_GRID_KEY",
    "FORMAT",
    "ChunkGrid",
    "ChunkTable",
    "ChunkWrite",
    "chunk_write",
    "Chunked",
    "assemble",
    "chunk_grid",
    "chunk_role",
    "encode_chunk",
    "fill_array",
    "grid_attributes",
    "grown",
    "growth",
    "parse_chunk_role",
    "plan_write",
    "rebuilt",
    "read_chunk",
    "read_region",
    "regular_chunks",
    "source_chunks",
    "updated",
]
