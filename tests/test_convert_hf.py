"""``ztensor download-hf`` end to end against a local fake Hub (tests/fake_hub.py): the real
huggingface_hub client, HF_ENDPOINT pointing at 127.0.0.1, the standard cache in tmp."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fake_hub import FakeHub, tiny_repos
from test_cli import assert_one_line_error, ztensor

import ztensor_array as zt

pytest.importorskip("huggingface_hub")


@pytest.fixture
def hub(tmp_path):
    repos, tensors = tiny_repos(np.random.default_rng(11))
    with FakeHub(repos) as h:
        h.tensors = tensors
        h.env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        h.env.update(
            HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1"
        )
        yield h


def _assert_tensors(path, want):
    with zt.Reader(path) as r:
        assert set(r.tensor_names) == set(want)
        for name, arr in want.items():
            got = r.read_tensor(name)
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, arr)


def test_single_file_repo(hub, tmp_path):
    out = tmp_path / "models"
    proc = ztensor("download-hf", "tiny/single", "-o", out, env=hub.env)
    path = out / "single" / "model.zt"
    assert str(path) in proc.stdout
    _assert_tensors(path, hub.tensors["tiny/single"])
    assert zt.Reader(path).attributes == {"format": "np"}
    # downloaded into the standard cache under HF_HOME
    assert any("models--tiny--single" in d for d in os.listdir(tmp_path / "hf-home" / "hub"))


def test_sharded_checkpoint_one_zt_per_shard_and_index(hub, tmp_path):
    out = tmp_path / "models"
    ztensor("download-hf", "tiny/sharded", "-o", out, env=hub.env)
    folder = out / "sharded"
    index = json.loads((folder / "model.zt.index.json").read_text())
    want = hub.tensors["tiny/sharded"]
    assert set(index["weight_map"]) == set(want)
    for name, arr in want.items():
        with zt.Reader(folder / index["weight_map"][name]) as r:
            np.testing.assert_array_equal(r.read_tensor(name), arr)
    assert sorted(os.listdir(folder)) == [
        "model-00001-of-00002.zt",
        "model-00002-of-00002.zt",
        "model.zt.index.json",
    ]


def test_single_file_merges_shards_compressed(hub, tmp_path):
    out = tmp_path / "models"
    ztensor(
        "download-hf",
        "tiny/sharded",
        "-o",
        out,
        "--single-file",
        "-c",
        "-l",
        "7",
        "--checksum",
        "crc32c",
        env=hub.env,
    )
    path = out / "sharded.zt"
    _assert_tensors(path, hub.tensors["tiny/sharded"])
    with zt.Reader(path) as r:
        for obj in r.manifest.objects.values():
            comp = obj.components["data"]
            assert comp.encoding == "zstd" and comp.digest.startswith("crc32c:")
    # a second run needs --force, and then uses the cache (no new file downloads)
    assert_one_line_error(
        ztensor(
            "download-hf", "tiny/sharded", "-o", out, "--single-file", env=hub.env, check=False
        ),
        "--force",
    )
    before = sum(1 for m, p in hub.requests if m == "GET" and "/resolve/" in p)
    ztensor("download-hf", "tiny/sharded", "-o", out, "--single-file", "--force", "-q", env=hub.env)
    after = sum(1 for m, p in hub.requests if m == "GET" and "/resolve/" in p)
    assert after == before


def test_token_and_revision(tmp_path):
    repos, tensors = tiny_repos(np.random.default_rng(2))
    repos = {"org/private": repos["tiny/single"]}
    with FakeHub(repos, private={"org/private": "s3cret"}) as h:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        out = tmp_path / "m"
        proc = ztensor("download-hf", "org/private", "-o", out, env=env, check=False)
        assert_one_line_error(proc, "org/private")
        ztensor(
            "download-hf",
            "org/private",
            "-o",
            out,
            "--token",
            "s3cret",
            "--revision",
            "main",
            env=env,
        )
        _assert_tensors(out / "private" / "model.zt", tensors["tiny/single"])
        env["HF_TOKEN"] = "s3cret"
        ztensor("download-hf", "org/private", "-o", out, "--force", env=env)
        auth = [p for m, p in h.requests if "/tree/" in p]
        assert auth and all("main" in p for p in auth)


def test_missing_repo_is_a_one_line_error(hub, tmp_path):
    proc = ztensor("download-hf", "tiny/nope", "-o", tmp_path, env=hub.env, check=False)
    assert_one_line_error(proc, "tiny/nope")


def test_download_progress_is_reported(hub, tmp_path):
    """In-process: the download and the conversion both report byte progress to our
    Progress (which the CLI draws with rich)."""
    from ztensor_array.convert import Progress
    from ztensor_array.convert.hf import download

    class Recorder(Progress):
        def __init__(self):
            self.tasks, self.done = [], 0

        def start(self, description, total):
            self.tasks.append((description, total))

        def advance(self, n):
            self.done += n

    rec = Recorder()
    # explicit endpoint and cache: huggingface_hub reads HF_* variables once, at import
    written = download(
        "tiny/single",
        str(tmp_path),
        progress=rec,
        quiet=True,
        endpoint=hub.url,
        cache_dir=str(tmp_path / "cache"),
    )
    assert written == [str(tmp_path / "single" / "model.zt")]
    size = len(hub.repos["tiny/single"]["model.safetensors"])
    downloads = [t for t in rec.tasks if t[0].startswith("download")]
    converts = [t for t in rec.tasks if t[0].startswith("convert")]
    if downloads:  # huggingface_hub versions without tqdm_class only show their own bars
        assert downloads[0][1] == size
    assert converts and converts[0][1] == size
    assert rec.done >= size


# ---------------------------------------------------------------------- offline (HF_HUB_OFFLINE)


def _offline(hub) -> dict:
    return {**hub.env, "HF_HUB_OFFLINE": "1"}


def _resolves(hub) -> int:
    return len(hub.requests)


def test_offline_reads_the_cache_download_hf_filled(hub, tmp_path):
    ztensor("download-hf", "tiny/sharded", "-o", tmp_path / "online", env=hub.env)
    before = _resolves(hub)
    out = tmp_path / "offline"
    ztensor("download-hf", "tiny/sharded", "-o", out, env=_offline(hub))
    assert _resolves(hub) == before  # not one request reached the Hub
    for f in ("model-00001-of-00002.zt", "model-00002-of-00002.zt", "model.zt.index.json"):
        assert (out / "sharded" / f).read_bytes() == (
            tmp_path / "online" / "sharded" / f
        ).read_bytes()


def test_offline_reads_a_snapshot_download_cache(hub, tmp_path):
    """A cache made by huggingface_hub's own snapshot_download works offline, as
    snapshot_download itself does (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import snapshot_download

    cache = tmp_path / "hf-home" / "hub"
    snapshot_download("tiny/single", endpoint=hub.url, cache_dir=str(cache))
    before = _resolves(hub)
    out = tmp_path / "m"
    ztensor("download-hf", "tiny/single", "-o", out, "--single-file", env=_offline(hub))
    assert _resolves(hub) == before
    _assert_tensors(out / "single.zt", hub.tensors["tiny/single"])


def _snapshot(tmp_path, repo: str):
    folder = tmp_path / "hf-home" / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots"
    (only,) = folder.iterdir()
    return only


def test_offline_names_the_shard_missing_from_the_cache(hub, tmp_path):
    """A cache filled file by file (no tree listing cached): the index names a shard the
    snapshot lacks."""
    ztensor("download-hf", "tiny/sharded", "-o", tmp_path / "online", env=hub.env)
    (_snapshot(tmp_path, "tiny/sharded") / "model-00002-of-00002.safetensors").unlink()
    proc = ztensor(
        "download-hf", "tiny/sharded", "-o", tmp_path / "o", env=_offline(hub), check=False
    )
    assert_one_line_error(proc, "model-00002-of-00002.safetensors")
    assert "local Hugging Face cache" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_offline_names_what_an_incomplete_snapshot_lacks(hub, tmp_path):
    """A snapshot_download cache knows the repo's file list: a file gone from it is named."""
    from huggingface_hub import snapshot_download

    snapshot_download("tiny/single", endpoint=hub.url, cache_dir=str(tmp_path / "hf-home" / "hub"))
    (_snapshot(tmp_path, "tiny/single") / "model.safetensors").unlink()
    proc = ztensor(
        "download-hf", "tiny/single", "-o", tmp_path / "o", env=_offline(hub), check=False
    )
    assert_one_line_error(proc, "model.safetensors")
    assert "local Hugging Face cache" in proc.stderr


def test_offline_without_a_cached_snapshot(hub, tmp_path):
    proc = ztensor("download-hf", "tiny/single", "-o", tmp_path, env=_offline(hub), check=False)
    assert_one_line_error(proc, "no cached snapshot")
    assert "local Hugging Face cache" in proc.stderr
    assert _resolves(hub) == 0


# ---------------------------------------------------------------------- sub-folders, index file


def _diffusers_repo(rng):
    """A diffusers-shaped repo: models in sub-folders whose files share names (and tensor
    names), one of them sharded with its own index."""
    import json as _json

    from safetensors.numpy import save

    unet = {"conv_in.weight": rng.standard_normal((4, 4)).astype(np.float32)}
    vae = {"conv_in.weight": rng.standard_normal((2, 3)).astype(np.float16)}
    te1 = {"embed.weight": rng.standard_normal((5, 2)).astype(np.float32)}
    te2 = {"final.weight": np.arange(6, dtype=np.int64)}
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"weight_map": {"embed.weight": shards[0], "final.weight": shards[1]}}
    files = {
        "model_index.json": b'{"_class_name": "TinyPipeline"}',
        "unet/config.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": save(unet),
        "vae/diffusion_pytorch_model.safetensors": save(vae),
        "text_encoder/" + shards[0]: save(te1),
        "text_encoder/" + shards[1]: save(te2),
        "text_encoder/model.safetensors.index.json": _json.dumps(index).encode(),
    }
    return files, {"unet": unet, "vae": vae, "text_encoder": {**te1, **te2}}


