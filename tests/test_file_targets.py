"""What a write may replace, and how (SPEC §9.3): only regular files, a symlink written
through to its target as ``open(path, "w")`` does it, the replaced file's permission bits
kept; inputs that are FIFOs refused without blocking. One rule, in ``files.py``, for every
writer: Writer, save_file, compact, the rewrite commands and the converters."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_same
from test_cli import assert_one_line_error, no_temp_files, ztensor

import ztensor_array as za
from ztensor_array.errors import FileExistsZTError, ZTensorError
from ztensor_array.ops.compact import compact


def _fifo(path):
    os.mkfifo(path)
    return path


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def _device_link(path):
    """A symlink to /dev/null: the write-through rule makes its target a character device
    (creating a device node would need privileges)."""
    os.symlink("/dev/null", path)
    return path


SPECIAL = {"fifo": (_fifo, "a FIFO"), "socket": (_socket, "a socket")}
SPECIAL["device"] = (_device_link, "a character device")


def _kind(path) -> int:
    return stat.S_IFMT(os.stat(path).st_mode)


def _write_with_writer(path):
    with za.Writer(path, "w") as w:
        w.add_tensor("a", np.ones(3))


def _write_with_save_file(path):
    za.save_file({"a": np.ones(3)}, path)


def _write_with_to_ztensor(path):
    za.to_ztensor(np.ones((4, 4)), path, name="a", mode="w", chunks=(2, 2))


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize(
    "write", [_write_with_writer, _write_with_save_file, _write_with_to_ztensor]
)
def test_special_files_are_never_replaced(tmp_path, kind, write):
    make, what = SPECIAL[kind]
    path = make(tmp_path / "target.zt")
    before = _kind(path)
    with pytest.raises(ZTensorError, match=f"is {what}, not a regular file") as info:
        write(str(path))
    assert info.value.path == str(path)
    assert _kind(path) == before and no_temp_files(tmp_path)


@pytest.mark.parametrize("kind", SPECIAL)
def test_force_does_not_replace_special_files(tmp_path, kind):
    src = tmp_path / "src.zt"
    za.save_file({"a": np.arange(4.0)}, src)
    make, what = SPECIAL[kind]
    out = make(tmp_path / "out.zt")
    proc = ztensor("compress", src, "-o", out, "--force", check=False)
    assert_one_line_error(proc, "out.zt", what)
    assert _kind(out) != stat.S_IFREG


# --------------------------------------------------------------------------- symlinks


def _linked(tmp_path):
    """target.zt (mode 0600, in another folder) and link.zt pointing at it."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "target.zt"
    za.save_file({"old": np.zeros(2)}, target)
    os.chmod(target, 0o600)
    link = tmp_path / "link.zt"
    os.symlink(target, link)
    return target, link


def _names(path):
    with za.Reader(path) as r:
        return r.tensor_names


@pytest.mark.parametrize(
    "write", [_write_with_writer, _write_with_save_file, _write_with_to_ztensor]
)
def test_writes_through_a_symlink_replace_its_target(tmp_path, write):
    """As ``open(link, "w")`` would: the link stays a link, its target gets the content and
    keeps its permission bits; no temporary file is left in either folder."""
    target, link = _linked(tmp_path)
    write(str(link))
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert _names(target) == ["a"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert no_temp_files(tmp_path) and no_temp_files(target.parent)


def test_a_dangling_symlink_is_written_through_and_refused_by_mode_x(tmp_path):
    link = tmp_path / "link.zt"
    os.symlink(tmp_path / "new.zt", link)
    with pytest.raises(FileExistsZTError):
        za.Writer(link, "x")
    _write_with_save_file(str(link))  # open(link, "w") creates the target too
    assert os.path.islink(link) and _names(tmp_path / "new.zt") == ["a"]


def _with_orphans(path):
    """A file with orphaned bytes: compact has something to cut."""
    with za.Writer(path, "a") as w:
        w.add_tensor("big", np.ones(10_000))
    with za.Writer(path, "a") as w:
        w.remove("big")


def test_compact_through_a_symlink_compacts_the_target(tmp_path):
    target, link = _linked(tmp_path)
    _with_orphans(target)
    grown = os.path.getsize(target)
    saved = compact(link)
    assert saved > 70_000 and os.path.getsize(target) == grown - saved
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert _names(link) == ["old"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_rewrite_commands_write_through_a_symlink_output(tmp_path):
    target, link = _linked(tmp_path)
    src = tmp_path / "src.zt"
    za.save_file({"a": np.arange(100.0)}, src)
    for command in ("compress", "decompress", "merge"):
        ztensor(command, src, "-o", link, "--force")
        assert os.path.islink(link) and os.readlink(link) == str(target), command
        with za.Reader(target) as r:
            assert_same(r.read_tensor("a"), np.arange(100.0))
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600, command


# --------------------------------------------------------------------------- permission bits


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_compact_keeps_the_permission_bits(tmp_path, mode):
    path = tmp_path / "a.zt"
    za.save_file({"x": np.ones(3)}, path)
    _with_orphans(path)
    os.chmod(path, mode)
    ino = os.stat(path).st_ino
    assert compact(path) > 0
    assert os.stat(path).st_ino != ino  # it was replaced, not edited in place
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_replacing_keeps_the_bits_and_a_new_file_gets_the_umask(tmp_path):
    path = tmp_path / "a.zt"
    old = os.umask(0o027)
    try:
        za.save_file({"x": np.ones(3)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # 0666 less the umask
        os.chmod(path, 0o600)
        ztensor("compress", path, "-o", tmp_path / "b.zt")
        assert stat.S_IMODE(os.stat(tmp_path / "b.zt").st_mode) == 0o640
        os.chmod(tmp_path / "b.zt", 0o400)
        ztensor("decompress", path, "-o", tmp_path / "b.zt", "--force")
        assert stat.S_IMODE(os.stat(tmp_path / "b.zt").st_mode) == 0o400
        za.save_file({"y": np.ones(3)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- FIFO inputs


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "-f", "xarray", "{fifo}", "-o", "{out}"],
        ["convert", "-f", "safetensors", "{fifo}", "-o", "{out}"],
        ["convert", "{fifo}", "-o", "{out}"],
        ["repair", "{fifo}"],
        ["repair", "{fifo}", "-o", "{out}"],
        ["compact", "{fifo}"],
    ],
    ids=["convert-xarray", "convert-safetensors", "convert-auto", "repair", "repair-o", "compact"],
)
def test_fifo_inputs_are_refused_without_blocking(tmp_path, args):
    fifo = _fifo(tmp_path / "pipe.nc")
    out = tmp_path / "out.zt"
    if args[0] == "compact":  # no command: the library call
        code = f"from ztensor_array.ops.compact import compact\ncompact({str(fifo)!r})"
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0 and "is a FIFO" in proc.stderr
        return
    argv = [a.format(fifo=fifo, out=out) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "ztensor_array.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(proc, "pipe.nc", "is a FIFO")
    assert not out.exists()
