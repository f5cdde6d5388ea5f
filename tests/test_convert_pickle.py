"""``ztensor convert`` of PyTorch checkpoints (torch.save, zip and legacy) and plain pickles,
through the restricted unpickler: values equal torch's, torch is not needed, and no code
from the file ever runs."""

from __future__ import annotations

import collections
import io
import os
import pickle
import resource
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import peak_rss_in_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import assert_one_line_error, no_temp_files, ztensor

import ztensor_array as zt
from ztensor_array.convert.pickle import PickleSource
from ztensor_array.errors import ZTensorError

torch = pytest.importorskip(
    "torch", reason="these checkpoints are made with torch.save (the optional `torch` extra)"
)


def _state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g)
    return collections.OrderedDict(
        [
            ("w", torch.randn(3, 5, generator=g)),
            ("half", torch.randn(4, generator=g).half()),
            ("bf16", torch.randn(2, 3, generator=g).bfloat16()),
            ("f8", torch.randn(5, generator=g).to(torch.float8_e4m3fn)),
            ("steps", torch.arange(7, dtype=torch.int64)),
            ("mask", torch.tensor([True, False, True])),
            ("u16", torch.tensor([1, 60000], dtype=torch.int32).to(torch.uint16)),
            ("view_t", base.t()),  # non-contiguous view
            ("view_slice", base[2:5, 1]),  # shares base's storage, with an offset
            ("param", torch.nn.Parameter(torch.ones(2, 2))),
            ("cplx", torch.randn(3, dtype=torch.complex64, generator=g)),
        ]
    )


def _as_numpy(t):
    """The oracle: torch's own view of a tensor, as numpy bits."""
    t = t.detach().contiguous()
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.uint16):
        return t.view(torch.uint8).numpy() if t.dtype != torch.uint16 else t.numpy()
    return t.numpy()


def _check(out, tensors):
    with zt.Reader(out) as r:
        assert set(r.tensor_names) == set(tensors)
        for name, t in tensors.items():
            got = r.read_tensor(name)
            assert got.shape == tuple(t.shape), name
            want = _as_numpy(t)
            if t.dtype in (torch.bfloat16, torch.float8_e4m3fn):
                got = np.ascontiguousarray(got).view(np.uint8)
            np.testing.assert_array_equal(got, want.reshape(got.shape))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_state_dict(tmp_path, zip_format):
    sd = _state_dict()
    if not zip_format:  # the legacy format has no storage class for these dtypes
        for k in ("f8", "u16"):
            del sd[k]
    src = tmp_path / "model.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=zip_format)
    out = tmp_path / "model.zt"
    ztensor("convert", src, "-o", out)
    _check(out, torch.load(src, weights_only=True))


def test_nested_checkpoint_and_scalars(tmp_path):
    ckpt = {
        "model": {"enc": {"w": torch.ones(2, 3)}, "dec": [torch.zeros(2), torch.arange(3)]},
        "epoch": 7,
        "name": "run-1",
        "lr": 0.5,
        "np": np.arange(4, dtype=np.float64),
    }
    src = tmp_path / "ckpt.pth"
    torch.save(ckpt, src)
    out = tmp_path / "ckpt.zt"
    ztensor("convert", src, "-o", out)
    with zt.Reader(out) as r:
        assert sorted(r.tensor_names) == ["model.dec.0", "model.dec.1", "model.enc.w", "np"]
        assert r.attributes == {"epoch": 7, "name": "run-1", "lr": 0.5}
        np.testing.assert_array_equal(r.read_tensor("model.dec.1"), np.arange(3))
        np.testing.assert_array_equal(r.read_tensor("np"), np.arange(4.0))


