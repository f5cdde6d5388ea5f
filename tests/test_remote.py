"""Remote and file-like reads (issue 16): every reader takes a local path, an fsspec URL
(with ``storage_options``), bytes-like contents or an open binary file object, and reads a
remote file with as few range requests as the format allows.

The servers are real and started here: ``tests/range_server.py`` (a threaded localhost HTTP
server honouring Range, counting every request it answers, misbehaving on demand) and moto's
S3 server reached through s3fs. Request counts are asserted on the server side. Every value
is compared with what the same file reads as from a local path.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tempfile

import dask.array as da
import numpy as np
import pytest
import scipy.sparse
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from range_server import RangeServer
from test_chunked import chunked_file
from test_quantized import make, pack_columns

import ztensor_array as zt
from ztensor_array import sources
from ztensor_array.backends.dask import from_ztensor
from ztensor_array.backends.xarray.entrypoint import ZTensorBackendEntrypoint
from ztensor_array.errors import ObjectChangedError, RemoteError, ZTensorError
from ztensor_array.numpy import load_file, save_file
from ztensor_array.reader import SourceReader, forget_shared

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

KiB = 1 << 10


@pytest.fixture
def server(tmp_path):
    with RangeServer(str(tmp_path)) as srv:
        yield srv


def _gets(srv: RangeServer) -> list[tuple[int, int]]:
    """The (first, last) byte of each range GET the server answered, in order."""
    out = []
    for method, _, rng in srv.requests:
        assert method == "GET"
        first, last = rng.removeprefix("bytes=").split("-")
        out.append((int(first) if first else -1, int(last)))
    return out


def _same(a, b) -> None:
    if scipy.sparse.issparse(a):
        assert type(a) is type(b)
        a, b = a.toarray(), b.toarray()
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _every_layout(path) -> None:
    """Dense raw (small and beyond the tail), zstd, sparse CSR and COO, quantized, and a
    chunked tensor stored with an index segment; each with digests."""
    rng = np.random.default_rng(0)
    q, z, s = make(rng, 64, 256, 4, 32)
    with zt.Writer(path) as w:
        w.add_tensor("small", np.arange(12, dtype="<i4").reshape(3, 4), checksum="crc32c")
        w.add_tensor("big", rng.random((300, 400)), checksum="crc32c")  # 960 KB
        w.add_tensor("zstd", np.arange(200_000, dtype="<f8"), compress=True, checksum="sha256")
        w.add_sparse("csr", scipy.sparse.random(300, 200, 0.05, "csr", random_state=1))
        w.add_sparse("coo", scipy.sparse.random(50, 40, 0.1, "coo", random_state=2))
        w.add_quantized_group(
            "q", pack_columns(q, 4), s, pack_columns(z.T, 4).T, (64, 256), bits=4, group_size=32
        )
    zt.to_ztensor(
        rng.random((64, 64)).astype("f4"), path, "chunked", mode="a", chunks=(16, 64),
        compress=True, checksum="crc32c",
    )  # fmt: skip


@pytest.fixture
def layouts_file(tmp_path):
    path = tmp_path / "all.zt"
    _every_layout(path)
    return path


def _local(path) -> dict:
    with zt.Reader(path) as r:
        return {n: r.read_tensor(n, copy=True) for n in r.tensor_names}


# --------------------------------------------------------------------------- one way in


def test_every_source_reads_every_layout_as_the_local_file(layouts_file, server):
    want = _local(layouts_file)
    data = layouts_file.read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/ztensor-test/all.zt", data)

    class ReadOnly:  # seek and read, no readinto
        def __init__(self, raw: bytes) -> None:
            self._f = io.BytesIO(raw)

        def seek(self, *a):
            return self._f.seek(*a)

        def tell(self):
            return self._f.tell()

        def read(self, n=-1):
            return self._f.read(n)

    opened = open(layouts_file, "rb")  # noqa: SIM115 (closed below)
    try:
        for src in (
            server.url("all.zt"),
            "memory://ztensor-test/all.zt",
            "simplecache::" + server.url("all.zt"),
            "blockcache::" + server.url("all.zt"),
            f"file://{layouts_file}",
            data,
            bytearray(data),
            memoryview(data),
            io.BytesIO(data),
            opened,
            ReadOnly(data),
        ):
            with zt.Reader(src, verify=True) as r:
                assert set(r.tensor_names) == set(want)
                for name, value in want.items():
                    _same(r.read_tensor(name), value)
                    _same(r.read_slice(name, ()), value) if name != "csr" else None
    finally:
        opened.close()
        fs.rm("/ztensor-test", recursive=True)
    got = load_file(server.url("all.zt"), verify_checksum=True)
    for name, value in want.items():
        _same(got[name], value)


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.mark.parametrize("folder", ["legacy", "v12"])
def test_fixture_files_read_over_http_as_locally(folder):
    """The v0.1 files (their own container) and the v1.2 ones, good and bad alike: the same
    tensors, or the same error."""
    root = os.path.join(DATA, folder)
    with RangeServer(root) as srv:
        for name in sorted(f for f in os.listdir(root) if f.endswith(".zt")):
            path = os.path.join(root, name)
            try:
                want = _local(path)
            except ZTensorError as exc:
                with pytest.raises(type(exc)):
                    _local(srv.url(name))
                continue
            got = _local(srv.url(name))
            assert set(got) == set(want), name
            for key, value in want.items():
                _same(got[key], value)


def test_selections_of_a_remote_file_match_the_local_ones(layouts_file, server):
    keys = [
        (slice(3, 90, 7), slice(None, None, -5)),
        (np.array([5, 0, 40]), 17),
        (slice(None), 3),
        (slice(10, 2, -2),),
        (slice(0, 0),),
    ]
    with zt.Reader(layouts_file) as local, zt.Reader(server.url("all.zt")) as r:
        for name in ("big", "zstd", "chunked"):
            for key in keys:
                key = key[: len(local.metadata(name).shape)]
                _same(r.read_slice(name, key), local.read_slice(name, key))
        points = (np.array([1, 50, 63]), np.array([0, 9, 63]))
        _same(r.read_points("chunked", points), local.read_points("chunked", points))


class _CountingFile(io.BytesIO):
    """A file object that records the (offset, length) of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def readinto(self, buffer) -> int:
        self.reads.append((self.tell(), len(buffer)))
        return super().readinto(buffer)


