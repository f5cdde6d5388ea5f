"""README's promise: every error for bad input or misuse is a ZTensorError, and the argument
errors are also the ValueError/TypeError that code written before caught. And counts in
messages agree with their noun ("1 tensor")."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from test_cli import ztensor

import ztensor_array as zt
from ztensor_array.errors import ArgumentTypeError, InvalidArgumentError, counted

ONES = np.ones(3, dtype=np.float32)


def _cases(tmp):
    path = str(tmp / "e.zt")
    zt.save_file({"a": ONES}, tmp / "have.zt")
    have = str(tmp / "have.zt")
    return {
        "compress=30 (save_file)": (
            lambda: zt.save_file({"a": ONES}, path, compress=30),
            ValueError,
        ),
        "compress=30 (add_tensor)": (
            lambda: zt.Writer(path).add_tensor("a", ONES, compress=30),
            ValueError,
        ),
        "compress=30 (to_ztensor)": (
            lambda: zt.to_ztensor(da.ones(4), path, "x", compress=30),
            ValueError,
        ),
        'checksum="md5" (save_file)': (
            lambda: zt.save_file({"a": ONES}, path, checksum="md5"),
            ValueError,
        ),
        'checksum="md5" (to_ztensor)': (
            lambda: zt.to_ztensor(da.ones(4), path, "x", checksum="md5"),
            ValueError,
        ),
        'mode="q" (Writer)': (lambda: zt.Writer(path, mode="q"), ValueError),
        'mode="q" (to_ztensor)': (
            lambda: zt.to_ztensor(da.ones(4), path, "x", mode="q"),
            ValueError,
        ),
        'mode="q" (xarray)': (
            lambda: zt.to_ztensor(xr.Dataset({"v": ("x", ONES)}), path, mode="q"),
            ValueError,
        ),
        '"/" in a variable name': (
            lambda: zt.to_ztensor(xr.Dataset({"a/b": ("x", ONES)}), path),
            ValueError,
        ),
        "missing name= (numpy)": (lambda: zt.to_ztensor(ONES, path), TypeError),
        "missing name= (dask)": (lambda: zt.to_ztensor(da.ones(4), path), TypeError),
        "name= with a mapping": (lambda: zt.to_ztensor({"a": ONES}, path, "a"), TypeError),
        'to="jax" (read_tensor)': (lambda: zt.Reader(have).read_tensor("a", to="jax"), ValueError),
        'to="jax" (read_slice)': (lambda: zt.Reader(have).read_slice("a", 0, to="jax"), ValueError),
        'framework="tf"': (lambda: zt.safe_open(have, "tf"), ValueError),
    }


@pytest.mark.parametrize(
    "case",
    [
        "compress=30 (save_file)",
        "compress=30 (add_tensor)",
        "compress=30 (to_ztensor)",
        'checksum="md5" (save_file)',
        'checksum="md5" (to_ztensor)',
        'mode="q" (Writer)',
        'mode="q" (to_ztensor)',
        'mode="q" (xarray)',
        '"/" in a variable name',
        "missing name= (numpy)",
        "missing name= (dask)",
        "name= with a mapping",
        'to="jax" (read_tensor)',
        'to="jax" (read_slice)',
        'framework="tf"',
    ],
)
def test_bad_arguments_raise_ztensor_errors_that_are_also_builtin_ones(tmp_path, case):
    call, builtin = _cases(tmp_path)[case]
    with pytest.raises(zt.ZTensorError) as info:
        call()
    assert isinstance(info.value, builtin)
    own = InvalidArgumentError if builtin is ValueError else ArgumentTypeError
    assert isinstance(info.value, own), type(info.value).__mro__


def test_counted():
    assert counted(1, "tensor") == "1 tensor"
    assert counted(0, "tensor") == "0 tensors"
    assert counted(2, "file") == "2 files"


def test_cli_counts_agree_with_their_noun(tmp_path):
    one = tmp_path / "one.zt"
    zt.save_file({"a": ONES}, one)
    assert "1 object," in ztensor("info", one).stdout
    out = ztensor("compress", one, "-o", tmp_path / "c.zt").stdout
    assert "1 object," in out and "objects" not in out
    out = ztensor("merge", one, "-o", tmp_path / "m.zt").stdout
    assert "1 object from 1 file" in out
    two = tmp_path / "two.zt"
    zt.save_file({"a": ONES, "b": ONES}, two)
    assert "2 objects," in ztensor("info", two).stdout


def test_demo_counts_its_tensors():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ztensor_array", "demo"], capture_output=True, text=True, check=True
    )
    assert ", 3 tensors," in out.stdout and not out.stderr
