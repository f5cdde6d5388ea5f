"""Wire constants of the zTensor container, defined once (SPEC.md §1)."""

from __future__ import annotations

MAGIC = b"ZTEN1000"  # first 8 bytes of a v1.x file, and last 8 bytes of its footer
LEGACY_MAGIC = b"ZTEN0001"  # first 8 bytes of a legacy v0.1 file
MAGICS = (MAGIC, LEGACY_MAGIC)
ALIGNMENT = 64  # every component starts at a multiple of this
FOOTER_SIZE = 16  # u64 little-endian manifest size, then MAGIC
# Readers refuse larger manifests or more objects, so writers must too. Decoding costs
# memory per manifest byte: ~23 bytes for manifests of tensors, up to ~72 for CBOR made of
# empty containers; 128 MiB bounds that at ~3 GB, resp. ~9 GB (SPEC §8; 1.1.1: 1 GiB).
MAX_MANIFEST_SIZE = 128 << 20
MAX_OBJECTS = 1 << 20
WRITE_VERSION = "1.1.0"  # the manifest version our writer produces