@st.composite
def _window_case(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    key = []
    for n in shape:
        step = st.none() | st.sampled_from([1, 2, -1, -3])
        bound = st.none() | st.integers(-n - 2, n + 2)
        key.append(
            draw(
                st.one_of(
                    st.builds(slice, bound, bound, step),
                    st.integers(-n, n - 1),
                    st.lists(st.integers(-n, n - 1), max_size=4),
                )
            )
        )
    return shape, tuple(key)


@settings(max_examples=60, deadline=None)
@given(_window_case())
def test_a_window_of_a_dense_tensor_reads_exactly_its_bounding_bytes(case):
    shape, key = case
    x = np.arange(int(np.prod(shape)), dtype="<f8").reshape(shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.zt")
        zt.to_ztensor({"x": x, "pad": np.zeros(10_000)}, path)  # x outside the tail read
        with open(path, "rb") as f:
            data = f.read()
    want = x
    for axis, k in reversed(list(enumerate(key))):  # orthogonal selection, by numpy
        want = want[(slice(None),) * axis + (k if not isinstance(k, list) else np.array(k, int),)]
    f = _CountingFile(data)
    with zt.Reader(f) as r:
        offset = r.metadata("x").object.components["data"].offset
        f.reads.clear()
        got = r.read_slice("x", key)
    _same(got, want)
    picked = [
        np.arange(n)[k if not isinstance(k, list) else np.array(k, int)] for n, k in zip(shape, key)
    ]
    picked = [np.atleast_1d(p) for p in picked]
    if any(p.size == 0 for p in picked):
        assert f.reads == []  # nothing selected: nothing read
        return
    lo = np.ravel_multi_index(tuple(int(p.min()) for p in picked), shape)
    hi = np.ravel_multi_index(tuple(int(p.max()) for p in picked), shape) + 1
    assert f.reads == [(offset + 8 * lo, 8 * (hi - lo))]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3_000_000), st.integers(0, 400_000)), max_size=12),
    st.integers(0, 300_000),
)
def test_merged_ranges_cover_each_span_once_and_stay_apart(spans, gap):
    groups = sources.merge(spans, gap)
    members = sorted(m for g in groups for m in g[2])
    assert members == list(range(len(spans)))  # every span in exactly one range
    for start, end, mine in groups:
        assert all(start <= spans[m][0] and spans[m][0] + spans[m][1] <= end for m in mine)
        assert start == min(spans[m][0] for m in mine)
        assert end == max(spans[m][0] + spans[m][1] for m in mine)  # nothing beyond them
    for (prev_start, end, _), (start, _, mine) in zip(groups, groups[1:]):
        # ranges are sorted and disjoint, and apart by more than the gap unless taking in
        # the next span would have made a range over MAX_BLOCK
        assert end <= start
        first_end = spans[mine[0]][0] + spans[mine[0]][1]
        assert start - end > gap or first_end - prev_start > sources.MAX_BLOCK