def test_models_in_sub_folders_keep_their_own_files(tmp_path):
    """diffusers' unet/ and vae/ both hold diffusion_pytorch_model.safetensors: each gets
    its own .zt in a folder of the same name (one used to overwrite the other)."""
    files, want = _diffusers_repo(np.random.default_rng(4))
    with FakeHub({"tiny/diffusers": files}) as h:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        out = tmp_path / "m"
        ztensor("download-hf", "tiny/diffusers", "-o", out, env=env)
        root = out / "diffusers"
        _assert_tensors(root / "unet" / "diffusion_pytorch_model.zt", want["unet"])
        _assert_tensors(root / "vae" / "diffusion_pytorch_model.zt", want["vae"])
        index = json.loads((root / "text_encoder" / "model.zt.index.json").read_text())
        assert index["weight_map"] == {
            "embed.weight": "model-00001-of-00002.zt",
            "final.weight": "model-00002-of-00002.zt",
        }
        for name, arr in want["text_encoder"].items():
            with zt.Reader(root / "text_encoder" / index["weight_map"][name]) as r:
                np.testing.assert_array_equal(r.read_tensor(name), arr)
        assert sorted(p.name for p in root.iterdir()) == ["text_encoder", "unet", "vae"]
        proc = ztensor(
            "download-hf", "tiny/diffusers", "-o", out, "--single-file", env=env, check=False
        )
        assert_one_line_error(proc, "several folders")
        assert not (out / "diffusers.zt").exists()


