"""Subprocess tests of the ``ztensor`` command: every command and flag, against oracles.

Files are made by independent writers (the reference ztensor 1.1.1 wheel, hand-built legacy
fixtures from tests/data/legacy) or by our library where a format only exists here (sparse,
quantized, chunked); values are compared with the arrays that went in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import torn_file

import ztensor_array as zt

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")
COMMANDS = (
    "info",
    "convert",
    "compress",
    "decompress",
    "merge",
    "migrate",
    "download-hf",
    "verify",
    "repair",
)


def ztensor(
    *args, check: bool = True, env=None, cwd=None, limit: tuple[int, int] | None = None
) -> subprocess.CompletedProcess:
    """Run the command line in a child process (stderr is a pipe: no progress bars);
    ``limit``: (resource.RLIMIT_*, value) set in the child first."""
    import resource

    proc = subprocess.run(
        [sys.executable, "-m", "ztensor_array.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        preexec_fn=None if limit is None else lambda: resource.setrlimit(limit[0], limit[1:] * 2),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ztensor {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def no_temp_files(folder) -> bool:
    return not [f for f in os.listdir(folder) if ".tmp" in f]


# --------------------------------------------------------------------------- basics


def test_every_command_has_help():
    """In-process through click's runner (one child process per command would cost ~1 s
    each; the console-script test below runs the real executable)."""
    from click.testing import CliRunner

    from ztensor_array.cli import cli

    for command in COMMANDS:
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output and command in result.output
        assert "--help" in result.output


def test_help_in_a_child_process():
    proc = ztensor("convert", "--help")
    for flag in (
        "-o",
        "-f",
        "-c",
        "-l",
        "--checksum",
        "--delete-original",
        "--prefix-with-filename",
        "--dequantize",
        "--force",
        "-q",
    ):
        assert flag in proc.stdout


def test_console_script_is_installed():
    exe = shutil.which("ztensor")
    if exe is None:
        pytest.skip("the ztensor console script is not on PATH (package not pip-installed)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout


def test_shared_options_mean_the_same_in_every_command():
    """--checksum has one vocabulary (keep only where there are digests to keep), and the
    zstd level range and default come from codecs.policy."""
    from click.testing import CliRunner

    from ztensor_array.cli import cli
    from ztensor_array.codecs.policy import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL

    def options(command):
        return {p.name: p for p in cli.commands[command].params}

    for command in ("compress", "decompress", "migrate"):
        checksum = options(command)["checksum"]
        assert list(checksum.type.choices) == ["keep", "none", "crc32c", "sha256"]
        assert checksum.default == "keep"
    for command in ("convert", "download-hf"):
        checksum = options(command)["checksum"]
        assert list(checksum.type.choices) == ["none", "crc32c", "sha256"]
        assert checksum.default == "none"
    assert "checksum" not in options("merge")
    for command in ("compress", "convert", "migrate", "download-hf"):
        level = options(command)["level"]
        assert (level.type.min, level.type.max) == (MIN_LEVEL, MAX_LEVEL)
    assert options("compress")["level"].default == DEFAULT_LEVEL
    for command in ("convert", "migrate", "download-hf"):
        assert options(command)["level"].default is None and "compress" in options(command)
    result = CliRunner().invoke(cli, ["compress", "--help"])
    assert f"default: {DEFAULT_LEVEL}" in result.output and "keep:" in result.output


def test_checksum_values_in_rewrite_commands(tmp_path):
    src = tmp_path / "d.zt"
    with zt.Writer(src) as w:
        w.add_tensor("crc", np.arange(64, dtype=np.float32), checksum="crc32c")
        w.add_tensor("sha", np.arange(64, dtype=np.int64), checksum="sha256")
        w.add_tensor("plain", np.arange(8, dtype=np.uint8))
    want = {"crc": {"crc32c"}, "sha": {"sha256"}, "plain": {None}}
    for args, expected in (
        ((), want),
        (("--checksum", "keep"), want),
        (("--checksum", "none"), {n: {None} for n in want}),
        (("--checksum", "crc32c"), {n: {"crc32c"} for n in want}),
    ):
        out = tmp_path / f"c{len(os.listdir(tmp_path))}.zt"
        ztensor("compress", src, "-o", out, *args)
        with zt.Reader(out) as r:
            assert {n: _algorithms(_stored(r, n)) for n in r.tensor_names} == expected
    proc = ztensor("convert", "x.safetensors", "-o", "y.zt", "--checksum", "keep", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "keep", "--help")


@pytest.mark.parametrize(
    "args",
    [
        ("info", "missing.zt"),
        ("verify", "missing.zt"),
        ("compress", "missing.zt", "-o", "out.zt"),
        ("decompress", "missing.zt", "-o", "out.zt"),
        ("merge", "missing.zt", "-o", "out.zt"),
        ("migrate", "missing.zt", "-o", "out.zt"),
        ("convert", "missing.safetensors", "-o", "out.zt"),
        ("repair", "missing.zt"),
    ],
)
def test_missing_input_is_a_one_line_error(args, tmp_path):
    proc = ztensor(*args, check=False, cwd=tmp_path)
    assert_one_line_error(proc, "missing")
    assert not (tmp_path / "out.zt").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (("convert", "a.safetensors"), "-o"),
        (("convert", "a.safetensors", "-o", "a.zt", "-l", "30"), "30"),
        (("compress", "a.zt", "-o", "b.zt", "-l", "0"), "0"),
        (("compress", "a.zt", "-o", "b.zt", "-l", "23"), "23"),
        (("migrate", "a.zt", "-o", "b.zt", "--checksum", "md5"), "md5"),
        (("convert", "a.safetensors", "-o", "a.zt", "-f", "onnx"), "onnx"),
        (("nonsense",), "nonsense"),
    ],
)
def test_usage_errors_are_one_line(args, needle, tmp_path):
    proc = ztensor(*args, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, needle, "--help")


def test_not_a_zt_file_is_a_one_line_error(tmp_path):
    junk = tmp_path / "junk.zt"
    junk.write_bytes(b"hello world, not a tensor file at all" * 4)
    assert_one_line_error(ztensor("info", junk, check=False), "junk.zt")
    proc = ztensor("verify", junk, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- info


@pytest.fixture
def reference_file(tmp_path):
    """A file written by the reference 1.1.1 wheel: raw, zstd, and a checksummed tensor."""
    ref = pytest.importorskip("ztensor")
    rng = np.random.default_rng(1)
    arrays = {
        "w": rng.standard_normal((8, 4)).astype(np.float32),
        "z": np.arange(1000, dtype=np.int64),
        "b": np.array([True, False, True]),
    }
    path = tmp_path / "ref.zt"
    with ref.Writer(str(path)) as w:
        w.add_tensor("w", arrays["w"])
        w.add_tensor("z", arrays["z"], compress=True)
        w.add_tensor("b", arrays["b"])
    return path, arrays


def test_info_json_describes_every_object(reference_file):
    path, arrays = reference_file
    d = json.loads(ztensor("info", path, "--json").stdout)
    assert d["version"] == "1.1.0"
    objs = {o["name"]: o for o in d["objects"]}
    assert set(objs) == set(arrays)
    assert objs["w"]["shape"] == [8, 4] and objs["w"]["dtype"] == "f32"
    assert objs["w"]["encoding"] == "raw" and objs["w"]["stored_bytes"] == 128
    assert objs["z"]["encoding"] == "zstd" and objs["z"]["raw_bytes"] == 8000
    assert objs["z"]["stored_bytes"] < 8000
    assert objs["b"]["dtype"] == "bool"


def test_info_text_lists_objects_and_attributes(tmp_path):
    path = tmp_path / "a.zt"
    with zt.Writer(path) as w:
        w.attributes["author"] = "me"
        w.add_tensor(
            "x", np.ones((2, 3), np.float16), checksum="sha256", attributes={"role": "bias"}
        )
    out = ztensor("info", path).stdout
    assert "author = me" in out
    assert "x" in out and "f16" in out and "[2, 3]" in out and "sha256:" in out
    assert "role" in out


def test_info_summarizes_large_files(tmp_path):
    path = tmp_path / "many.zt"
    with zt.Writer(path) as w:
        for i in range(120):
            w.add_tensor(f"t{i:03d}", np.full(i + 1, i, np.float32))
    out = ztensor("info", path).stdout
    assert "120 objects" in out and "--full" in out
    assert "t050" not in out  # not one row per object
    full = ztensor("info", path, "--full").stdout
    assert "t050" in full and "t119" in full


def test_info_reads_legacy_v01():
    d = json.loads(ztensor("info", os.path.join(LEGACY, "wheel_dense.zt"), "--json").stdout)
    assert d["version"].startswith("0.1")
    with zt.Reader(os.path.join(LEGACY, "wheel_dense.zt")) as r:
        assert [o["name"] for o in d["objects"]] == r.tensor_names
        for o in d["objects"]:
            assert tuple(o["shape"]) == r.metadata(o["name"]).shape


# --------------------------------------------------------------------------- verify


def _corrupt(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_clean_file_exits_zero(reference_file):
    path, _ = reference_file
    assert "OK" in ztensor("verify", path).stdout
    assert "OK (deep)" in ztensor("verify", path, "--deep").stdout


def test_verify_lists_every_digest_mismatch(tmp_path):
    path = tmp_path / "c.zt"
    with zt.Writer(path) as w:
        for name in ("a", "b", "c"):
            w.add_tensor(name, np.arange(64, dtype=np.float32), checksum="crc32c")
    with zt.Reader(path) as r:
        offsets = {n: r.manifest.objects[n].components["data"].offset for n in ("a", "c")}
    for off in offsets.values():
        _corrupt(path, off + 5)
    proc = ztensor("verify", path, check=False)
    assert proc.returncode == 1
    assert "object 'a'" in proc.stderr and "object 'c'" in proc.stderr
    assert "object 'b'" not in proc.stderr
    assert "2 problem(s)" in proc.stderr


def test_verify_deep_decodes_components(tmp_path):
    path = tmp_path / "z.zt"
    with zt.Writer(path) as w:
        w.add_tensor("z", np.arange(4096, dtype=np.int64), compress=True)  # no digest
    with zt.Reader(path) as r:
        comp = r.manifest.objects["z"].components["data"]
    _corrupt(path, comp.offset)  # the zstd frame magic
    assert ztensor("verify", path).returncode == 0  # no digest to check
    proc = ztensor("verify", path, "--deep", check=False)
    assert proc.returncode == 1 and "object 'z'" in proc.stderr


# --------------------------------------------------------------------------- rewriting


@pytest.fixture
def rich_file(tmp_path):
    """Every object kind: dense (core, bf16, f8), CSR, COO, ggml blocks, chunked; digests of
    both algorithms and attributes everywhere."""
    import ml_dtypes
    import scipy.sparse as sp

    rng = np.random.default_rng(7)
    path = tmp_path / "rich.zt"
    values = {
        "dense": rng.standard_normal((64, 32)).astype(np.float32),
        "bf16": rng.standard_normal(100).astype(ml_dtypes.bfloat16),
        "f8": rng.standard_normal(50).astype(ml_dtypes.float8_e4m3fn),
        "csr": sp.random(20, 30, density=0.2, format="csr", random_state=1, dtype=np.float64),
        "coo": sp.random(10, 12, density=0.3, format="coo", random_state=2, dtype=np.float32),
    }
    with zt.Writer(path) as w:
        w.attributes.update({"title": "rich", "epoch": 3})
        w.add_tensor("dense", values["dense"], checksum="sha256", attributes={"k": [1, 2]})
        w.add_tensor("bf16", values["bf16"], checksum="crc32c")
        w.add_tensor("f8", values["f8"], compress=True)
        w.add_sparse("csr", values["csr"], checksum="crc32c", attributes={"kind": "csr"})
        w.add_sparse("coo", values["coo"])
        if hasattr(w, "add_ggml_quantized"):
            gguf = pytest.importorskip("gguf")
            src = rng.standard_normal((4, 64)).astype(np.float32)
            blocks = gguf.quants.quantize(src, gguf.GGMLQuantizationType.Q8_0)
            w.add_ggml_quantized("q8", blocks, "Q8_0", (4, 64), checksum="crc32c")
            values["q8"] = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0)
    chunked = rng.standard_normal((40, 10)).astype(np.float64)
    zt.to_ztensor({"chunked": chunked}, path, mode="a", compress=True, chunks=(16, 10))
    values["chunked"] = chunked
    with zt.Reader(path) as r:
        assert r.manifest.objects["chunked"].format == "chunked"
    return path, values


def _assert_same_values(path, values):
    with zt.Reader(path) as r:
        assert set(r.tensor_names) == set(values)
        for name, want in values.items():
            got = r.read_tensor(name, verify_checksum=True)
            if hasattr(want, "toarray"):
                np.testing.assert_array_equal(got.toarray(), want.toarray())
            else:
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def _stored(reader, name):
    """An object's stored parts: its chunks (by grid index) for a chunked object, whose
    components are index segments, else its components (by role)."""
    if reader.metadata(name).layout == "chunked":
        return reader.chunks(name)
    return dict(reader.manifest.objects[name].components)


def _algorithms(parts):
    return {c.digest.split(":")[0] if c.digest else None for c in parts.values()}


@pytest.mark.parametrize("level", [None, 1, 19])
def test_compress_keeps_every_object(rich_file, tmp_path, level):
    src, values = rich_file
    out = tmp_path / "c.zt"
    args = ["compress", src, "-o", out] + (["-l", level] if level else [])
    ztensor(*args)
    _assert_same_values(out, values)
    with zt.Reader(src) as a, zt.Reader(out) as b:
        assert b.attributes == a.attributes == {"title": "rich", "epoch": 3}
        for name in a.tensor_names:
            oa, ob = a.manifest.objects[name], b.manifest.objects[name]
            assert ob.format == oa.format and ob.shape == oa.shape
            assert dict(ob.attributes or {}) == dict(oa.attributes or {})
            pa, pb = _stored(a, name), _stored(b, name)
            assert set(pb) == set(pa)
            assert {c.encoding for c in pb.values()} == {"zstd"}
            assert _algorithms(pb) == _algorithms(pa)
    assert ztensor("verify", out, "--deep").returncode == 0


def test_decompress_keeps_every_object_and_reads_in_reference(rich_file, tmp_path):
    src, values = rich_file
    packed, raw = tmp_path / "c.zt", tmp_path / "raw.zt"
    ztensor("compress", src, "-o", packed)
    ztensor("decompress", packed, "-o", raw, "--checksum", "sha256")
    _assert_same_values(raw, values)
    with zt.Reader(raw) as r:
        for name in r.tensor_names:
            parts = _stored(r, name)
            assert {c.encoding for c in parts.values()} == {"raw"}
            assert _algorithms(parts) == {"sha256"}
    ref = pytest.importorskip("ztensor")
    with ref.Reader(str(raw)) as r:
        np.testing.assert_array_equal(r.read_tensor("dense"), values["dense"])


def test_rewrite_refuses_existing_output_without_force(reference_file, tmp_path):
    src, _ = reference_file
    out = tmp_path / "exists.zt"
    out.write_bytes(b"precious")
    for cmd in ("compress", "decompress"):
        proc = ztensor(cmd, src, "-o", out, check=False)
        assert_one_line_error(proc, "--force")
        assert out.read_bytes() == b"precious"
    ztensor("compress", src, "-o", out, "--force")
    assert zt.Reader(out).tensor_names == ["b", "w", "z"]


def test_rewrite_refuses_a_corrupt_input_and_leaves_nothing(tmp_path):
    src = tmp_path / "bad.zt"
    with zt.Writer(src) as w:
        w.add_tensor("a", np.arange(100, dtype=np.float32), checksum="crc32c")
    with zt.Reader(src) as r:
        _corrupt(src, r.manifest.objects["a"].components["data"].offset)
    out = tmp_path / "out.zt"
    assert_one_line_error(ztensor("compress", src, "-o", out, check=False), "digest")
    assert not out.exists() and no_temp_files(tmp_path)


def test_merge_keeps_stored_blobs_and_reads_legacy(rich_file, tmp_path):
    src, values = rich_file
    legacy = os.path.join(LEGACY, "zstd_checksum.zt")
    out = tmp_path / "merged.zt"
    ztensor("merge", src, legacy, "-o", out)
    with zt.Reader(src) as a, zt.Reader(legacy) as old, zt.Reader(out) as m:
        assert set(m.tensor_names) == set(a.tensor_names) | set(old.tensor_names)
        for name in a.tensor_names:
            if a.metadata(name).layout == "chunked":  # chunks copied, their index rebuilt
                blobs_a, blobs_m = a.chunk_blobs(name), m.chunk_blobs(name)
                assert blobs_m.keys() == blobs_a.keys()
                for index, (comp, blob) in blobs_a.items():
                    assert bytes(blobs_m[index][1]) == bytes(blob)
                    assert blobs_m[index][0].digest == comp.digest
                continue
            for role in a.manifest.objects[name].components:
                assert bytes(m.stored_bytes(name, role)) == bytes(a.stored_bytes(name, role))
            assert (
                m.manifest.objects[name].components.keys()
                == a.manifest.objects[name].components.keys()
            )
        for name in old.tensor_names:
            want, got = old.read_tensor(name), m.read_tensor(name, verify_checksum=True)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            assert m.manifest.objects[name].format in ("dense", "sparse_csr", "sparse_coo")
        assert m.attributes == a.attributes
    assert ztensor("verify", out, "--deep").returncode == 0


def test_merge_name_collision_and_prefix(reference_file, tmp_path):
    src, arrays = reference_file
    copy = tmp_path / "copy.zt"
    shutil.copy(src, copy)
    out = tmp_path / "m.zt"
    assert_one_line_error(
        ztensor("merge", src, copy, "-o", out, check=False), "--prefix-with-filename"
    )
    assert not out.exists()
    ztensor("merge", src, copy, "-o", out, "--prefix-with-filename")
    with zt.Reader(out) as r:
        assert sorted(r.tensor_names) == sorted(
            [f"ref/{n}" for n in arrays] + [f"copy/{n}" for n in arrays]
        )
        np.testing.assert_array_equal(r.read_tensor("copy/z"), arrays["z"])


def test_migrate_legacy_file(tmp_path):
    legacy = os.path.join(LEGACY, "big_endian.zt")
    out = tmp_path / "m.zt"
    proc = ztensor("migrate", legacy, "-o", out)
    assert "migrated" in proc.stdout
    with zt.Reader(legacy) as old, zt.Reader(out) as new:
        assert new.version == "1.1.0"
        for name in old.tensor_names:
            np.testing.assert_array_equal(
                np.asarray(new.read_tensor(name)), np.asarray(old.read_tensor(name))
            )


def test_migrate_compressed_with_level(tmp_path):
    legacy = os.path.join(LEGACY, "wheel_dense.zt")
    out = tmp_path / "m.zt"
    ztensor("migrate", legacy, "-o", out, "-c", "-l", "9", "--checksum", "sha256")
    with zt.Reader(legacy) as old, zt.Reader(out) as new:
        for name in old.tensor_names:
            comp = new.manifest.objects[name].components["data"]
            assert comp.encoding == "zstd" and comp.digest.startswith("sha256:")
            np.testing.assert_array_equal(
                new.read_tensor(name, verify_checksum=True), old.read_tensor(name)
            )


def test_migrate_refuses_bad_legacy_checksum(tmp_path):
    out = tmp_path / "m.zt"
    proc = ztensor("migrate", os.path.join(LEGACY, "bad_checksum.zt"), "-o", out, check=False)
    assert_one_line_error(proc, "checksum")
    assert not out.exists() and no_temp_files(tmp_path)


def test_repair_in_place_reports_the_cut(tmp_path):
    path, good = torn_file(tmp_path)
    assert ztensor("info", path, check=False).returncode != 0
    proc = ztensor("repair", path)
    assert "cut" in proc.stdout and str(os.path.getsize(path)) in proc.stdout
    assert path.read_bytes() == good
    np.testing.assert_array_equal(zt.Reader(path).read_tensor("a"), np.arange(10))


def test_repair_to_output_leaves_the_original(tmp_path):
    path, good = torn_file(tmp_path)
    torn = path.read_bytes()
    out = tmp_path / "fixed.zt"
    ztensor("repair", path, "-o", out)
    assert path.read_bytes() == torn and out.read_bytes() == good
    assert_one_line_error(ztensor("repair", path, "-o", out, check=False), "--force")


# --------------------------------------------------------------------------- progress


def test_progress_goes_to_a_terminal_stderr_only(tmp_path):
    """With stderr on a pseudo-terminal a progress bar is drawn there (and not with -q)."""
    import pty

    src = tmp_path / "p.zt"
    with zt.Writer(src) as w:
        w.add_tensor("a", np.zeros(1 << 16, np.float32))

    def run(*extra):
        master, slave = pty.openpty()
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ztensor_array.cli",
                    "compress",
                    str(src),
                    "-o",
                    str(tmp_path / f"o{len(extra)}.zt"),
                    *extra,
                ],
                stdout=subprocess.PIPE,
                stderr=slave,
                text=True,
                timeout=120,
                env=dict(os.environ, TERM="xterm", COLUMNS="100"),
            )
            os.close(slave)
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            return proc, b"".join(chunks).decode(errors="replace")
        finally:
            os.close(master)

    proc, err = run()
    assert proc.returncode == 0 and "compress" in err  # the bar's description
    assert "compress" not in proc.stdout.split(":")[0]
    proc, err = run("-q")
    assert proc.returncode == 0 and err == "" and proc.stdout == ""


V12 = os.path.join(os.path.dirname(__file__), "data", "v12")


@pytest.mark.parametrize("fname", ["layouts_v12.zt", "types_v12.zt", "attrs_v12.zt"])
def test_info_verify_and_rewrite_v12_files(fname, tmp_path):
    """Files written by ztensor 1.2.3 (tests/data/v12): described, verified, and rewritten
    with every object and value kept."""
    src = os.path.join(V12, fname)
    if not os.path.exists(src):
        pytest.skip("v1.2 fixtures not generated in this checkout")
    d = json.loads(ztensor("info", src, "--json").stdout)
    assert d["version"].startswith("1.2")
    with zt.Reader(src) as r:
        assert [o["name"] for o in d["objects"]] == r.tensor_names
        # JSON has no bytes: info spells them in hex
        assert d["attributes"] == json.loads(json.dumps(r.attributes, default=bytes.hex))
        want = {n: r.read_tensor(n) for n in r.tensor_names}
        formats = {n: r.manifest.objects[n].format for n in r.tensor_names}
    ztensor("verify", src, "--deep")
    out = tmp_path / "c.zt"
    ztensor("compress", src, "-o", out)
    with zt.Reader(out) as r:
        assert {n: r.manifest.objects[n].format for n in r.tensor_names} == formats
        for name, value in want.items():
            got = r.read_tensor(name)
            if hasattr(value, "toarray"):
                got, value = got.toarray(), value.toarray()
            np.testing.assert_array_equal(np.asarray(got), np.asarray(value))


def test_seed_readme_cli_section_works_as_written(tmp_path):
    """Every command line of the seed README's CLI section, verbatim (files made first)."""
    import gguf
    from fake_hub import FakeHub, tiny_repos
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((4, 4)).astype(np.float32)}, tmp_path / "model.safetensors")
    save_file({"v": np.arange(3, dtype=np.int64)}, tmp_path / "extra.safetensors")
    w = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    w.add_tensor("tok", rng.standard_normal((2, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with zt.Writer(tmp_path / "raw.zt") as zw:
        zw.add_tensor("a", np.arange(1000, dtype=np.float32))
    with zt.Writer(tmp_path / "part1.zt") as zw:
        zw.add_tensor("p1", np.ones(3, np.int8))
    with zt.Writer(tmp_path / "part2.zt") as zw:
        zw.add_tensor("p2", np.zeros(3, np.int8))
    shutil.copy(os.path.join(LEGACY, "wheel_dense.zt"), tmp_path / "old_model.zt")
    lines = [
        "ztensor info model.zt",
        "ztensor convert model.safetensors -o model.zt",
        "ztensor info model.zt",
        "ztensor convert -f gguf -c llama.gguf -o llama.zt",
        "ztensor convert model.safetensors -o model10.zt -l 10",
        "ztensor compress raw.zt -o compressed.zt",
        "ztensor compress raw.zt -o highly_compressed.zt -l 19",
        "ztensor decompress compressed.zt -o raw2.zt",
        "ztensor merge part1.zt part2.zt -o merged.zt",
        "ztensor migrate old_model.zt -o new_model.zt",
        "ztensor download-hf microsoft/resnet-18 -o ./models",
        "ztensor download-hf openai-community/gpt2 -o ./models --compress",
        "ztensor convert --delete-original *.safetensors -o all.zt",
    ]
    repos, _ = tiny_repos(rng)
    hub_repos = {
        "microsoft/resnet-18": repos["tiny/single"],
        "openai-community/gpt2": repos["tiny/sharded"],
    }
    with FakeHub(hub_repos) as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        cli = f"{sys.executable} -m ztensor_array.cli"
        for i, line in enumerate(lines):
            proc = subprocess.run(
                line.replace("ztensor", cli, 1),
                shell=True,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            if i == 0:  # before model.zt exists: a clean one-line error
                assert_one_line_error(proc, "model.zt")
                continue
            assert proc.returncode == 0, f"{line}: {proc.stderr}"
    assert sorted(zt.Reader(tmp_path / "merged.zt").tensor_names) == ["p1", "p2"]
    assert sorted(zt.Reader(tmp_path / "all.zt").tensor_names) == ["v", "w"]
    assert not list(tmp_path.glob("*.safetensors"))
    assert (tmp_path / "models" / "resnet-18" / "model.zt").exists()
    assert (tmp_path / "models" / "gpt2" / "model.zt.index.json").exists()
    with zt.Reader(tmp_path / "highly_compressed.zt") as r:
        assert r.manifest.objects["a"].components["data"].encoding == "zstd"


# --------------------------------------------------------------------------- file content in output

HOSTILE_NAMES = [
    "[/]",
    "[bold red]boom[/bold red]",
    "[link=http://evil.example]click[/link]",
    "esc\x1b[31mred\x1b[0m",
    "title\x1b]0;owned\x07",
    "line\nforged: OK",
    "rtl\u202eabc",
]


def _escaped(name: str) -> str:
    """How the CLI shows a name: each control character as Python's ascii() spells it."""
    return "".join(ascii(c)[1:-1] if (c < " " or c == "\x7f" or c == "\u202e") else c for c in name)


def _assert_inert(text: str) -> None:
    """Nothing from the file reaches the terminal as a control sequence."""
    for bad in ("\x1b[31m", "\x1b]0;", "\x1b]8;", "\x07", "\u202e", "\nforged"):
        assert bad not in text, repr(text)


@pytest.fixture
def hostile_file(tmp_path):
    path = tmp_path / "hostile.zt"
    with zt.Writer(path) as w:
        w.attributes = {"[bold]key": "value\x1b[31m[/]"}
        for name in HOSTILE_NAMES:
            w.add_tensor(
                name, np.arange(4, dtype=np.float32), checksum="crc32c", attributes={"a": "\x1b[2J"}
            )
    return path


@pytest.mark.parametrize("color", [False, True], ids=["pipe", "forced-color"])
@pytest.mark.parametrize("full", [False, True], ids=["table", "summary"])
def test_info_shows_names_literally(hostile_file, color, full, monkeypatch):
    """Names and attributes are text, never rich markup (``[/]`` used to crash info,
    ``[bold red]`` and ``[link=...]`` were obeyed) and never terminal control sequences."""
    env = dict(os.environ, FORCE_COLOR="1") if color else None
    if full:  # the summary of a file with many objects lists the largest by name
        monkeypatch.setattr("ztensor_array.cli.LARGE", 0)
        from click.testing import CliRunner

        from ztensor_array.cli import cli

        result = CliRunner().invoke(cli, ["info", str(hostile_file)], env=env)
        assert result.exit_code == 0, result.output
        out = result.output
    else:
        proc = ztensor("info", hostile_file, env=env)
        assert proc.stderr == ""
        out = proc.stdout
    _assert_inert(out)
    assert "[bold]key = value\\x1b[31m[/]" in out
    for name in HOSTILE_NAMES if not full else HOSTILE_NAMES[:3]:
        assert _escaped(name) in out, (name, out)


def test_verify_and_errors_escape_names(hostile_file, tmp_path):
    with zt.Reader(hostile_file) as r:
        offset = r.manifest.objects[HOSTILE_NAMES[3]].components["data"].offset
    _corrupt(hostile_file, offset + 1)
    proc = ztensor("verify", hostile_file, check=False)
    assert proc.returncode == 1 and "1 problem(s)" in proc.stderr
    _assert_inert(proc.stderr)
    # a path given by the user is shown the same way in a one-line error
    weird = tmp_path / "x\x1b[31m.zt"
    assert_one_line_error(ztensor("info", weird, check=False), "x\\x1b[31m.zt", "no such file")


def test_convert_notes_escape_names(tmp_path):
    import pickle

    src = tmp_path / "notes.pkl"
    src.write_bytes(pickle.dumps({"w": np.ones(2), "skip\x1b[2J\nforged": {1, 2}}))
    proc = ztensor("convert", src, "-o", tmp_path / "notes.zt")
    assert "skip\\x1b[2J\\nforged" in proc.stderr
    _assert_inert(proc.stderr)