def test_storage_options_reach_the_server(tmp_path, server):
    zt.to_ztensor(np.arange(10), tmp_path / "a.zt", "x")
    opts = {"headers": {"X-Ztensor-Test": "yes"}}
    with zt.Reader(server.url("a.zt"), storage_options=opts) as r:
        _same(r.read_tensor("x"), np.arange(10))
    assert all(h.get("X-Ztensor-Test") == "yes" for h in server.headers)
    with pytest.raises(ZTensorError, match="storage_options apply to URLs only"):
        zt.Reader(tmp_path / "a.zt", storage_options=opts)


def test_safe_open_reads_a_url(tmp_path, server):
    from ztensor_array.safe import safe_open

    zt.to_ztensor({"a": np.arange(6.0).reshape(2, 3)}, tmp_path / "m.zt")
    with safe_open(server.url("m.zt"), "np") as f:
        assert list(f.keys()) == ["a"]
        _same(f.get_tensor("a"), np.arange(6.0).reshape(2, 3))
        _same(f.get_slice("a")[1:, 1:], np.array([[4.0, 5.0]]))


def test_info_and_verify_take_a_url(layouts_file, server):
    from click.testing import CliRunner

    from ztensor_array.cli import cli

    url = server.url("all.zt")
    shown = CliRunner().invoke(cli, ["info", "--json", url])
    assert shown.exit_code == 0, shown.output
    assert '"path": "' + url in shown.output and '"name": "chunked"' in shown.output
    checked = CliRunner().invoke(cli, ["verify", "--deep", url])
    assert checked.exit_code == 0 and "OK (deep)" in checked.output
    data = bytearray(layouts_file.read_bytes())
    with zt.Reader(layouts_file) as r:
        small = r.metadata("small").object.components["data"]
    data[small.offset] ^= 1  # a digest no longer matches
    (layouts_file.parent / "bad.zt").write_bytes(bytes(data))
    bad = CliRunner().invoke(cli, ["verify", server.url("bad.zt")])
    assert bad.exit_code == 1 and "'small'" in bad.output


def test_without_fsspec_a_url_names_the_remote_extra(tmp_path):
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "import ztensor_array as zt\n"
        "from ztensor_array.backends.xarray.entrypoint import ZTensorBackendEntrypoint as E\n"
        "assert not E().guess_can_open('s3://bucket/x.zt')\n"
        "try:\n"
        "    zt.Reader('s3://bucket/x.zt')\n"
        "except zt.ZTensorError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "s3://bucket/x.zt" in out.stdout and "ztensor-array[remote]" in out.stdout


def test_guess_can_open_only_what_it_opens(tmp_path):
    path = tmp_path / "a.zt"
    zt.to_ztensor(np.arange(3), path, "x")
    data = path.read_bytes()
    guess = ZTensorBackendEntrypoint().guess_can_open
    assert guess("https://host/data/a.zt") and guess("s3://bucket/a.zt?versionId=1")
    assert guess("simplecache::s3://bucket/a.zt")
    assert not guess("https://host/data/a.nc") and not guess("s3://bucket/a.zarr")
    assert guess(data) and guess(memoryview(data)) and not guess(b"\x89HDF\r\n\x1a\n" + data)
    f = io.BytesIO(data)
    f.seek(5)
    assert guess(f) and f.tell() == 5  # its position kept
    assert not guess(io.BytesIO(b"CDF\x01" + data))


