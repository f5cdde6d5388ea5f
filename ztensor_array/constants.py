"""Wire constants of the zTensor container, defined once (SPEC.md §1)."""

from __future__ import annotations

MAGIC = b"ZTEN1000"  # first 8 bytes of a v1.x file, and last 8 bytes of its footer
LEGACY_MAGIC = b"ZTEN0001"  # first 8 bytes of a legacy v0.1 file
MAGICS = (MAGIC, LEGACY_MAGIC)
ALIGNMENT = 64  # every component starts at a multiple of this
FOOTER_SIZE = 16  # u64 little-endian manifest size, then MAGIC
MAX_MANIFEST_SIZE = 1 << 30  # readers refuse larger manifests, so writers must too
WRITE_VERSION = "1.1.0"  # the manifest version our writer produces
