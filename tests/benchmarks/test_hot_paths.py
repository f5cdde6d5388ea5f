"""pytest-benchmark micro-benchmarks of the hot paths: manifest parse, zero-copy view,
zstd decode, digests.

The default test run passes ``--benchmark-disable`` (pyproject), so each runs once as a plain
test, checking its result against an independent oracle. To measure:

    python -m pytest tests/benchmarks --benchmark-enable --benchmark-only -p no:cacheprovider
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import ztensor_array as zt
from ztensor_array import constants, manifest, validation
from ztensor_array.codecs import digests, zstd

pytest.importorskip("pytest_benchmark")

N_TENSORS = 1000


@pytest.fixture(scope="module")
def many_tensors(tmp_path_factory):
    """A file of 1000 small tensors (the input dict is the oracle for what is listed)."""
    path = tmp_path_factory.mktemp("bench") / "many.zt"
    rng = np.random.default_rng(0)
    arrays = {
        f"layer.{i:04d}": rng.standard_normal((i % 7 + 1, 8), np.float32) for i in range(N_TENSORS)
    }
    with zt.Writer(path) as w:
        for name, a in arrays.items():
            w.add_tensor(name, a)
    return path, arrays


@pytest.fixture(scope="module")
def big_tensor(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "big.zt"
    a = np.random.default_rng(1).standard_normal((2048, 1024), np.float32)  # 8 MiB
    with zt.Writer(path) as w:
        w.add_tensor("w", a)
    return path, a


def test_manifest_parse(benchmark, many_tensors):
    """Footer + CBOR decode + validation of a 1000-object manifest (what every open pays)."""
    path, arrays = many_tensors
    data = path.read_bytes()
    size = len(data)
    start, length = manifest.locate(size, data[-constants.FOOTER_SIZE :], str(path))
    raw = data[start : start + length]

    def parse():
        m = manifest.decode(raw, path=str(path))
        validation.validate(m, start, path=str(path))
        return m

    m = benchmark(parse)
    assert sorted(m.objects) == sorted(arrays)
    for name in ("layer.0000", "layer.0999"):
        assert m.objects[name].shape == arrays[name].shape


def test_open_and_list(benchmark, many_tensors):
    path, arrays = many_tensors

    def listing():
        with zt.Reader(path) as r:
            return [(t.name, t.shape, t.dtype) for t in r]

    got = benchmark(listing)
    assert got == [(n, arrays[n].shape, np.dtype(np.float32)) for n in sorted(arrays)]


def test_zero_copy_view(benchmark, big_tensor):
    """Open + one raw tensor as a read-only view of the map (no copy of the 8 MiB)."""
    path, a = big_tensor

    def view():
        with zt.Reader(path) as r:
            return r.read_tensor("w")

    got = benchmark(view)
    assert not got.flags.writeable and not got.flags.owndata
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("level", [1, 3])
def test_zstd_decode(benchmark, level):
    """Bounded streaming decode of a 2 MiB frame without content size."""
    a = np.random.default_rng(2).standard_normal(1 << 19, np.float32)  # 2 MiB
    a[::3] = 0  # some redundancy, like sparse-ish weights
    frame = zstd.compress(memoryview(a).cast("B"), level)
    import zstandard  # the oracle: the library's own streaming decoder

    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == a.tobytes()
    got = benchmark(zstd.decompress, frame, a.nbytes)
    np.testing.assert_array_equal(got.view(np.float32), a)


@pytest.mark.parametrize("algorithm", ["crc32c", "sha256"])
def test_digest(benchmark, algorithm):
    """Digest of 8 MiB of stored bytes, in the reference's text form."""
    data = np.random.default_rng(3).integers(0, 256, 8 << 20, dtype=np.uint8)
    got = benchmark(digests.compute, algorithm, data)
    if algorithm == "sha256":
        assert got == "sha256:" + hashlib.sha256(data.tobytes()).hexdigest()
    else:
        google_crc32c = pytest.importorskip("google_crc32c", reason="independent CRC32C oracle")
        assert got == f"crc32c:0x{google_crc32c.value(data.tobytes()):08X}"