def _download_in_process(repo: str, tmp_path, url: str) -> list[str]:
    """download-hf in this process into tmp/out (explicit endpoint and cache: huggingface_hub
    reads HF_* variables once, at import)."""
    from ztensor_array.convert.hf import download

    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    return download(repo, out, quiet=True, endpoint=url, cache_dir=cache)


def test_repo_paths_cannot_leave_the_output_folder(tmp_path):
    from safetensors.numpy import save

    from ztensor_array.errors import FormatError

    files = {"a/../../escape.safetensors": save({"x": np.ones(2, np.float32)})}
    with FakeHub({"tiny/evil": files}) as h:
        with pytest.raises(FormatError, match="unsafe file name"):
            _download_in_process("tiny/evil", tmp_path, h.url)
    assert not (tmp_path / "escape.zt").exists() and not (tmp_path / "out").exists()


def test_index_is_written_without_following_a_planted_symlink(hub, tmp_path):
    """The index goes to a new file of random name created with O_EXCL, then renamed: a
    symlink planted at the name an earlier version used (<index>.tmp-<pid>) is not
    followed, and nothing but the outputs is left in the folder."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "out" / "sharded"
    folder.mkdir(parents=True)
    planted = folder / f"model.zt.index.json.tmp-{os.getpid()}"
    planted.symlink_to(victim)
    _download_in_process("tiny/sharded", tmp_path, hub.url)
    assert victim.read_text() == "keep me"
    index = folder / "model.zt.index.json"
    assert not index.is_symlink() and json.loads(index.read_text())["weight_map"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model-00001-of-00002.zt", "model-00002-of-00002.zt", "model.zt.index.json", planted.name]
    )


def test_without_o_tmpfile_the_index_goes_through_a_random_o_excl_name(hub, tmp_path, monkeypatch):
    """Where the filesystem has no O_TMPFILE (simulated: the flag is absent), the index is
    written to a hidden name with 12 random hex digits, created with O_CREAT | O_EXCL (so a
    file or symlink already there is never opened), a new name each time, none left."""
    import re

    monkeypatch.delattr(os, "O_TMPFILE")
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def recording_open(path, flags, *args, **kwargs):  # records, then really opens
        opened.append((os.fspath(path), flags))
        return real_open(path, flags, *args, **kwargs)

    from ztensor_array.convert.hf import download

    monkeypatch.setattr(os, "open", recording_open)
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    for _ in range(2):
        download("tiny/sharded", out, quiet=True, endpoint=hub.url, cache_dir=cache, overwrite=True)
    temps = [(p, f) for p, f in opened if "model.zt.index.json.tmp-" in p]
    assert len(temps) == 2 and temps[0][0] != temps[1][0]
    for path, flags in temps:
        assert re.fullmatch(r"\.model\.zt\.index\.json\.tmp-[0-9a-f]{12}", os.path.basename(path))
        assert flags & os.O_CREAT and flags & os.O_EXCL
    folder = tmp_path / "out" / "sharded"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model-00001-of-00002.zt", "model-00002-of-00002.zt", "model.zt.index.json"]
    )
