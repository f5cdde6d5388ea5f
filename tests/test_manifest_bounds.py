"""Bounded memory when opening (issue 15, item 14; SPEC §8): a manifest holds at most
``MAX_OBJECTS`` objects, refused from the CBOR map header before anything is decoded (after
decoding for an indefinite-length map), and at most ``MAX_MANIFEST_SIZE`` bytes; writers
refuse what readers would refuse. Opening a manifest of tensors costs at most ~26 bytes of
memory per manifest byte, measured as the peak resident memory (VmHWM) of a fresh
interpreter.

Manifests are built by hand (cbor2 for the pieces, the object entries joined as bytes), so a
million objects cost a fraction of a second to make.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import cbor2
import numpy as np
import pytest

import ztensor_array as zt
from ztensor_array import constants
from ztensor_array.errors import FormatError, ZTensorError

# a tensor of no elements at offset 64: valid however many share it (empty spans never overlap)
_OBJECT = cbor2.dumps(
    {
        "shape": [0],
        "format": "dense",
        "components": {"data": {"dtype": "f32", "offset": 64, "length": 0}},
    }
)
PER_BYTE = 26  # bytes of memory an open may cost per manifest byte of tensors (measured ~24)


def _header(major: int, n: int) -> bytes:
    """A definite-length CBOR header (major type 5: map)."""
    if n < 24:
        return bytes([major << 5 | n])
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def _manifest(n: int, *, indefinite: bool = False) -> bytes:
    entries = b"".join(b"\x68" + f"t{i:07d}".encode() + _OBJECT for i in range(n))
    objects = b"\xbf" + entries + b"\xff" if indefinite else _header(5, n) + entries
    return (
        _header(5, 2)
        + cbor2.dumps("version")
        + cbor2.dumps("1.1.0")
        + cbor2.dumps("objects")
        + objects
    )


def _file(path, manifest: bytes) -> None:
    with open(path, "wb") as f:
        f.write(constants.MAGIC + bytes(56) + manifest)
        f.write(struct.pack("<Q", len(manifest)) + constants.MAGIC)


_OPEN = """
import sys
import ztensor_array as zt
def hwm():
    return int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]) * 1024
base = hwm()
try:
    with zt.Reader(sys.argv[1]) as r:
        print("objects", len(r))
except zt.ZTensorError as exc:
    print("refused", exc)
print(hwm() - base)
"""


def _open_in_subprocess(path) -> tuple[str, int]:
    """(what the open said, peak memory growth in bytes) in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return out[0], int(out[-1])


def test_the_hand_built_manifest_opens(tmp_path):
    p = tmp_path / "m.zt"
    _file(p, _manifest(5))
    with zt.Reader(p) as r:
        assert r.tensor_names == [f"t{i:07d}" for i in range(5)]
        assert r.read_tensor("t0000003").shape == (0,)


def test_more_objects_than_the_cap_are_refused_before_decoding(tmp_path):
    p = tmp_path / "many.zt"
    n = constants.MAX_OBJECTS + 1
    data = _manifest(n)
    _file(p, data)
    with pytest.raises(FormatError) as err:
        zt.Reader(p)
    assert str(err.value) == (
        f"{p}: manifest holds {n} objects, more than the 1048576 a file may hold (SPEC §8)"
    )
    said, growth = _open_in_subprocess(p)
    assert said == f"refused {err.value}"
    # decoding would cost ~23x the manifest; the refusal holds it a few times at most
    assert growth < 4 * len(data), (growth, len(data))


def test_an_indefinite_length_objects_map_is_counted_after_decoding(tmp_path, monkeypatch):
    p = tmp_path / "indef.zt"
    _file(p, _manifest(4, indefinite=True))
    with zt.Reader(p) as r:
        assert len(r) == 4
    zt.validation.forget_memo()
    monkeypatch.setattr(constants, "MAX_OBJECTS", 3)
    with pytest.raises(FormatError, match="holds 4 objects, more than the 3") as err:
        zt.Reader(p)
    assert str(p) in str(err.value)


def test_writers_refuse_more_objects_than_readers_open(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "MAX_OBJECTS", 3)
    p = tmp_path / "w.zt"
    with pytest.raises(ZTensorError, match="would hold 4 objects, over the 3") as err:
        zt.save_file({f"t{i}": np.zeros(2) for i in range(4)}, p)
    assert str(p) in str(err.value) and not p.exists()
    zt.save_file({f"t{i}": np.zeros(2) for i in range(3)}, p)
    before = p.read_bytes()
    with pytest.raises(ZTensorError, match="would hold 4 objects"):
        with zt.Writer(p, "a") as w:
            w.add_tensor("t3", np.ones(2))
    assert p.read_bytes() == before
    with zt.Writer(p, "a") as w:  # replacing one keeps the count
        w.replace("t0", np.ones(2))
    with zt.Reader(p) as r:
        assert len(r) == 3


def test_a_manifest_over_the_byte_cap_is_refused_before_reading_it(tmp_path):
    p = tmp_path / "big.zt"
    _file(p, _manifest(1))
    data = bytearray(p.read_bytes())
    data[-16:-8] = struct.pack("<Q", constants.MAX_MANIFEST_SIZE + 1)
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="exceeds the 128 MiB limit") as err:
        zt.Reader(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize(
    "n", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow, id="1000000")]
)
def test_opening_costs_a_bounded_memory_per_manifest_byte(tmp_path, n):
    p = tmp_path / "n.zt"
    data = _manifest(n)
    _file(p, data)
    said, growth = _open_in_subprocess(p)
    assert said == f"objects {n}"
    assert growth < PER_BYTE * len(data), (growth / len(data), len(data))


def test_writers_refuse_a_manifest_over_the_byte_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "MAX_MANIFEST_SIZE", 1000)
    p = tmp_path / "w.zt"
    zt.save_file({"t": np.zeros(2)}, p)
    before = p.read_bytes()
    with pytest.raises(ZTensorError, match="over the 1000-byte limit") as err:
        with zt.Writer(p, "a") as w:
            w.add_tensor("u", np.zeros(2), attributes={"note": "x" * 2000})
    assert str(p) in str(err.value) and p.read_bytes() == before


def test_a_legacy_index_declaring_too_many_tensors_is_refused_before_decoding(tmp_path):
    """v0.1 files: the index is a CBOR array; its header is checked the same way (here it
    declares 2^20 + 1 tensors and holds none, so decoding would fail differently)."""
    p = tmp_path / "old.zt"
    index = _header(4, constants.MAX_OBJECTS + 1)
    p.write_bytes(constants.LEGACY_MAGIC + index + struct.pack("<Q", len(index)))
    with pytest.raises(FormatError, match=r"holds 1048577 objects, more than the 1048576") as err:
        zt.Reader(p)
    assert str(p) in str(err.value)