def test_plain_pickle_of_numpy_containers(tmp_path):
    obj = {
        "a": np.arange(6, dtype=np.int16).reshape(2, 3),
        "b": [np.ones(2), np.zeros(3, bool)],
        "t": (np.float32(1.5), "label"),
    }
    src = tmp_path / "arrays.data"  # no telling extension: -f pickle says what it is
    with open(src, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    out = tmp_path / "arrays.zt"
    ztensor("convert", "-f", "pickle", src, "-o", out)
    with zt.Reader(out) as r:
        assert sorted(r.tensor_names) == ["a", "b.0", "b.1"]
        np.testing.assert_array_equal(r.read_tensor("a"), obj["a"])
        np.testing.assert_array_equal(r.read_tensor("b.1"), obj["b"][1])
        assert r.attributes == {"t.0": 1.5, "t.1": "label"}


def test_torch_is_not_needed(tmp_path):
    sd = _state_dict()
    src = tmp_path / "model.pt"
    torch.save(sd, src)
    out = tmp_path / "model.zt"
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from ztensor_array.cli import main\n"
        f"main(['convert', {str(src)!r}, '-o', {str(out)!r}, '-q'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _check(out, sd)


# --------------------------------------------------------------------------- hostile


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pkl"
    with open(src, "wb") as f:
        pickle.dump({"w": np.ones(2), "x": _Evil(marker)}, f)
    out = tmp_path / "evil.zt"
    proc = ztensor("convert", src, "-o", out, check=False)
    assert_one_line_error(proc, "system", "refusing")
    assert not marker.exists() and not out.exists() and no_temp_files(tmp_path)


def test_malicious_data_pkl_inside_a_torch_zip(tmp_path):
    marker = tmp_path / "PWNED"
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps({"w": _Evil(marker)})
            zout.writestr(item, data)
    proc = ztensor("convert", evil, "-o", tmp_path / "e.zt", check=False)
    assert_one_line_error(proc, "system")
    assert not marker.exists()
    # torch itself (weights_only) refuses the same file: an independent check of the oracle
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    assert not marker.exists()


def test_whole_module_pickle_is_refused_naming_the_class(tmp_path):
    src = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), src)
    proc = ztensor("convert", src, "-o", tmp_path / "m.zt", check=False)
    assert_one_line_error(proc, "torch.nn.modules.linear.Linear")


@pytest.mark.parametrize("container", [b"]", b"(t"], ids=["lists", "tuples"])
def test_a_100k_deep_pickle_is_refused_naming_the_file(tmp_path, container):
    """Unpickling nests without recursion; walking the result used to raise a bare
    RecursionError."""
    depth = 100_000
    if container == b"]":  # EMPTY_LIST, then APPEND each into the one before
        body = b"]" * depth + b"a" * (depth - 1)
    else:  # MARK ... TUPLE, nested
        body = b"(" * depth + b")" + b"t" * depth
    src = tmp_path / "deep.pkl"
    src.write_bytes(b"\x80\x02}X\x01\x00\x00\x00k" + body + b"s.")
    proc = ztensor("convert", src, "-o", tmp_path / "deep.zt", check=False)
    assert_one_line_error(proc, "deep.pkl", "too deeply")


def test_garbage_and_truncated_pickles(tmp_path):
    src = tmp_path / "model.pt"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(100)}, buf, _use_new_zipfile_serialization=False)
    src.write_bytes(buf.getvalue()[:-40])  # the storage bytes are cut short
    assert_one_line_error(ztensor("convert", src, "-o", tmp_path / "a.zt", check=False), "model.pt")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04junk that is not a pickle")
    assert_one_line_error(
        ztensor("convert", junk, "-o", tmp_path / "b.zt", check=False), "junk.pkl"
    )


# --------------------------------------------------------------------------- properties


def _seed_pickles():
    buf = io.BytesIO()
    torch.save(
        {"w": torch.arange(6.0).reshape(2, 3), "v": torch.ones(2)[1:]},
        buf,
        _use_new_zipfile_serialization=False,
    )
    plain = pickle.dumps({"a": np.arange(4), "b": [1, "x"]}, protocol=2)
    return [buf.getvalue(), plain]


