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