def test_a_missing_or_foreign_object_is_a_clear_error(tmp_path, server):
    with pytest.raises(ZTensorError, match="no such file") as exc:
        zt.Reader(server.url("nope.zt"))
    assert server.url("nope.zt") in str(exc.value)
    (tmp_path / "x.nc").write_bytes(b"CDF\x01" + bytes(200))
    with pytest.raises(ZTensorError, match="x.nc"):
        zt.Reader(server.url("x.nc"))
    with pytest.raises(ZTensorError, match="a file must be a path"):
        zt.Reader(12)


# --------------------------------------------------------------------------- request counts


def test_open_is_one_round_trip_of_two_requests(tmp_path, server):
    zt.to_ztensor(np.arange(100), tmp_path / "small.zt", "x")
    zt.to_ztensor({"x": np.arange(100_000.0), "y": np.arange(10)}, tmp_path / "large.zt")
    with zt.Reader(server.url("small.zt")) as r:
        # one round trip: the last and the first 64 KiB, concurrently (here the whole file)
        assert sorted(_gets(server)) == [(-1, 64 * KiB), (0, 64 * KiB - 1)]
        server.reset()
        _same(r.read_tensor("x"), np.arange(100))
        assert server.requests == []  # served from the tail
    server.reset()
    with zt.Reader(server.url("large.zt")) as r:
        # tail and front (magic) at once
        assert sorted(_gets(server)) == [(-1, 64 * KiB), (0, 64 * KiB - 1)]
        server.reset()
        _same(r.read_tensor("y"), np.arange(10))
        assert server.requests == []  # small tensors near the manifest come with the tail
        _same(r.read_tensor("x"), np.arange(100_000.0))
        x = r.metadata("x").object.components["data"]
        assert _gets(server) == [(x.offset, x.offset + x.length - 1)]  # exactly its bytes


def test_a_manifest_larger_than_the_tail_costs_one_more_round(tmp_path, server):
    with zt.Writer(tmp_path / "many.zt") as w:
        for i in range(3000):
            w.add_tensor(f"t{i:05d}", np.arange(i % 5 + 1, dtype="u1"))
    with zt.Reader(tmp_path / "many.zt") as local:
        assert local.size - local.manifest_offset > 64 * KiB
    with zt.Reader(server.url("many.zt")) as r:
        gets = _gets(server)
        assert len(r.tensor_names) == 3000
    # tail and front at once; then the manifest's first part
    assert sorted(gets[:2]) == [(-1, 64 * KiB), (0, 64 * KiB - 1)]
    assert len(gets) == 3 and gets[2][1] == local.size - 64 * KiB - 1


def test_one_tensor_is_one_request(layouts_file, server):
    with zt.Reader(server.url("all.zt"), verify=True) as r:
        for name in ("big", "zstd", "csr", "coo", "q"):
            server.reset()
            r.read_tensor(name)
            # several components (sparse, quantized): one merged range, or none when they
            # came with the tail
            assert len(server.requests) <= 1, name
        assert len(r.metadata("q").object.components) == 3


@pytest.mark.parametrize("form", ["index", "roles"])
def test_adjacent_chunks_are_fetched_in_one_request(tmp_path, server, form):
    x = np.arange(64 * 2048, dtype="<f4").reshape(64, 2048)  # chunks of 64 KiB
    path = tmp_path / "c.zt"
    if form == "roles":  # one component per chunk (files of earlier versions)
        chunked_file(path, x, (8, 2048))
    else:
        zt.to_ztensor(x, path, "x", chunks=(8, 2048))
    # a large tensor after it: the chunks lie outside the speculative tail (and none
    # inside the first 64 KiB, which an open fetches too)
    zt.to_ztensor(np.zeros(40_000), path, "pad", mode="a")
    with zt.Reader(path) as local:
        assert form == "roles" or not any(
            k.startswith("c.") for k in local.metadata("x").object.components
        )
        chunks = local.chunks("x")
    with zt.Reader(server.url("c.zt")) as r:
        r.chunks("x")  # the index segment (one request, kept), outside the tail here
        server.reset()
        _same(r.read_slice("x", (slice(17, 20), 5)), x[17:20, 5])  # one chunk
        one = chunks[(2, 0)]
        assert _gets(server) == [(one.offset, one.offset + one.length - 1)]
        server.reset()
        _same(r.read_slice("x", (slice(10, 50), slice(3, 9))), x[10:50, 3:9])  # chunks 1..6
        want = (chunks[(1, 0)].offset, chunks[(6, 0)].offset + chunks[(6, 0)].length - 1)
        assert _gets(server) == [want]
        server.reset()
        _same(r.read_tensor("x"), x)  # all 8 chunks: one range
        assert len(server.requests) == 1


