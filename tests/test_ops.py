"""The shared rules of ztensor_array.ops: the compress/level pair, the checksum vocabulary,
the output rules, and progress reporting, checked through the operations that use them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import torn_file

import ztensor_array as zt
from ztensor_array.codecs.policy import DEFAULT_LEVEL
from ztensor_array.errors import FileExistsZTError, InvalidArgumentError
from ztensor_array.ops.base import KEEP, Progress, compression
from ztensor_array.ops.migrate import migrate
from ztensor_array.ops.repair import repair
from ztensor_array.ops.rewrite import rewrite
from ztensor_array.ops.verify import verify

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")


@pytest.mark.parametrize(
    "compress,level,want",
    [
        (False, None, 0),
        (True, None, DEFAULT_LEVEL),
        (False, 19, 19),  # a level alone asks for compression
        (True, 9, 9),
        (5, None, 5),
        (5, 9, 5),  # an explicit level in compress wins
        (0, 9, 0),  # 0 is a level (raw), not the flag False
        (1, 9, 1),  # 1 is a level, not the flag True
    ],
)
def test_compression_pair(compress, level, want):
    assert compression(compress, level) == want


def test_compression_refuses_bad_levels():
    for bad in (23, -1, 2.5, "3"):
        with pytest.raises(InvalidArgumentError):
            compression(bad)


def _digests(path):
    with zt.Reader(path) as r:
        return {
            n: {c.digest.split(":")[0] if c.digest else None for c in o.components.values()}
            for n, o in r.manifest.objects.items()
        }


@pytest.fixture
def mixed(tmp_path):
    """One object per digest state: crc32c, sha256, none."""
    path = tmp_path / "mixed.zt"
    with zt.Writer(path) as w:
        w.add_tensor("crc", np.arange(100, dtype=np.float32), checksum="crc32c")
        w.add_tensor("sha", np.arange(50, dtype=np.int16), checksum="sha256")
        w.add_tensor("plain", np.ones(10, np.uint8))
    return path


@pytest.mark.parametrize(
    "checksum,want",
    [
        (KEEP, {"crc": {"crc32c"}, "sha": {"sha256"}, "plain": {None}}),
        (None, {"crc": {None}, "sha": {None}, "plain": {None}}),
        ("none", {"crc": {None}, "sha": {None}, "plain": {None}}),
        ("sha256", {"crc": {"sha256"}, "sha": {"sha256"}, "plain": {"sha256"}}),
    ],
)
def test_rewrite_checksum_vocabulary(mixed, tmp_path, checksum, want):
    out = tmp_path / "out.zt"
    rewrite(mixed, out, compress=True, checksum=checksum)
    assert _digests(out) == want
    with zt.Reader(mixed) as a, zt.Reader(out) as b:
        for name in a.tensor_names:
            np.testing.assert_array_equal(b.read_tensor(name, verify_checksum=True), a[name])


def test_rewrite_refuses_an_unknown_checksum(mixed, tmp_path):
    with pytest.raises(InvalidArgumentError):
        rewrite(mixed, tmp_path / "out.zt", compress=True, checksum="md5")
    assert not (tmp_path / "out.zt").exists()


def test_migrate_checksum_vocabulary_matches_rewrite(tmp_path):
    """KEEP is the default and may be spelled out; None means no digests, as in rewrite."""
    src = os.path.join(LEGACY, "zstd_checksum.zt")
    default, keep, none = (tmp_path / f"{n}.zt" for n in ("default", "keep", "none"))
    migrate(src, default)
    migrate(src, keep, checksum=KEEP)
    migrate(src, none, checksum=None)
    assert _digests(default) == _digests(keep)
    assert _digests(keep)["zstd_crc"] == {"crc32c"} and _digests(keep)["zstd_plain"] == {None}
    assert all(v == {None} for v in _digests(none).values())
    assert default.read_bytes() == keep.read_bytes()


class Recorder(Progress):
    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.advanced = 0

    def start(self, description: str, total: int | None) -> None:
        self.started.append((description, total))

    def advance(self, n: int) -> None:
        self.advanced += n


def test_verify_and_migrate_report_progress(mixed, tmp_path):
    bar = Recorder()
    assert verify(mixed, progress=bar) == []
    with zt.Reader(mixed) as r:
        stored = sum(c.length for o in r.manifest.objects.values() for c in o.components.values())
        assert bar.started == [("verify mixed.zt", r.size)] and bar.advanced == stored
    bar = Recorder()
    src = os.path.join(LEGACY, "wheel_dense.zt")
    migrate(src, tmp_path / "m.zt", progress=bar)
    with zt.Reader(src) as r:
        stored = sum(c.length for o in r.manifest.objects.values() for c in o.components.values())
        assert bar.started == [("migrate -> m.zt", r.size)] and bar.advanced == stored


def test_repair_to_an_existing_output_needs_overwrite(tmp_path):
    path, good = torn_file(tmp_path)
    torn = path.read_bytes()
    out = tmp_path / "fixed.zt"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsZTError):
        repair(path, out)
    assert out.read_bytes() == b"precious"
    report = repair(path, out, overwrite=True)
    assert report.changed and report.kept_size == len(good)
    assert out.read_bytes() == good and path.read_bytes() == torn


def test_top_level_names_are_the_ops():
    from ztensor_array.ops import compact, repair

    assert zt.repair is repair.repair and zt.compact is compact.compact
