"""Reopening a file reuses its validated manifest only while the manifest bytes are unchanged.

The memo is keyed by path and position and checked against the exact bytes, so any rewrite
(even one that keeps the file size) must be seen, and nothing a caller mutates may leak into
the next reader.
"""

from __future__ import annotations

import os

import cbor2
import numpy as np
import pytest

import ztensor_array as za
from ztensor_array import FormatError, Reader, validation

pytestmark = pytest.mark.usefixtures("fresh_memo")


def _listing(path) -> list:
    with Reader(path) as r:
        return [(m.name, m.shape, m.dtype) for m in r]


def test_reopen_returns_the_same_validated_manifest(tmp_path):
    p = tmp_path / "a.zt"
    za.save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, p)
    with Reader(p) as r1, Reader(p) as r2:
        assert r1.manifest is r2.manifest  # decoded and validated once


def test_same_size_rewrites_are_seen(tmp_path):
    """Shape, name and values change while the file keeps its exact size."""
    p = tmp_path / "a.zt"
    za.save_file({"w": np.arange(16, dtype=np.float32).reshape(4, 4)}, p)
    size = os.path.getsize(p)
    assert _listing(p) == [("w", (4, 4), np.dtype(np.float32))]

    za.save_file({"w": np.arange(16, 32, dtype=np.float32).reshape(2, 8)}, p)
    assert os.path.getsize(p) == size
    assert _listing(p) == [("w", (2, 8), np.dtype(np.float32))]
    np.testing.assert_array_equal(
        za.load_file(p)["w"], np.arange(16, 32, dtype=np.float32).reshape(2, 8)
    )

    za.save_file({"v": np.arange(16, dtype=np.int32).reshape(4, 4)}, p)
    assert os.path.getsize(p) == size
    assert _listing(p) == [("v", (4, 4), np.dtype(np.int32))]


def test_a_manifest_corrupted_in_place_is_refused_on_reopen(tmp_path):
    p = tmp_path / "a.zt"
    za.save_file({"w": np.ones((4, 4), np.float32)}, p)
    _listing(p)  # memoized now
    with Reader(p) as r:
        start = r.manifest_offset
    raw = bytearray(p.read_bytes())
    # the component length (64 = 0x18 0x40 in CBOR) becomes 65: same size, invalid manifest
    at = raw.index(b"\x66length\x18\x40", start)
    raw[at + 8] = 0x41
    p.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="lie outside the blob area|raw length 65"):
        Reader(p)


def test_invalid_manifests_are_not_memoized(tmp_path):
    p = tmp_path / "a.zt"
    za.save_file({"w": np.ones((4, 4), np.float32)}, p)
    raw = bytearray(p.read_bytes())
    at = raw.index(b"\x66length\x18\x40")
    raw[at + 8] = 0x41
    p.write_bytes(bytes(raw))
    for _ in range(2):  # the second open checks again and fails the same way
        with pytest.raises(FormatError, match="lie outside the blob area|raw length 65"):
            Reader(p)
    assert not validation._memo


def test_attributes_handed_out_are_private_copies(tmp_path):
    p = tmp_path / "a.zt"
    with za.Writer(p) as w:
        w.attributes["note"] = "text"
        w.add_tensor("w", np.ones(3, np.float32), attributes={"nested": {"k": [1, 2]}})
    with Reader(p) as r:
        r.metadata("w").attributes["nested"]["k"].append(3)
        r.attributes["note"] = "changed"
    with Reader(p) as r:
        assert r.metadata("w").attributes == {"nested": {"k": [1, 2]}}
        assert r.attributes == {"note": "text"}


def test_private_copies_keep_every_cbor_value(tmp_path):
    """Object attributes may hold any CBOR value, including simple values and tags."""
    p = tmp_path / "a.zt"
    attrs = {
        "simple": cbor2.CBORSimpleValue(100),
        "tag": cbor2.CBORTag(4000, "x"),
        "nested": {"list": [1, 2]},
    }
    with za.Writer(p) as w:
        w.add_tensor("w", np.ones(3, np.float32), attributes=attrs)
    with Reader(p) as r:
        got = r.metadata("w").attributes
        assert got == attrs
        got["nested"]["list"].append(3)
    with Reader(p) as r:
        assert r.metadata("w").attributes == attrs


def test_the_memo_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "_MEMO_ENTRIES", 4)
    for i in range(10):
        p = tmp_path / f"{i}.zt"
        za.save_file({"w": np.full(4, i, np.float32)}, p)
        _listing(p)
    assert len(validation._memo) == 4
    assert validation._memo_held == sum(held for _data, _m, held in validation._memo.values())
    assert all(held >= len(data) for data, _m, held in validation._memo.values())
    monkeypatch.setattr(validation, "_MEMO_BYTES", 1)  # over the bound: only the newest stays
    _listing(tmp_path / "5.zt")
    assert len(validation._memo) <= 1
    # the oldest were dropped; they still open (decoded again)
    assert _listing(tmp_path / "0.zt") == [("w", (4,), np.dtype(np.float32))]
