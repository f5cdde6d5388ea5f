"""Bad input never escapes as a plain Python exception: every error is a ZTensorError
subclass naming the file (and the object where there is one), while staying the built-in
type callers already catch (IndexError, ValueError, TypeError, OSError)."""

from __future__ import annotations

import errno
import pickle
import resource
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from test_cli import assert_one_line_error, ztensor

import ztensor_array as zt
from ztensor_array.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SystemIOError,
    TensorNotFoundError,
    ZTensorError,
)


@pytest.fixture
def three(tmp_path):
    path = tmp_path / "three.zt"
    zt.save_file({"a": np.ones(1), "b": np.ones(2), "c": np.arange(3.0)}, path)
    return path


@pytest.mark.parametrize("index", [-4, 3, 10**20])
def test_reader_index_out_of_range(three, index):
    with zt.Reader(three) as r, pytest.raises(IndexError) as info:
        r[index]
    assert isinstance(info.value, TensorNotFoundError)
    assert info.value.path == str(three) and "3 objects" in str(info.value)


def test_reader_index_in_range_and_of_the_wrong_type(three):
    with zt.Reader(three) as r:
        assert tuple(r[-1].shape) == (3,)
        assert [m.name for m in r] == ["a", "b", "c"]  # iteration stops where it should
        with pytest.raises(TypeError) as info:
            r[1.5]
        assert isinstance(info.value, ArgumentTypeError) and info.value.path == str(three)


# --------------------------------------------------------------------------- chunks=(0,)


def _to_ztensor_numpy(path):
    zt.to_ztensor(np.ones(5), path, name="x", mode="w", chunks=(0,))


def _to_ztensor_encoding(path):
    ds = xr.Dataset({"v": ("x", np.ones(4))})
    zt.to_ztensor(ds, path, mode="w", encoding={"v": {"chunks": (0,)}})


def _to_ztensor_encoding_compressed(path):
    ds = xr.Dataset({"v": ("x", np.ones(4))})
    zt.to_ztensor(ds, path, mode="w", encoding={"v": {"chunks": (0,), "compress": True}})


@pytest.mark.parametrize(
    "write", [_to_ztensor_numpy, _to_ztensor_encoding, _to_ztensor_encoding_compressed]
)
def test_a_chunk_size_of_zero_is_an_argument_error(tmp_path, write):
    """dask divides by it (ZeroDivisionError from deep inside dask, naming nothing)."""
    path = tmp_path / "z.zt"
    with pytest.raises(ValueError) as info:
        write(str(path))
    assert isinstance(info.value, InvalidArgumentError)
    assert info.value.path.endswith("z.zt") and info.value.obj in ("x", "v")
    assert "chunk size of 0" in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("name", ["c", "b"])
def test_from_ztensor_chunk_size_of_zero(three, name):
    with pytest.raises(InvalidArgumentError) as info:
        zt.from_ztensor(three, name, chunks=(0,))
    assert info.value.obj == name and info.value.path == str(three)
    # a zero chunk on an empty axis is what dask itself allows
    empty = three.parent / "empty.zt"
    zt.save_file({"e": np.ones((0, 2))}, empty)
    assert zt.from_ztensor(empty, "e", chunks=(0, 2)).compute().shape == (0, 2)


# --------------------------------------------------------------------------- writes


def test_a_refused_write_names_the_file(tmp_path):
    """RLIMIT_FSIZE: the system's EFBIG names no file; the CLI's one line does."""
    src = tmp_path / "big.zt"
    zt.save_file({"a": np.ones(1 << 18)}, src)  # 2 MiB
    out = tmp_path / "out.zt"
    proc = ztensor(
        "decompress", src, "-o", out, check=False, limit=(resource.RLIMIT_FSIZE, 1 << 20)
    )
    assert_one_line_error(proc, "out.zt", "File too large")
    assert not out.exists()


def test_a_refused_write_stays_an_oserror_with_its_errno(tmp_path):
    script = (
        "import resource, numpy as np, ztensor_array as za\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "try:\n"
        f"    za.save_file({{'a': np.ones(1 << 18)}}, {str(tmp_path / 'x.zt')!r})\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc.errno, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    kind, code, *message = out.stdout.split()
    assert kind == SystemIOError.__name__ and int(code) == errno.EFBIG
    assert " ".join(message).startswith(str(tmp_path / "x.zt"))


def test_system_io_errors_pickle_with_their_errno():
    exc = SystemIOError("cannot write: No space left", errno=errno.ENOSPC, path="a.zt")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.errno, back.path, str(back)) == (errno.ENOSPC, "a.zt", str(exc))


@pytest.mark.parametrize(
    "call, kind",
    [
        (lambda p: zt.save_file({1: np.ones(2)}, p), TypeError),
        (lambda p: zt.save_file({"a": [[1], [1, 2]]}, p), TypeError),
        (lambda p: zt.save_file({"a": np.ones(2)}, p, metadata="x"), TypeError),
        (lambda p: _with_attributes(p, [("a", 1)]), TypeError),
    ],
    ids=["name", "ragged", "metadata", "attributes"],
)
def test_bad_arguments_name_the_file(tmp_path, call, kind):
    path = tmp_path / "w.zt"
    with pytest.raises(kind) as info:
        call(path)
    assert isinstance(info.value, ZTensorError) and info.value.path == str(path)
    assert not path.exists()


def _with_attributes(path, attributes):
    with zt.Writer(path) as w:
        w.add_tensor("a", np.ones(2), attributes=attributes)


@pytest.mark.parametrize("path, kind", [(123, TypeError), ("a\x00b.zt", ValueError)])
def test_bad_paths_are_argument_errors(path, kind):
    for call in (zt.Reader, zt.Writer, zt.load_file, lambda p: zt.save_file({}, p)):
        with pytest.raises(kind) as info:
            call(path)
        assert isinstance(info.value, ZTensorError)
