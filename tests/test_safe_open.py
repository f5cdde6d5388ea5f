"""``ztensor_array.safe_open`` side by side with ``safetensors.safe_open`` on the same tensors:
names, metadata, shapes, dtypes, values and slices, for numpy and torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc

import cbor2
import ml_dtypes
import numpy as np
import pytest

import ztensor_array as zt
from ztensor_array import ZTensorError, dtypes
from ztensor_array.errors import InvalidArgumentError
from ztensor_array.safe import diagnostic

st = pytest.importorskip("safetensors", reason="safetensors is in the `test` extra")
from safetensors import safe_open as st_open  # noqa: E402
from safetensors.numpy import save_file as st_save  # noqa: E402

try:
    import torch
except ImportError:  # torch is the optional `torch` extra
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is the optional `torch` extra")

META = {"format": "np", "note": "ünïcode"}


def tensors() -> dict[str, np.ndarray]:
    """Every dtype safetensors' numpy side writes, in shapes that exercise slicing."""
    rng = np.random.default_rng(5)
    out = {
        "f32": rng.standard_normal((7, 5, 3)).astype(np.float32),
        "f64": rng.standard_normal((9, 4)),
        "f16": rng.standard_normal((6,)).astype(np.float16),
        "bf16": rng.standard_normal((5, 4)).astype(ml_dtypes.bfloat16),
        "c64": (rng.standard_normal((4, 3)) + 1j).astype(np.complex64),
        "i64": rng.integers(-(2**62), 2**62, (8, 2)),
        "i8": rng.integers(-128, 128, (3, 4, 2), dtype=np.int8),
        "u16": rng.integers(0, 2**16, (10,), dtype=np.uint16),
        "u8": rng.integers(0, 256, (2, 3), dtype=np.uint8),
        "bool": rng.integers(0, 2, (4, 4)).astype(bool),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    return out


# keys both libraries accept: ints (negative too), slices with positive steps, `...`
KEYS = [
    (),
    Ellipsis,
    0,
    -1,
    slice(None, 10),
    slice(1, None, 2),
    slice(-3, None),
    slice(-5, -1, 3),
    (slice(None), 1),
    (Ellipsis, -1),
    (1, slice(None, None, 2)),
    (slice(2, 100), Ellipsis),
]
# keys only numpy's rules give a meaning to (safetensors refuses negative steps)
NUMPY_ONLY = [
    slice(None, None, -1),
    (slice(None, None, -2), Ellipsis),
    (slice(None), slice(-1, 0, -1)),
]


def _applies(key, shape) -> bool:
    """Whether numpy accepts ``key`` on an array of ``shape``."""
    try:
        np.empty(shape)[key]
    except IndexError:
        return False
    return True


@pytest.fixture(scope="module", params=["raw", "zstd"])
def files(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("safe")
    data = tensors()
    ours = folder / "t.zt"
    zt.save_file(data, ours, metadata=META, compress=request.param == "zstd")
    theirs = folder / "t.safetensors"
    st_save(data, str(theirs), metadata=META)
    return ours, theirs, data


def _bits(value) -> tuple:
    """(zTensor dtype, shape, bytes) of a numpy array or torch tensor, so that results of
    either framework compare bit for bit."""
    if torch is not None and isinstance(value, torch.Tensor):
        flat = torch.empty(value.numel(), dtype=value.dtype).copy_(value.reshape(-1))
        raw = flat.view(torch.uint8).numpy().tobytes()
        return (dtypes.from_torch(value.dtype), tuple(value.shape), raw)
    value = np.asarray(value)
    return (dtypes.from_numpy(value.dtype), value.shape, np.ascontiguousarray(value).tobytes())


@pytest.mark.parametrize("framework", ["np", "numpy", pytest.param("pt", marks=needs_torch)])
def test_same_names_metadata_shapes_dtypes_values(files, framework):
    ours, theirs, data = files
    with zt.safe_open(ours, framework) as a, st_open(str(theirs), framework=framework) as b:
        assert a.keys() == b.keys() == sorted(data)
        assert a.metadata() == b.metadata() == META
        for name in a.keys():
            sa, sb = a.get_slice(name), b.get_slice(name)
            assert sa.get_shape() == sb.get_shape()
            assert sa.get_dtype() == sb.get_dtype()
            assert _bits(a.get_tensor(name)) == _bits(b.get_tensor(name))


@pytest.mark.parametrize("framework", ["np", pytest.param("pt", marks=needs_torch)])
def test_slices_match_safetensors(files, framework):
    ours, theirs, data = files
    with zt.safe_open(ours, framework) as a, st_open(str(theirs), framework=framework) as b:
        checked = 0
        for name, value in data.items():
            for key in KEYS:
                if not _applies(key, value.shape):
                    with pytest.raises(IndexError):
                        a.get_slice(name)[key]
                    continue
                got = a.get_slice(name)[key]
                try:
                    want = b.get_slice(name)[key]
                except Exception:  # safetensors refuses stops past the end: numpy clips
                    assert _bits(got) == _bits(value[key]), (name, key)
                    continue
                assert _bits(got) == _bits(want), (name, key)
                checked += 1
        assert checked > 60


@pytest.mark.parametrize("framework", ["np", pytest.param("pt", marks=needs_torch)])
def test_negative_steps_follow_numpy(files, framework):
    """safetensors refuses negative steps; ours give what numpy gives."""
    ours, _, data = files
    with zt.safe_open(ours, framework) as a:
        for name, value in data.items():
            for key in NUMPY_ONLY:
                if _applies(key, value.shape):
                    assert _bits(a.get_slice(name)[key]) == _bits(value[key]), (name, key)


def test_results_are_owned_and_writable(files):
    ours, _, _ = files
    with zt.safe_open(ours, "np") as f:
        whole = f.get_tensor("f32")
        part = f.get_slice("f32")[:2]
    for a in (whole, part):
        assert a.flags.writeable
        a[...] = 0  # changes neither the file nor the next read
    with zt.safe_open(ours, "np") as f:
        assert f.get_tensor("f32").any()


@needs_torch
def test_torch_slices_share_nothing_with_the_file(files):
    ours, _, data = files
    with zt.safe_open(ours, "pt") as f:
        t = f.get_slice("f32")[1:3]
        t.zero_()
        assert f.get_slice("f32")[1:3].abs().sum() > 0
        u = f.get_tensor("f64")
        u.zero_()
        np.testing.assert_array_equal(f.get_tensor("f64").numpy(), data["f64"])


def test_unknown_name_and_framework(files):
    ours, _, _ = files
    with zt.safe_open(ours, "np") as f:
        with pytest.raises(zt.TensorNotFoundError):
            f.get_slice("nope")
        with pytest.raises(zt.TensorNotFoundError):
            f.get_tensor("nope")
    with pytest.raises(InvalidArgumentError, match="framework"):
        zt.safe_open(ours, "tf")
    with pytest.raises(InvalidArgumentError, match="framework='pt'"):
        zt.safe_open(ours, "np", device="cuda:0")


def test_offset_keys_and_no_metadata(tmp_path):
    path = tmp_path / "m.zt"
    zt.save_file({"b": np.ones(3), "a": np.zeros(5)}, path)
    with zt.safe_open(path, "np") as f:
        assert f.metadata() is None
        assert f.offset_keys() == ["b", "a"]  # the order they lie in the file
        assert f.keys() == ["a", "b"]


def test_metadata_of_non_text_attributes(tmp_path):
    """Text stays text; JSON values are their json.dumps text; the rest CBOR diagnostic."""
    attrs = {
        "text": "plain",
        "int": 3,
        "float": 2.5,
        "bool": True,
        "none": None,
        "list": [1, "two", [3.0]],
        "map": {"a": 1, "é": [False]},
        "bytes": b"\x00\xff",
        "nan": math.nan,
        "inf": -math.inf,
        "int_keys": {1: "x"},
        "tag": cbor2.CBORTag(1234, [1, b"\x01"]),
    }
    path = tmp_path / "a.zt"
    zt.save_file({"x": np.ones(1)}, path, metadata=attrs)
    with zt.safe_open(path, "np") as f:
        meta = f.metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    for key in ("int", "float", "bool", "none", "list", "map"):
        assert meta[key] == json.dumps(attrs[key], ensure_ascii=False)
        assert json.loads(meta[key]) == attrs[key]
    assert meta["text"] == "plain"
    assert meta["bytes"] == "h'00ff'"
    assert meta["nan"] == "NaN" and meta["inf"] == "-Infinity"
    assert meta["int_keys"] == '{1: "x"}'
    assert meta["tag"] == "1234([1, h'01'])"
    assert diagnostic(cbor2.undefined) == "undefined"


def test_a_converted_safetensors_file_keeps_its_metadata(tmp_path):
    """safetensors -> ztensor convert -> safe_open: the same metadata dict."""
    from ztensor_array.convert import convert

    src = tmp_path / "m.safetensors"
    st_save(tensors(), str(src), metadata={"format": "pt", "total": "12"})
    out = tmp_path / "m.zt"
    convert([str(src)], str(out), fmt="safetensors")
    with zt.safe_open(out, "np") as a, st_open(str(src), framework="np") as b:
        assert a.metadata() == b.metadata()
        assert a.keys() == b.keys()


def test_compressed_leading_rows_decode_only_a_prefix(tmp_path):
    """The first rows of a zstd tensor come from a decode that stops after them: peak
    numpy memory stays far below the tensor (the full decode would hold all of it)."""
    data = np.random.default_rng(0).standard_normal((4096, 1024)).astype(np.float32)  # 16 MiB
    path = tmp_path / "z.zt"
    zt.save_file({"w": data}, path, compress=True)
    with zt.safe_open(path, "np") as f:
        sl = f.get_slice("w")
        tracemalloc.start()
        head = sl[:10]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        np.testing.assert_array_equal(head, data[:10])
        np.testing.assert_array_equal(sl[-3:], data[-3:])
    assert peak < data.nbytes // 8, peak


def test_safe_open_closes_its_file(tmp_path):
    path = tmp_path / "c.zt"
    zt.save_file({"a": np.ones(3)}, path)
    with zt.safe_open(path, "np") as f:
        sl = f.get_slice("a")
    with pytest.raises(ZTensorError, match="closed"):
        sl[:1]


# ---------------------------------------------------------------------- torch and devices


@needs_torch
def test_reader_read_slice_to_torch(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    path = tmp_path / "r.zt"
    zt.save_file({"a": data, "z": data}, path)
    zt.save_file({"z": data}, tmp_path / "zz.zt", compress=True)
    with zt.Reader(path) as r:
        for copy in (True, False):
            t = r.read_slice("a", (slice(1, 3), slice(None, None, -2)), copy=copy, to="torch")
            assert isinstance(t, torch.Tensor)
            np.testing.assert_array_equal(t.numpy(), data[1:3, ::-2])
            s = r.read_slice("a", (1, 2), copy=copy, to="torch")
            assert s.shape == () and s.item() == data[1, 2]
        with pytest.raises(InvalidArgumentError):
            r.read_slice("a", 0, to="jax")
    with zt.Reader(tmp_path / "zz.zt") as r:
        np.testing.assert_array_equal(r.read_slice("z", slice(0, 2), to="torch").numpy(), data[:2])


@needs_torch
def test_device_that_is_not_here_is_refused_clearly(tmp_path):
    import ztensor_array.torch as zt_torch

    path = tmp_path / "d.zt"
    zt.save_file({"a": np.ones(3)}, path)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="not available"):
            zt.safe_open(path, "pt", device="cuda:0")
        with pytest.raises(InvalidArgumentError, match="not available"):
            zt_torch.load_file(path, device="cuda")
    with pytest.raises(InvalidArgumentError, match="not a torch device"):
        zt.safe_open(path, "pt", device="warp-drive")
    with zt.safe_open(path, "pt", device=torch.device("cpu")) as f:
        assert f.get_tensor("a").device.type == "cpu"


@needs_torch
def test_staging_copies_each_tensor_once_through_one_buffer(tmp_path):
    """The accelerator path, run with the CPU as target (the only device here): values and
    dtypes exact, one staging buffer reused across tensors, and no host copy of a raw tensor
    besides the staging buffer (numpy allocates nothing the size of the tensor)."""
    from ztensor_array.safe import Staging

    big = np.random.default_rng(1).standard_normal((2048, 1024)).astype(np.float32)  # 8 MiB
    data = {**tensors(), "big": big}
    path = tmp_path / "s.zt"
    zt.save_file(data, path)
    staging = Staging(torch.device("cpu"), pin=False)
    with zt.Reader(path) as r:
        first = staging.put(r.read_tensor("big"))
        buffer = staging.buffer.data_ptr()
        tracemalloc.start()
        again = staging.put(r.read_tensor("big"))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        for name, value in data.items():
            got = staging.put(r.read_tensor(name))
            assert got.device.type == "cpu"
            assert _bits(got) == _bits(value), name
            sliced = staging.put(np.asarray(r.read_slice(name, ..., copy=False)))
            assert _bits(sliced) == _bits(value), name
    assert staging.allocations == 1 and staging.buffer.data_ptr() == buffer
    assert peak < big.nbytes // 16, peak
    assert first.data_ptr() != again.data_ptr() != buffer  # results own their memory
    np.testing.assert_array_equal(first.numpy(), big)


def test_framework_pt_without_torch_names_the_extra(tmp_path):
    """In an interpreter where torch cannot be imported: framework="pt" and to="torch" say
    to install the torch extra."""
    path = tmp_path / "n.zt"
    zt.save_file({"a": np.ones(3)}, path)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import ztensor_array as zt\n"
        f"path = {str(path)!r}\n"
        "for call in (lambda: zt.safe_open(path, 'pt'),\n"
        "             lambda: zt.Reader(path).read_tensor('a', to='torch'),\n"
        "             lambda: zt.Reader(path).read_slice('a', 0, to='torch')):\n"
        "    try:\n"
        "        call()\n"
        "    except zt.UnsupportedError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out
    assert all("install the 'torch' extra" in line for line in lines), lines


@pytest.mark.parametrize(
    "fixture",
    [
        "legacy/wheel_dense.zt",
        "legacy/big_endian.zt",
        "legacy/zstd_checksum.zt",
        "v12/dense_v12.zt",
        "v12/layouts_v12.zt",
    ],
)
def test_any_file_the_reader_opens(fixture):
    """Legacy v0.1 and v1.2 files (big-endian, compressed, other layouts): every tensor and
    every leading-row slice is what the Reader gives."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / fixture
    with zt.Reader(path) as r, zt.safe_open(path, "np") as f:
        assert f.keys() == r.tensor_names
        for name in f.keys():
            want = r.read_tensor(name)
            if not isinstance(want, np.ndarray):  # sparse: scipy.sparse, as read_tensor
                got = f.get_tensor(name)
                assert type(got) is type(want), name
                # toarray: scipy before 1.16 cannot compare n-d COO arrays element-wise
                np.testing.assert_array_equal(got.toarray(), want.toarray())
                continue
            assert _bits(f.get_tensor(name)) == _bits(want), name
            assert f.get_slice(name).get_shape() == list(want.shape)
            if want.ndim:
                assert _bits(f.get_slice(name)[:2]) == _bits(want[:2]), name