def test_a_dense_window_fetches_only_its_bounding_bytes(tmp_path, server):
    x = np.arange(500 * 400, dtype="<f8").reshape(500, 400)
    zt.to_ztensor(x, tmp_path / "d.zt", "x")
    with zt.Reader(server.url("d.zt")) as r:
        server.reset()
        _same(r.read_slice("x", (slice(100, 110), slice(50, 60))), x[100:110, 50:60])
        ((first, last),) = _gets(server)
        data = r.metadata("x").object.components["data"].offset
        assert first == data + (100 * 400 + 50) * 8 and last == data + (109 * 400 + 60) * 8 - 1


def test_a_dask_array_reads_blocks_in_one_request_each(tmp_path, server):
    import dask

    x = np.random.default_rng(0).random((64, 48)).astype("f4")
    zt.to_ztensor(np.zeros(40_000), tmp_path / "c.zt", "front")  # beyond the open's reads:
    zt.to_ztensor(x, tmp_path / "c.zt", "x", mode="a", chunks=(8, 48), compress=True)
    zt.to_ztensor(np.zeros(40_000), tmp_path / "c.zt", "pad", mode="a")
    forget_shared()
    arr = from_ztensor(server.url("c.zt"), "x")
    assert len(pickle.dumps(arr.dask)) < 20 * KiB
    opened = len(server.requests)
    with dask.config.set(scheduler="threads"):
        _same(arr.compute(), x)
    # the index segment once (threads wanting it wait for one fetch), then one request
    # per chunk; the tasks read through the reader from_ztensor opened
    assert len(server.requests) - opened == 1 + 8


def test_chunks_of_a_remote_variable_are_blocks_of_adjacent_chunks(tmp_path, server):
    from ztensor_array.backends.xarray.variables import adjacent_block

    # trailing axes whole while the block holds at most `limit` bytes, then whole chunks
    assert adjacent_block((1035, 180, 360), (24, 90, 90), 4, 32 << 20) == (120, 180, 360)
    assert adjacent_block((1035, 180, 360), (24, 90, 90), 4, 1 << 20) == (24, 90, 90)
    assert adjacent_block((5000, 5000), (100, 100), 8, 32 << 20) == (800, 5000)
    assert adjacent_block((10, 7), (3, 3), 8, 10**9) == (10, 7)
    x = np.random.default_rng(0).random((64, 2048)).astype("f4")
    ds = xr.Dataset({"x": (("a", "b"), x)})
    zt.to_ztensor(ds, tmp_path / "c.zt", encoding={"x": {"chunks": (8, 512)}})
    with xr.open_dataset(tmp_path / "c.zt", engine="ztensor", chunks={}) as local:
        assert local.x.chunks == ((8,) * 8, (512,) * 4)  # local files: the stored chunks
    with xr.open_dataset(server.url("c.zt"), engine="ztensor", chunks={}) as remote:
        assert remote.x.chunks == ((64,), (2048,))  # 512 KiB: one block, one request
        server.reset()
        _same(remote.x.values, x)
        assert len(server.requests) == 1


# --------------------------------------------------------------------------- bad servers


def test_a_server_ignoring_range_is_read_whole_once_or_refused(tmp_path, server, monkeypatch):
    x = np.arange(100_000.0)
    zt.to_ztensor(x, tmp_path / "a.zt", "x")
    server.ignore_range = True
    with zt.Reader(server.url("a.zt")) as r:
        _same(r.read_tensor("x"), x)
        _same(r.read_slice("x", slice(5, 9)), x[5:9])
    # the whole object once, served from memory after (the magic's request, answered
    # whole too, is closed unread)
    assert len(server.requests) == 2
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 64 * KiB)
    with pytest.raises(RemoteError, match="ignores Range requests") as exc:
        zt.Reader(server.url("a.zt"))
    assert server.url("a.zt") in str(exc.value)


