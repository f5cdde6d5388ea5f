"""An append writes the manifest by splicing: the entries it keeps are copied as stored (or
re-encoded from their decoded maps when the file is laid out otherwise), only the added
objects are encoded and validated, and the result is memoized so the next open in this
process decodes nothing (issue 14).

Oracles: cbor2's decoding of the written bytes against that of a fresh encoding of the same
objects, a fresh open with the memo dropped (the memoized state must equal it), the bytes of
the file and of its manifest before the append (never rewritten; the kept entries copied
verbatim), and the reference 1.1.1 reader.
"""

from __future__ import annotations

import os

import cbor2
import numpy as np
import pytest
import scipy.sparse as sp
import ztensor as reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array import manifest, validation
from ztensor_array.constants import FOOTER_SIZE

pytestmark = pytest.mark.usefixtures("fresh_memo")


def _manifest_bytes(path) -> bytes:
    data = open(path, "rb").read()
    n = int.from_bytes(data[-FOOTER_SIZE:-8], "little")
    return data[-FOOTER_SIZE - n : -FOOTER_SIZE]


def _assert_memo_matches_a_fresh_open(path) -> None:
    size = os.path.getsize(path)
    kept = validation.memo_entry(os.fspath(path), size)
    assert kept is not None, "the append did not leave its manifest for the next open"
    with zt.Reader(path) as r:
        memo = r.manifest
    assert memo is kept[1]
    validation.forget_memo()
    with zt.Reader(path) as r:
        fresh = r.manifest
    assert fresh is not memo
    assert list(memo.objects) == list(fresh.objects)
    for name in fresh.objects:
        assert memo.objects[name] == fresh.objects[name], name
    assert memo.attributes == fresh.attributes
    assert memo.extra == fresh.extra
    np.testing.assert_array_equal(memo.objects.spans, fresh.objects.spans)
    assert memo.objects.blob_end == fresh.objects.blob_end
    # what was spliced decodes to what a fresh encoding of the same objects decodes to
    # (the order of the entries aside, which carries no meaning)
    written = cbor2.loads(_manifest_bytes(path))
    assert written == cbor2.loads(manifest.encode(fresh))
    assert len(written["objects"]) == len(fresh.objects)


_OPS = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["dense", "sparse", "attrs", "replace", "remove", "grow"]),
            st.sampled_from(["a", "b", "c", "é", "a/b", "base"]),
            st.integers(1, 20),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=4,
)


def _apply(w: zt.Writer, path, model: dict, op: str, name: str, n: int, flag: bool) -> None:
    value = np.arange(n, dtype=np.float32) + len(model)
    if op == "remove":
        if name in model:
            w.remove(name)
            del model[name]
        return
    if op == "replace":
        if name in model:
            w.replace(name, value, compress=flag)
            model[name] = value
        return
    if name in model:
        return
    if op == "dense":
        w.add_tensor(name, value, compress=flag, checksum="crc32c" if flag else None)
        model[name] = value
    elif op == "attrs":
        w.add_tensor(name, value, attributes={"units": "m", "n": n})
        model[name] = value
    elif op == "sparse":
        m = sp.random(4, n, density=0.3, format="csr", dtype=np.float64, random_state=n)
        w.add_sparse(name, m, compress=flag)
        model[name] = m.toarray()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sessions=_OPS)
def test_spliced_appends_equal_fresh_encoding_and_fresh_open(tmp_path, sessions):
    path = tmp_path / "s.zt"
    validation.forget_memo()
    zt.to_ztensor(
        {"base": np.arange(6, dtype=np.int64), "grid": np.zeros((2, 3), dtype=np.float32)},
        path,
        mode="w",
        encoding={"grid": {"chunks": (2, 2)}},
    )
    model = {"base": np.arange(6, dtype=np.int64), "grid": np.zeros((2, 3), dtype=np.float32)}
    rows = 2
    for session in sessions:
        before = open(path, "rb").read()
        with zt.Reader(path) as r:
            grid = r.metadata("grid").object
        with zt.Writer(path, "a") as w:
            for op, name, n, flag in session:
                if op == "grow":  # a chunked object grows by one band of rows
                    continue
                _apply(w, path, model, op, name, n, flag)
            if any(op == "grow" for op, *_ in session):
                band = np.full((2, 3), rows, dtype=np.float32)
                w.write_chunked("grid", grid, (rows + 2, 3), ((rows, rows + 2), (0, 3)), band)
                model["grid"] = np.concatenate([model["grid"], band])
                rows += 2
        after = open(path, "rb").read()
        assert after[: len(before) - FOOTER_SIZE] == before[:-FOOTER_SIZE] or after == before
        if after != before:
            assert after[: len(before)] == before  # no byte of the file before was rewritten
            _assert_memo_matches_a_fresh_open(path)
        with zt.Reader(path, verify=True) as r:
            for name, want in model.items():
                got = r.read_tensor(name)
                got = got.toarray() if hasattr(got, "toarray") else np.asarray(got)
                np.testing.assert_array_equal(got, want)
    with reference.Reader(str(path)) as ref:  # 1.1.1 opens the result, reads its dense 1-d
        assert set(model) <= set(ref.get_tensor_names())
        for name, want in model.items():
            if want.ndim == 1:
                np.testing.assert_array_equal(ref.read_tensor(name), want)