_SEEDS = _seed_pickles()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.integers(0, len(_SEEDS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10_000),
)
def test_mutated_pickles_load_or_fail_cleanly(tmp_path, which, edits, cut):
    """Flipped and truncated bytes: a ZTensorError or a clean load, never anything else."""
    data = bytearray(_SEEDS[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    src = tmp_path / "m.pkl"
    src.write_bytes(data)
    try:
        with PickleSource(str(src)) as source, zt.Writer(tmp_path / "m.zt") as w:
            for item in source.items():
                item.write(w, item.name, 0, None)
    except ZTensorError:
        pass


# --------------------------------------------------------------------------- numpy globals


class _Reduce:
    """Pickles as ``func(*args)``: what a hostile pickle can ask the allow-list to call."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _convert_pickled(tmp_path, obj):
    src = tmp_path / "hostile.pkl"
    src.write_bytes(pickle.dumps({"a": obj}, protocol=2))
    return ztensor("convert", src, "-o", tmp_path / "hostile.zt", check=False)


@pytest.mark.parametrize(
    "call",
    [
        (np.ndarray, ((4096,), np.dtype("u1"))),  # uninitialized process memory
        (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (4096,), b"b")),  # same, no BUILD
    ],
    ids=["ndarray", "_reconstruct"],
)
def test_numpy_globals_never_hand_out_uninitialized_memory(tmp_path, call):
    proc = _convert_pickled(tmp_path, _Reduce(*call))
    assert_one_line_error(proc, "hostile.pkl", "uninitialized" if call[0] is np.ndarray else "")
    assert not (tmp_path / "hostile.zt").exists() and no_temp_files(tmp_path)


def test_zero_strides_cannot_expand_a_small_buffer(tmp_path):
    """161 bytes of pickle that would become 1 GiB of memory and output: the torch path's
    expansion cap applies to numpy.ndarray views too."""
    obj = _Reduce(np.ndarray, ((1 << 27,), np.dtype("<u8"), b"12345678", 0, (0,)))
    assert len(pickle.dumps({"a": obj}, protocol=2)) < 200
    proc = _convert_pickled(tmp_path, obj)
    assert_one_line_error(proc, "hostile.pkl", "expanding")
    assert not (tmp_path / "hostile.zt").exists()


def test_numpy_ndarray_over_a_pickled_buffer_still_converts(tmp_path):
    """A view of a buffer from the pickle within the cap stays readable (stride 0 too)."""
    obj = _Reduce(np.ndarray, ((3, 4), np.dtype("<i2"), bytes(range(8)), 0, (0, 2)))
    ztensor("convert", _write(tmp_path, obj), "-o", tmp_path / "ok.zt")
    want = np.ndarray((3, 4), np.dtype("<i2"), bytes(range(8)), 0, (0, 2))
    with zt.Reader(tmp_path / "ok.zt") as r:
        np.testing.assert_array_equal(r.read_tensor("a"), want)


def _write(tmp_path, obj):
    src = tmp_path / "ok.pkl"
    src.write_bytes(pickle.dumps({"a": obj}, protocol=2))
    return src


def _deflated_checkpoint(path, tensor):
    """torch.save's zip with the storage entries DEFLATE-compressed (as a zip tool would
    leave them); torch itself loads it."""
    buf = io.BytesIO()
    torch.save({"w": tensor}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "/data/" in item.filename:
                item.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(item, data)


def test_deflated_storage_is_inflated_once(tmp_path):
    """A 64 MiB DEFLATE-compressed storage costs its own size in memory, not twice that
    (``ZipFile.read`` has zlib inflate into blocks that are then joined into a copy)."""
    n = 16 << 20
    src, tiny = tmp_path / "deflated.pt", tmp_path / "tiny.pt"
    _deflated_checkpoint(src, torch.arange(n, dtype=torch.float32) % 1000)
    _deflated_checkpoint(tiny, torch.arange(16, dtype=torch.float32))
    with zipfile.ZipFile(src) as z:
        assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    code = "from ztensor_array.convert import convert\nconvert(sys.argv[1:2], sys.argv[2])"
    # the same conversion of a tiny checkpoint is the baseline (imports, buffers)
    grown = peak_rss_in_subprocess(code, str(src), str(tmp_path / "d.zt"))
    grown -= peak_rss_in_subprocess(code, str(tiny), str(tmp_path / "t.zt"))
    assert grown < 1.3 * 4 * n, f"peak memory grew by {grown >> 20} MiB for 64 MiB"
    with zt.Reader(tmp_path / "d.zt") as r:
        np.testing.assert_array_equal(
            r.read_tensor("w"), torch.load(src, weights_only=True)["w"].numpy()
        )


def test_deflated_storage_with_a_bad_crc_is_refused(tmp_path):
    src = tmp_path / "deflated.pt"
    _deflated_checkpoint(src, torch.arange(1000, dtype=torch.float32))
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    data = bytearray(src.read_bytes())
    # zipfile checks the CRC of the central directory entry (46 bytes, then the name)
    pos = data.index(info.filename.encode(), data.index(b"PK\x01\x02")) - 46 + 16
    data[pos : pos + 4] = (info.CRC ^ 1).to_bytes(4, "little")
    src.write_bytes(bytes(data))
    assert_one_line_error(
        ztensor("convert", src, "-o", tmp_path / "bad.zt", check=False), "deflated.pt", "CRC"
    )


def test_numpy_scalars_come_only_from_their_pickled_bytes(tmp_path):
    """``scalar(dtype)`` without bytes allocates a zero value of the dtype's size: 2 GB from
    a pickle of a few dozen bytes. Scalars as numpy pickles them still convert."""
    scalar = np.float64(0).__reduce__()[0]
    proc = _convert_pickled(tmp_path, _Reduce(scalar, (np.dtype("V2000000000"),)))
    assert_one_line_error(proc, "hostile.pkl", "scalar")
    src = tmp_path / "scalars.pkl"
    src.write_bytes(pickle.dumps({"w": np.ones(2), "lr": np.float32(0.5), "n": np.int64(7)}))
    ztensor("convert", src, "-o", tmp_path / "scalars.zt")
    with zt.Reader(tmp_path / "scalars.zt") as r:
        assert r.attributes == {"lr": 0.5, "n": 7}


class _Numel:
    """A storage reference of ``n`` elements, for a pickle built by hand."""

    def __init__(self, n):
        self.n = n


def test_a_deflated_storage_larger_than_deflate_can_make_is_refused(tmp_path):
    """The central directory and the pickle both say 2 GiB, the stored bytes are 12: no
    DEFLATE stream inflates that far, so nothing of that size is allocated."""
    n = 1 << 29

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Numel):
                return ("storage", torch.FloatStorage, "0", "cpu", obj.n)
            return None

    rebuild = _Reduce(torch._utils._rebuild_tensor_v2, (_Numel(n), 0, (n,), (1,), False, {}))
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": rebuild})
    src = tmp_path / "claims.pt"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr(zipfile.ZipInfo("archive/data/0"), bytes(4), zipfile.ZIP_DEFLATED)
    data = bytearray(src.read_bytes())
    central = data.index(b"archive/data/0", data.index(b"PK\x01\x02")) - 46
    data[central + 24 : central + 28] = (4 * n).to_bytes(4, "little")  # uncompressed size
    src.write_bytes(bytes(data))
    assert_one_line_error(
        ztensor("convert", src, "-o", tmp_path / "c.zt", check=False), "claims.pt", "DEFLATE"
    )


def test_a_huge_memo_index_costs_no_memory(tmp_path):
    """LONG_BINPUT may name any index; C's unpickler sizes its memo table to it (2^30
    entries: 8 GiB, cleared), the restricted one keeps a dict. A valid pickle, so it
    converts, within a 3 GiB address space."""
    body = pickle.dumps({"w": np.arange(3.0)}, protocol=2)
    assert body[-1:] == b"."
    # after the dict is built, store it at memo index 2^30 (LONG_BINPUT) and stop
    data = body[:-1] + b"r" + (1 << 30).to_bytes(4, "little") + b"."
    src = tmp_path / "memo.pkl"
    src.write_bytes(data)
    assert pickle._Unpickler(io.BytesIO(data)).load()["w"].tolist() == [0.0, 1.0, 2.0]
    ztensor("convert", src, "-o", tmp_path / "memo.zt", limit=(resource.RLIMIT_AS, 3 << 30))
    with zt.Reader(tmp_path / "memo.zt") as r:
        np.testing.assert_array_equal(r.read_tensor("w"), np.arange(3.0))