@pytest.mark.parametrize("how", ["truncate", "misplace", "ignore_later"])
def test_a_misbehaving_server_is_an_error_never_data(tmp_path, server, how):
    x = np.arange(100_000.0)
    zt.to_ztensor(x, tmp_path / "a.zt", "x")
    with zt.Reader(server.url("a.zt")) as r:
        if how == "truncate":
            server.truncate = True
        elif how == "misplace":
            server.misplace = 64
        else:
            server.ignore_range = True
        with pytest.raises(RemoteError, match="127.0.0.1") as exc:
            r.read_tensor("x")
    assert {"truncate": "truncated", "misplace": "asked for bytes", "ignore_later": "ignored"}[
        how
    ] in str(exc.value)


def test_an_answer_larger_than_asked_is_refused_unread(tmp_path, server):
    zt.to_ztensor(np.arange(100_000.0), tmp_path / "a.zt", "x")
    server.widen = 1 << 20
    with pytest.raises(RemoteError, match="asked for the last 65536 bytes"):
        zt.Reader(server.url("a.zt"))


def test_a_lying_server_is_caught_by_the_digests(tmp_path, server):
    x = np.arange(100_000.0)
    zt.to_ztensor(x, tmp_path / "a.zt", "x", checksum="crc32c")
    with zt.Reader(server.url("a.zt"), verify=True) as r:
        server.shift = 8  # other bytes, labelled as the ones asked for
        with pytest.raises(zt.ChecksumError, match="'x'"):
            r.read_tensor("x")


def test_an_object_changed_between_requests_is_detected(tmp_path, server):
    path = tmp_path / "a.zt"
    zt.to_ztensor({"x": np.arange(100_000.0), "y": np.arange(3)}, path)
    r = zt.Reader(server.url("a.zt"))
    arr = from_ztensor(server.url("a.zt"), "x", chunks=10_000)
    zt.to_ztensor({"x": np.arange(100_000.0) + 1, "y": np.arange(3)}, path, mode="w")
    with pytest.raises(ObjectChangedError, match="changed since it was opened"):
        r.read_tensor("x")
    with pytest.raises(ObjectChangedError):
        arr.compute(scheduler="threads")
    r.close()
    with zt.Reader(server.url("a.zt")) as again:  # opened again: the new object
        _same(again.read_tensor("x"), np.arange(100_000.0) + 1)


def test_a_corrupt_remote_file_fails_as_the_local_one(tmp_path, server):
    path = tmp_path / "a.zt"
    zt.to_ztensor(np.arange(1000.0), path, "x")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the footer or manifest
    (tmp_path / "bad.zt").write_bytes(bytes(data))
    with pytest.raises(ZTensorError) as local:
        zt.Reader(tmp_path / "bad.zt")
    with pytest.raises(ZTensorError) as remote:
        zt.Reader(server.url("bad.zt"))
    assert type(remote.value) is type(local.value)
    assert remote.value.reason == local.value.reason


# --------------------------------------------------------------------------- xarray


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(3)
    return xr.Dataset(
        {
            "t": (("time", "y", "x"), rng.random((24, 30, 40)).astype("f4"), {"units": "K"}),
            "n": ("time", np.arange(24, dtype="i8")),
        },
        coords={"time": np.arange(24), "y": np.linspace(0, 1, 30)},
        attrs={"title": "remote"},
    )