def test_unknown_root_and_object_keys_survive_an_append(tmp_path):
    """Keys this version does not know (a later minor version's) are kept as they were."""
    path = tmp_path / "u.zt"
    zt.save_file({"w": np.arange(4, dtype=np.float32)}, path)
    data = open(path, "rb").read()
    n = int.from_bytes(data[-16:-8], "little")
    root = cbor2.loads(data[-16 - n : -16])
    root["x-later"] = {"k": [1, 2]}
    root["objects"]["w"]["x-hint"] = "keep me"
    mbytes = cbor2.dumps(root)
    with open(path, "wb") as f:
        f.write(data[: -16 - n] + mbytes + len(mbytes).to_bytes(8, "little") + data[-8:])
    validation.forget_memo()
    with zt.Writer(path, "a") as w:
        w.add_tensor("v", np.ones(3, dtype=np.float64))
    validation.forget_memo()
    again = cbor2.loads(_manifest_bytes(path))
    assert again["x-later"] == {"k": [1, 2]}
    assert again["objects"]["w"]["x-hint"] == "keep me"
    assert sorted(again["objects"]) == ["v", "w"]
    with reference.Reader(str(path)) as ref:
        np.testing.assert_array_equal(ref.read_tensor("w"), np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("memo", ["fresh open", "kept from the last append"])
def test_a_1_2_file_stays_1_2_with_every_unknown_key_through_appends(tmp_path, memo):
    """Version 1.2.0 stays 1.2.0, and unknown root, object and component keys stay as they
    were, whether the append decodes the manifest or splices the one it kept; through an
    add, a replace of another object and a removal (issue 15, item 19)."""
    path = tmp_path / "v.zt"
    zt.save_file({"w": np.arange(4, dtype=np.float32), "z": np.zeros(2), "gone": np.ones(1)}, path)
    data = open(path, "rb").read()
    n = int.from_bytes(data[-16:-8], "little")
    root = cbor2.loads(data[-16 - n : -16])
    root["version"] = "1.2.0"
    root["x-root"] = {"k": [1, 2]}
    root["objects"]["w"]["x-object"] = "keep me"
    root["objects"]["w"]["components"]["data"]["x-component"] = [7, {"deep": True}]
    mbytes = cbor2.dumps(root)
    with open(path, "wb") as f:
        f.write(data[: -16 - n] + mbytes + len(mbytes).to_bytes(8, "little") + data[-8:])
    validation.forget_memo()
    for step in range(2):
        if memo == "fresh open":
            validation.forget_memo()
        with zt.Writer(path, "a") as w:
            w.add_tensor(f"v{step}", np.ones(3))
            w.replace("z", np.full(2, float(step)))
            if step == 0:
                w.remove("gone")
        again = cbor2.loads(_manifest_bytes(path))
        assert again["version"] == "1.2.0"
        assert again["x-root"] == {"k": [1, 2]}
        assert again["objects"]["w"]["x-object"] == "keep me"
        assert again["objects"]["w"]["components"]["data"]["x-component"] == [7, {"deep": True}]
        assert sorted(again["objects"]) == sorted(["w", "z", *(f"v{i}" for i in range(step + 1))])
    validation.forget_memo()
    with zt.Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("w"), np.arange(4, dtype=np.float32))
        np.testing.assert_array_equal(r.read_tensor("z"), np.full(2, 1.0))


def test_appended_object_overlapping_the_file_is_refused_before_writing(tmp_path):
    """The splice validates the added objects: a component pointing into bytes an object
    already owns fails, and the file keeps its previous state."""
    path = tmp_path / "o.zt"
    zt.save_file({"w": np.arange(16, dtype=np.float32)}, path)
    before = open(path, "rb").read()
    with zt.Reader(path) as r:
        obj = r.metadata("w").object
    with pytest.raises(zt.ZTensorError, match="shared") as info:
        with zt.Writer(path, "a") as w:
            w.put_object("alias", obj)
    assert "alias" in str(info.value)
    assert open(path, "rb").read() == before


def _objects_body(mbytes: bytes) -> bytes:
    """The bytes of the entries of a manifest laid out as ours are (``objects`` last)."""
    root = cbor2.loads(mbytes)
    extra = {k: v for k, v in root.items() if k not in ("version", "attributes", "objects")}
    count = len(root["objects"])
    head = manifest._root_head(root["version"], root.get("attributes"), extra or None, count)
    assert mbytes.startswith(head)
    return mbytes[len(head) :]


@pytest.mark.parametrize("change", ["add", "replace", "remove"])
def test_an_append_copies_the_entries_it_keeps_byte_for_byte(tmp_path, change):
    """The kept entries are not encoded again: their bytes in the old manifest appear in the
    new one unchanged and in one block (a removed or replaced entry cut out of it), the
    added entries after them; the root head alone is written anew."""
    path = tmp_path / "k.zt"
    tensors = {f"t{i:03d}": np.full(3, i, dtype=np.float32) for i in range(50)}
    zt.save_file(tensors, path, metadata={"run": "1"})
    old = _objects_body(_manifest_bytes(path))
    entry = cbor2.dumps("t010") + manifest.encode_object(zt.Reader(path).manifest.objects["t010"])
    assert old.count(entry) == 1
    validation.forget_memo()
    with zt.Writer(path, "a") as w:
        w.attributes = {"run": "2"}
        if change == "add":
            w.add_tensor("a-new", np.ones(2, dtype=np.int8))
        elif change == "replace":
            w.replace("t010", np.ones(2, dtype=np.int8))
        else:
            w.remove("t010")
    new = _objects_body(_manifest_bytes(path))
    kept = old if change == "add" else old.replace(entry, b"")
    assert new.startswith(kept)
    root = cbor2.loads(_manifest_bytes(path))
    assert root["attributes"] == {"run": "2"}
    with zt.Reader(path) as r:
        assert ("t010" in r.manifest.objects) == (change != "remove")
        if change != "remove":
            np.testing.assert_array_equal(
                r.read_tensor("t010"), tensors["t010"] if change == "add" else np.ones(2, np.int8)
            )
    with reference.Reader(str(path)) as ref:
        np.testing.assert_array_equal(ref.read_tensor("t049"), tensors["t049"])
