"""``download-hf``: a Hugging Face Hub repo's safetensors, downloaded and converted to .zt.

huggingface_hub does the talking (HF_ENDPOINT, HF_TOKEN, the standard cache, resumable
downloads); this module picks the files and hands each to ``convert``. A sharded checkpoint
(``model.safetensors.index.json``) becomes one .zt per shard plus ``model.zt.index.json``
mapping each tensor to its .zt shard, or with ``single_file`` one .zt holding every tensor.

Outputs: ``<out>/<repo name>/<file stem>.zt`` per file, or ``<out>/<repo name>.zt`` with
``single_file``.
"""

from __future__ import annotations

import inspect
import json
import os
import posixpath
from collections.abc import Sequence

from .. import files
from ..errors import FileExistsZTError, FormatError, ZTensorError
from ..reader import Reader
from . import Progress, convert

INDEX_SUFFIX = ".safetensors.index.json"


def _hub():
    try:
        import huggingface_hub  # optional dependency (the convert extra)
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError:  # pragma: no cover - declared in the convert extra
        raise ZTensorError(
            "download-hf needs huggingface_hub (pip install 'ztensor-array[convert]')"
        ) from None
    return huggingface_hub


def _hub_error(exc: Exception, repo: str) -> ZTensorError:
    text = " ".join(str(exc).split()).split(". ")[0]
    return ZTensorError(f"Hugging Face Hub: {type(exc).__name__}: {text[:200]}", path=repo)


def pick_files(names: Sequence[str], read_index) -> tuple[list[str], str | None]:
    """(safetensors files to fetch, index file or None) for a repo's file list."""
    indexes = sorted(f for f in names if f.endswith(INDEX_SUFFIX) and "/" not in f)
    if indexes:
        index = "model" + INDEX_SUFFIX if "model" + INDEX_SUFFIX in indexes else indexes[0]
        weight_map = read_index(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError("index has no weight_map", path=index)
        shards = sorted(set(weight_map.values()))
        if not all(isinstance(s, str) and s.endswith(".safetensors") for s in shards):
            raise FormatError("index maps tensors to files that are not .safetensors", path=index)
        missing = [s for s in shards if s not in names]
        if missing:
            raise FormatError(f"index names shard {missing[0]!r} that the repo lacks", path=index)
        return shards, index
    shards = sorted(f for f in names if f.endswith(".safetensors") and "/" not in f)
    if not shards:  # fall back to sub-folders (e.g. diffusers layouts)
        shards = sorted(f for f in names if f.endswith(".safetensors"))
    return shards, None


def _tqdm_for(progress: Progress):
    """A tqdm-shaped class that reports huggingface_hub's download progress to ours."""

    class Bar:
        def __init__(self, *args, total=None, desc=None, initial=0, **kwargs) -> None:
            self.n = initial or 0
            self.total = total
            progress.start(f"download {desc or ''}".strip(), total)
            if self.n:
                progress.advance(self.n)

        def update(self, n: int = 1) -> None:
            self.n += n
            progress.advance(n)

        def close(self) -> None:
            pass

        def refresh(self, *args, **kwargs) -> None:
            pass

        def set_description(self, *args, **kwargs) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc) -> None:
            self.close()

    return Bar


def _stem(filename: str) -> str:
    return posixpath.basename(filename)[: -len(".safetensors")]


def download(
    repo: str,
    out_dir: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    compress: bool | int = False,
    checksum: str | None = None,
    single_file: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    quiet: bool = False,
    endpoint: str | None = None,
    cache_dir: str | None = None,
) -> list[str]:
    """Download and convert; returns the paths written.

    ``endpoint``/``cache_dir`` default to huggingface_hub's own (HF_ENDPOINT, HF_HOME).
    """
    hub = _hub()
    if quiet:
        hub.utils.disable_progress_bars()
    progress = progress or Progress()
    name = repo.rstrip("/").split("/")[-1]
    if not name or repo.count("/") > 1:
        raise ZTensorError(f"not a repo id (expected 'owner/name' or 'name'): {repo!r}")
    api = hub.HfApi(token=token, endpoint=endpoint)
    where = {"endpoint": endpoint, "cache_dir": cache_dir}
    try:
        repo_files = api.list_repo_files(repo, revision=revision, token=token)

        def read_index(filename: str) -> dict:
            local = hub.hf_hub_download(repo, filename, revision=revision, token=token, **where)
            try:
                return json.loads(files.read_file(local))
            except (ValueError, OSError) as exc:
                raise FormatError(f"index is not valid JSON ({exc})", path=filename) from None

        shards, index = pick_files(repo_files, read_index)
        if not shards:
            raise ZTensorError("the repo has no .safetensors files", path=repo)
        if single_file:
            targets = {os.path.join(out_dir, name + ".zt"): shards}
        else:
            folder = os.path.join(out_dir, name)
            targets = {
                os.path.join(folder, _stem(s).replace("/", "--") + ".zt"): [s] for s in shards
            }
        index_out = None
        if index is not None and not single_file:
            index_out = os.path.join(out_dir, name, "model.zt.index.json")
        for path in [*targets, *([index_out] if index_out else [])]:
            if os.path.lexists(path) and not overwrite:
                raise FileExistsZTError("output exists (use --force to overwrite)", path=path)
        local: dict[str, str] = {}
        bars = {}
        if "tqdm_class" in inspect.signature(hub.hf_hub_download).parameters:
            bars["tqdm_class"] = _tqdm_for(progress)  # rich bars instead of tqdm's
        for filename in shards:
            local[filename] = hub.hf_hub_download(
                repo, filename, revision=revision, token=token, **bars, **where
            )
    except ZTensorError:
        raise
    except (
        hub.errors.HfHubHTTPError,
        hub.errors.LocalEntryNotFoundError,
        OSError,
        ValueError,
    ) as exc:
        raise _hub_error(exc, repo) from None
    written = []
    for path, members in targets.items():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        convert(
            [local[m] for m in members],
            path,
            fmt="safetensors",
            compress=compress,
            checksum=checksum,
            overwrite=overwrite,
            progress=progress,
        )
        written.append(path)
    if index_out is not None:
        written.append(_write_index(targets, index_out))
    return written


def _write_index(targets: dict[str, list[str]], path: str) -> str:
    """``model.zt.index.json``: tensor name -> .zt shard, like the safetensors index."""
    weight_map = {}
    total = 0
    for target in targets:
        with Reader(target) as r:
            for tensor in r.tensor_names:
                weight_map[tensor] = os.path.basename(target)
            total += sum(
                c.length for o in r.manifest.objects.values() for c in o.components.values()
            )
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files.write_new(path, json.dumps(index, indent=2).encode("utf-8"))
    return path