def test_xarray_round_trips_over_http(tmp_path, server):
    ds = _dataset()
    zt.to_ztensor(ds, tmp_path / "a.zt", encoding={"t": {"chunks": (6, 30, 40), "compress": True}})
    url = server.url("a.zt")
    server.reset()
    with xr.open_dataset(url, engine="ztensor") as opened:
        # one round trip: the tail brings the manifest, the front the coordinates that
        # xarray loads at once (the writer puts them first)
        assert sorted(_gets(server)) == [(-1, 64 * KiB), (0, 64 * KiB - 1)]
        xr.testing.assert_identical(opened.load(), ds)
    with xr.open_dataset(url, engine="ztensor", chunks={}) as lazy:
        assert len(pickle.dumps(lazy)) < 16 * KiB
        xr.testing.assert_identical(lazy.compute(), ds)
        xr.testing.assert_identical(
            lazy.isel(time=5, x=slice(3, 9)).compute(), ds.isel(time=5, x=slice(3, 9))
        )
    with open(tmp_path / "a.zt", "rb") as f, xr.open_dataset(f, engine="ztensor") as got:
        xr.testing.assert_identical(got.load(), ds)
    with xr.open_dataset((tmp_path / "a.zt").read_bytes()) as got:  # engine guessed
        xr.testing.assert_identical(got.load(), ds)
    with xr.open_datatree(url, engine="ztensor") as tree:
        xr.testing.assert_identical(tree.to_dataset().load(), ds)


def test_open_mfdataset_over_several_urls(tmp_path, server):
    ds = _dataset()
    urls = []
    for i in range(3):
        part = ds.isel(time=slice(8 * i, 8 * i + 8))
        zt.to_ztensor(part, tmp_path / f"p{i}.zt")
        urls.append(server.url(f"p{i}.zt"))
    with xr.open_mfdataset(urls, engine="ztensor", combine="by_coords") as got:
        xr.testing.assert_identical(got.compute(), ds)


def test_a_remote_store_refuses_modes_that_modify_in_place(tmp_path, server):
    ds = _dataset()
    zt.to_ztensor(ds, tmp_path / "a.zt")
    with pytest.raises(ZTensorError, match="cannot be modified in place"):
        zt.to_ztensor(ds.isel(time=slice(0, 2)), server.url("a.zt"), mode="a", append_dim="time")


# --------------------------------------------------------------------------- writing to URLs


def _upload_dirs() -> set[str]:
    import tempfile

    root = tempfile.gettempdir()
    return {d for d in os.listdir(root) if d.startswith("ztensor-upload-")}


def test_writes_to_a_url_upload_the_finished_file(tmp_path):
    fs = fsspec.filesystem("memory")
    before = _upload_dirs()
    ds = _dataset()
    try:
        zt.to_ztensor(ds, "memory://ztensor-w/ds.zt", encoding={"t": {"compress": True}})
        with xr.open_dataset("memory://ztensor-w/ds.zt", engine="ztensor") as got:
            xr.testing.assert_identical(got.load(), ds)
        zt.to_ztensor(np.arange(5), "memory://ztensor-w/a.zt", "a")
        save_file({"b": np.ones(3)}, "memory://ztensor-w/b.zt")
        _same(load_file("memory://ztensor-w/b.zt")["b"], np.ones(3))
        with pytest.raises(ZTensorError, match="exists"):
            zt.to_ztensor(np.arange(5), "memory://ztensor-w/a.zt", "a", mode="w-")
        with pytest.raises(RuntimeError, match="boom"), zt.Writer("memory://ztensor-w/c.zt") as w:
            w.add_tensor("c", np.ones(3))
            raise RuntimeError("boom")
        assert not fs.exists("/ztensor-w/c.zt")  # a failed write leaves no object
        with pytest.raises(ZTensorError, match="cannot be modified in place"):
            zt.Writer("memory://ztensor-w/a.zt", "a")
        with pytest.raises(ZTensorError, match="cannot be modified in place"):
            zt.to_ztensor(np.arange(5), "memory://ztensor-w/a.zt", "a", mode="a")
    finally:
        fs.rm("/ztensor-w", recursive=True)
    assert _upload_dirs() == before  # and no temporary file


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port, a bucket, and the storage options reaching it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    endpoint = f"http://127.0.0.1:{srv._server.port}"
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    fs = fsspec.filesystem("s3", **opts)
    fs.mkdir("ztensor-test")
    try:
        yield fs, opts
    finally:
        srv.stop()


