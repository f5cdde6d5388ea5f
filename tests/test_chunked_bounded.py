"""Bounded work on hostile chunked objects (issue 15, item 13): a grid of never-written
chunks reads in bulk (the fill value set in one go, no Python step per missing chunk), and
a grid may not exceed the chunk locations its file records by more than
``MAX_UNLOCATED_CHUNKS`` cells (SPEC §8), at open and when a writer would create one.

Oracles: numpy on the array in memory (filled, then patched where chunks were written), the
counted lookups of single grid cells (``ChunkTable.locate``, spied, the real one still runs)
and the counted chunk decodes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import build_file, component
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_chunked import chunked_file

import ztensor_array as zt
from ztensor_array.errors import FormatError
from ztensor_array.layouts import chunked
from ztensor_array.layouts.chunked import read as chunked_read
from ztensor_array.layouts.chunked.grid import MAX_UNLOCATED_CHUNKS as CAP
from ztensor_array.manifest import Object


@pytest.fixture
def counted(monkeypatch):
    """How many single grid cells reads look up, and which chunks they decode (spies on our
    own functions; the real ones still run)."""
    seen = {"locate": 0, "decoded": []}
    locate = chunked.ChunkTable.locate
    decode = chunked_read._chunk

    def spy_locate(self, index):
        seen["locate"] += 1
        return locate(self, index)

    def spy_decode(obj, grid, get, index, stored, path, name):
        seen["decoded"].append(tuple(index))
        return decode(obj, grid, get, index, stored, path, name)

    monkeypatch.setattr(chunked.ChunkTable, "locate", spy_locate)
    monkeypatch.setattr(chunked_read, "_chunk", spy_decode)
    return seen


def _empty(path, shape, chunk_shape, fill=0):
    """A file whose one object is a chunked grid with no chunk written (about 150 bytes)."""
    grid = chunked.grid_attributes(chunk_shape, "f64", fill)
    with zt.Writer(path, "w") as w:
        w.add_object("c", "chunked", shape, {}, attributes={"chunk_grid": grid})


def _write(path, box, values) -> None:
    """Write ``values`` into the box ``box`` of object ``c`` (the sequential driver)."""
    with zt.Reader(path) as r:
        obj = r.metadata("c").object
    with zt.Writer(path, "a") as w:
        w.write_chunked("c", obj, obj.shape, box, values)


def test_a_grid_of_never_written_chunks_reads_in_bulk(tmp_path, counted):
    p = tmp_path / "h.zt"
    _empty(p, (CAP,), (1,), fill=7)
    assert p.stat().st_size < 200
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("c"), np.full(CAP, 7.0))
        np.testing.assert_array_equal(r.read_slice("c", np.s_[::-3]), np.full(-(-CAP // 3), 7.0))
        np.testing.assert_array_equal(r.read_points("c", np.arange(5000)), np.full(5000, 7.0))
    assert counted["locate"] == 0 and counted["decoded"] == []

    _write(p, ((5, 8),), np.array([1.0, 2.0, 3.0]))
    want = np.full(CAP, 7.0)
    want[5:8] = [1, 2, 3]
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("c"), want)
        np.testing.assert_array_equal(r.read_slice("c", np.s_[CAP:0:-1]), want[CAP:0:-1])
    assert counted["locate"] == 0
    assert sorted(counted["decoded"]) == sorted([(5,), (6,), (7,)] * 2)


def test_points_across_a_wide_sparse_grid_decode_only_stored_chunks(tmp_path, counted):
    p = tmp_path / "w.zt"
    _empty(p, (1024, 1024), (1, 1), fill=-1)
    _write(p, ((3, 5), (10, 12)), np.arange(4.0).reshape(2, 2))
    want = np.full((1024, 1024), -1.0)
    want[3:5, 10:12] = np.arange(4.0).reshape(2, 2)
    rows = np.array([4, 3, 900, 4])
    with zt.Reader(p) as r:  # 4 points x 1024 columns: 4096 cells, 4 stored
        np.testing.assert_array_equal(r.read_points("c", (rows, slice(None))), want[rows])
        np.testing.assert_array_equal(r.read_slice("c", (rows, slice(None))), want[rows])
    assert counted["locate"] == 0
    stored = [(3, 10), (3, 11), (4, 10), (4, 11)]  # each once per read (row 4 is picked twice)
    assert sorted(counted["decoded"]) == sorted(stored * 2)


def _old_form(path, n: int) -> None:
    """A hand-built file of the one-component-per-chunk form: shape [n], chunks of one
    element, only chunks 5 and n - 1 written."""
    grid = {"chunk_shape": [1], "dtype": "f64", "fill_value": -2.0}
    comps = {"c.5": component("f64", 64, 8), f"c.{n - 1}": component("f64", 128, 8)}
    obj = {"shape": [n], "format": "chunked", "attributes": {"chunk_grid": grid}}
    obj["components"] = comps
    blobs = {64: np.float64(5).tobytes(), 128: np.float64(9).tobytes()}
    build_file(path, {"c": obj}, blobs)


def test_the_old_one_component_per_chunk_form_is_bounded_alike(tmp_path, counted):
    p = tmp_path / "old.zt"
    n = CAP + 2  # two chunks located: two cells more than the cap allows an empty grid
    _old_form(p, n)
    want = np.full(n, -2.0)
    want[5], want[-1] = 5, 9
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("c"), want)
        np.testing.assert_array_equal(r.read_points("c", np.array([n - 1, 0, 5])), [9, -2, 5])
    assert counted["locate"] == 3  # the three points' own chunks, none for the whole read
    assert sorted(counted["decoded"]) == sorted([(5,), (n - 1,)] * 2)  # each once per read
    _old_form(p, n + 1)
    with pytest.raises(FormatError, match=rf"{p}, object 'c': grid of {n + 1} chunks"):
        zt.Reader(p)


def test_a_grid_beyond_the_cap_is_refused_at_open_naming_file_and_object(tmp_path):
    p = tmp_path / "big.zt"
    _empty(p, (CAP,), (1,))
    raw = p.read_bytes()
    # the same 150-byte file declaring ten times the cells (shape is a CBOR uint: same width)
    hostile = raw.replace(b"\x1a" + CAP.to_bytes(4, "big"), b"\x1a" + (10 * CAP).to_bytes(4, "big"))
    assert hostile != raw and len(hostile) == len(raw)
    p.write_bytes(hostile)
    with pytest.raises(FormatError, match=r"object 'c'.*grid of 10485760 chunks") as err:
        zt.Reader(p)
    assert str(p) in str(err.value)


def test_writers_refuse_a_grid_beyond_the_cap_and_keep_the_file(tmp_path):
    p = tmp_path / "w.zt"
    zt.save_file({"a": np.arange(3.0)}, p)
    before = p.read_bytes()
    grid = chunked.grid_attributes((1,), "f64", 0)
    with pytest.raises(FormatError, match=r"object 'c'.*more than 1048576 chunks"):
        with zt.Writer(p, "a") as w:
            w.add_object("c", "chunked", (CAP + 1,), {}, attributes={"chunk_grid": grid})
    obj = Object((10 * CAP,), "chunked", {}, {"chunk_grid": grid})
    with pytest.raises(FormatError, match=r"object 'c'.*beyond the 5 it locates"):
        with zt.Writer(p, "a") as w:
            w.write_chunked("c", obj, obj.shape, ((0, 5),), np.ones(5))
    assert p.read_bytes() == before
    new = tmp_path / "new.zt"
    with pytest.raises(FormatError, match=r"object 'c'.*beyond the 5 it locates") as err:
        with zt.Writer(new, "w") as w:
            w.write_chunked("c", obj, obj.shape, ((0, 5),), np.ones(5))
    assert str(new) in str(err.value) and not new.exists()
    # written chunks count as located: a dense grid of many chunks is fine
    zt.to_ztensor(np.arange(CAP + 10, dtype="f4"), tmp_path / "ok.zt", "x", chunks=(1 << 12,))


@st.composite
def _sparse_case(draw):
    """A grid of more cells than the selection threshold, a few chunks in the old
    one-component-per-chunk form, up to three region writes (index segments over them)."""
    if draw(st.booleans()):
        shape, chunks = (draw(st.integers(2100, 2600)),), (draw(st.sampled_from([1, 2])),)
    else:
        shape = (draw(st.integers(40, 50)), draw(st.integers(40, 50)))
        chunks = (1, draw(st.sampled_from([1, 2])))
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    cell = st.tuples(*[st.integers(0, g - 1) for g in grid])
    old = draw(st.sets(cell, max_size=6))
    boxes = []
    for _ in range(draw(st.integers(0, 3))):
        box = []
        for n in shape:
            a = draw(st.integers(0, n - 1))
            box.append((a, draw(st.integers(a + 1, min(n, a + 5)))))
        boxes.append(tuple(box))
    slices = st.builds(
        slice,
        st.none() | st.integers(-60, 60),
        st.none() | st.integers(-60, 60),
        st.none() | st.sampled_from([1, 2, 3, -1, -7]),
    )
    orth = tuple(
        draw(slices | st.lists(st.integers(-n, n - 1), max_size=6).map(np.array)) for n in shape
    )
    npoints = draw(st.integers(1, 6))
    points = tuple(
        draw(slices)
        if i and draw(st.booleans())
        else np.array(draw(st.lists(st.integers(0, n - 1), min_size=npoints, max_size=npoints)))
        for i, n in enumerate(shape)
    )
    return shape, chunks, old, boxes, orth, points


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_sparse_case())
def test_sparse_grids_read_as_numpy_says(tmp_path, counted, case):
    """Grids wider than the selection threshold take the bulk path: the same values as
    numpy, with the old chunk components and newer index segments in their precedence."""
    shape, chunks, old, boxes, orth, points = case
    p = tmp_path / "s.zt"
    p.unlink(missing_ok=True)
    arr = np.arange(int(np.prod(shape)), dtype="<f8").reshape(shape) + 1000
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    every = set(itertools.product(*[range(g) for g in grid]))
    chunked_file(p, arr, chunks, fill=-5, skip=every - old)
    want = np.full(shape, -5.0)
    for index in old:
        box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))
        want[box] = arr[box]
    for k, box in enumerate(boxes):
        values = np.full([b - a for a, b in box], float(k))
        with zt.Reader(p) as r:
            obj = r.metadata("x").object
        with zt.Writer(p, "a") as w:
            w.write_chunked("x", obj, shape, box, values)
        want[tuple(slice(a, b) for a, b in box)] = values
    counted["locate"] = 0
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), want)
        got = r.read_slice("x", orth)
        expect = want
        for axis, k in enumerate(orth):
            if isinstance(k, slice):
                expect = expect[(slice(None),) * axis + (k,)]
            else:
                expect = np.take(expect, k.astype(np.int64), axis=axis)
        np.testing.assert_array_equal(got, expect)
        picked = [a for a, k in enumerate(points) if not isinstance(k, slice)]
        moved = np.moveaxis(want, picked, range(len(picked)))
        order = [points[a] for a in picked] + [k for k in points if isinstance(k, slice)]
        np.testing.assert_array_equal(r.read_points("x", points), moved[tuple(order)])
    assert counted["locate"] <= 1024 * 3  # never a lookup per cell of the whole grid