def test_s3_reads_every_layout(layouts_file, s3):
    fs, opts = s3
    fs.put_file(str(layouts_file), "ztensor-test/all.zt")
    want = _local(layouts_file)
    with zt.Reader("s3://ztensor-test/all.zt", storage_options=opts, verify=True) as r:
        assert isinstance(r, SourceReader)
        for name, value in want.items():
            _same(r.read_tensor(name), value)
        _same(r.read_slice("chunked", (slice(5, 40), 7)), want["chunked"][5:40, 7])
        _same(r.read_slice("big", (slice(5, 9), slice(1, 3))), want["big"][5:9, 1:3])
    fs.pipe("ztensor-test/all.zt", layouts_file.read_bytes()[:100])  # replaced by a stub
    with pytest.raises(ZTensorError, match="s3://ztensor-test/all.zt"):
        zt.Reader("s3://ztensor-test/all.zt", storage_options=opts)


def test_s3_xarray_and_open_mfdataset(tmp_path, s3):
    fs, opts = s3
    ds = _dataset()
    urls = []
    for i in range(2):
        local = tmp_path / f"p{i}.zt"
        zt.to_ztensor(
            ds.isel(time=slice(12 * i, 12 * i + 12)),
            local,
            encoding={"t": {"compress": True, "chunks": (4, 30, 40)}},
        )
        fs.put_file(str(local), f"ztensor-test/p{i}.zt")
        urls.append(f"s3://ztensor-test/p{i}.zt")
    with xr.open_dataset(urls[0], engine="ztensor", storage_options=opts) as one:
        xr.testing.assert_identical(one.load(), ds.isel(time=slice(0, 12)))
    kw = {"backend_kwargs": {"storage_options": opts}}
    with xr.open_mfdataset(urls, engine="ztensor", **kw) as both:
        xr.testing.assert_identical(both.compute(), ds)


def test_s3_writes_and_reads_back(tmp_path, s3):
    fs, opts = s3
    ds = _dataset()
    url = "s3://ztensor-test/written.zt"
    zt.to_ztensor(ds, url, encoding={"t": {"compress": True}}, storage_options=opts)
    with xr.open_dataset(url, engine="ztensor", storage_options=opts) as got:
        xr.testing.assert_identical(got.load(), ds)
    save_file({"x": np.arange(7)}, "s3://ztensor-test/saved.zt", storage_options=opts)
    _same(load_file("s3://ztensor-test/saved.zt", storage_options=opts)["x"], np.arange(7))


def test_s3_object_changed_between_requests(tmp_path, s3):
    fs, opts = s3
    zt.to_ztensor({"x": np.arange(100_000.0)}, tmp_path / "a.zt")
    fs.put_file(str(tmp_path / "a.zt"), "ztensor-test/changing.zt")
    with zt.Reader("s3://ztensor-test/changing.zt", storage_options=opts) as r:
        zt.to_ztensor({"x": np.arange(100_000.0) + 1}, tmp_path / "b.zt")
        fs.put_file(str(tmp_path / "b.zt"), "ztensor-test/changing.zt")
        with pytest.raises(ObjectChangedError, match="changed"):
            r.read_tensor("x")


# --------------------------------------------------------------------------- distributed


def test_distributed_workers_open_the_url_themselves(tmp_path, server):
    distributed = pytest.importorskip("distributed")
    ds = _dataset()
    zt.to_ztensor(ds, tmp_path / "a.zt", encoding={"t": {"chunks": (6, 30, 20), "compress": True}})
    url = server.url("a.zt")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        opened = xr.open_dataset(url, engine="ztensor", chunks={})
        blocks = dict(zip(opened.t.dims, opened.t.chunks))
        assert blocks == {"time": (24,), "y": (30,), "x": (40,)}  # adjacent chunks merged
        lazy = opened.chunk({"time": 12, "x": 20})  # smaller tasks, from the one block read
        server.reset()
        want = ds.t.chunk({"time": 12, "x": 20}).mean("time").compute(scheduler="threads")
        xr.testing.assert_identical(lazy.t.mean("time").compute(), want)
        opened.close()
        # the worker opened the URL itself (tail and front), then one request per block
        worker = _gets(server)
        assert sorted(worker[:2]) == [(-1, 64 * KiB), (0, 64 * KiB - 1)] and len(worker) <= 2 + 4
        arr = from_ztensor(url, "t")
        _same(arr.sum(axis=0).compute(), da.from_array(ds.t.values, (6, 30, 40)).sum(0).compute())
