"""``download-hf``: a Hugging Face Hub repo's safetensors, downloaded and converted to .zt.

huggingface_hub does the talking (HF_ENDPOINT, HF_TOKEN, the standard cache, resumable
downloads); this module picks the files and hands each to ``convert``. With HF_HUB_OFFLINE=1
(or ``local_files_only``) nothing is asked of the Hub: the files come from the cached
snapshot of the revision, as ``snapshot_download`` finds it, and a file the cache lacks is
named in the error.

Which files: the top level's safetensors if it has any, else those of each sub-folder
(diffusers keeps one model per folder: unet/, vae/, text_encoder/...). In each folder an
index (``<name>.safetensors.index.json``) picks the shards; without one every .safetensors
file is taken. Outputs mirror the repo's folders: ``<out>/<repo name>/[<folder>/]<stem>.zt``
per file plus ``<name>.zt.index.json`` beside them per index (tensor -> .zt shard), or with
``single_file`` one ``<out>/<repo name>.zt`` holding every tensor of a one-folder repo.
"""

from __future__ import annotations

import inspect
import json
import os
import posixpath
from collections.abc import Sequence
from typing import NamedTuple

from .. import files
from ..errors import FileExistsZTError, FormatError, ZTensorError
from ..reader import Reader
from . import Progress, convert

INDEX_SUFFIX = ".safetensors.index.json"
_NETWORK_MODULES = ("httpx", "httpx2", "requests", "urllib3")  # the Hub client's transports
_OFFLINE = "not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"


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


class Group(NamedTuple):
    """The files taken from one folder of the repo ("" for the top level)."""

    folder: str
    shards: list[str]  # repo paths
    index: str | None  # repo path of the index that picked them


def pick_files(names: Sequence[str], read_index) -> list[Group]:
    """The folders whose safetensors to fetch, each with its shards and index: the top
    level if it holds any safetensors (or an index), else every sub-folder that does."""
    by_folder: dict[str, list[str]] = {}
    for name in names:
        if name.endswith((".safetensors", INDEX_SUFFIX)):
            by_folder.setdefault(posixpath.dirname(name), []).append(name)
    folders = [""] if "" in by_folder else sorted(by_folder)
    return [_pick_in(folder, sorted(by_folder[folder]), read_index) for folder in folders]


def _pick_in(folder: str, members: list[str], read_index) -> Group:
    indexes = [f for f in members if f.endswith(INDEX_SUFFIX)]
    if not indexes:
        return Group(folder, [f for f in members if f.endswith(".safetensors")], None)
    preferred = posixpath.join(folder, "model" + INDEX_SUFFIX)
    index = preferred if preferred in indexes else indexes[0]
    weight_map = read_index(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError("index has no weight_map", path=index)
    shards = sorted(set(weight_map.values()))
    if not all(isinstance(s, str) and s.endswith(".safetensors") for s in shards):
        raise FormatError("index maps tensors to files that are not .safetensors", path=index)
    return Group(folder, [posixpath.join(folder, s) for s in shards], index)


def _local_path(root: str, repo_path: str) -> str:
    """``repo_path`` (a/b/c) under ``root``, refusing names that would leave it."""
    parts = repo_path.split("/")
    if repo_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FormatError("unsafe file name in the repo listing", path=repo_path)
    return os.path.join(root, *parts)


def _cached_files(hub, repo: str, revision, cache_dir) -> tuple[str, list[str]]:
    """(snapshot folder, repo paths it holds) of the cached revision, found as
    ``snapshot_download`` finds it without the network."""
    try:
        folder = hub.snapshot_download(
            repo,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=True,
            allow_patterns=["*.safetensors", "*" + INDEX_SUFFIX],
        )
    except hub.errors.IncompleteSnapshotError as exc:  # its message names the files
        raise ZTensorError(f"{_OFFLINE}: {' '.join(str(exc).split())}", path=repo) from None
    except hub.errors.LocalEntryNotFoundError:
        raise ZTensorError(
            f"{_OFFLINE}: no cached snapshot of revision {revision or 'main'!r}", path=repo
        ) from None
    names = []
    for dirpath, _, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for f in filenames:
            names.append(f if rel == "." else posixpath.join(*rel.split(os.sep), f))
    return folder, sorted(names)


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


def _offline(hub) -> bool:
    check = getattr(hub.constants, "is_offline_mode", None)
    return bool(check() if check is not None else hub.constants.HF_HUB_OFFLINE)


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
    local_files_only: bool | None = None,
) -> list[str]:
    """Download and convert; returns the paths written.

    ``endpoint``/``cache_dir`` default to huggingface_hub's own (HF_ENDPOINT, HF_HOME);
    ``local_files_only`` to HF_HUB_OFFLINE: then only the local cache is read.
    """
    hub = _hub()
    if quiet:
        hub.utils.disable_progress_bars()
    progress = progress or Progress()
    name = repo.rstrip("/").split("/")[-1]
    if not name or repo.count("/") > 1:
        raise ZTensorError(f"not a repo id (expected 'owner/name' or 'name'): {repo!r}")
    offline = _offline(hub) if local_files_only is None else local_files_only
    where = {"endpoint": endpoint, "cache_dir": cache_dir}
    try:
        if offline:
            snapshot, repo_files = _cached_files(hub, repo, revision, cache_dir)

            def fetch(filename: str, **_) -> str:
                return _local_path(snapshot, filename)
        else:
            api = hub.HfApi(token=token, endpoint=endpoint)
            repo_files = api.list_repo_files(repo, revision=revision, token=token)

            def fetch(filename: str, **bars) -> str:
                return hub.hf_hub_download(
                    repo, filename, revision=revision, token=token, **bars, **where
                )

        def read_index(filename: str) -> dict:
            try:
                return json.loads(files.read_file(fetch(filename)))
            except ValueError as exc:
                raise FormatError(f"index is not valid JSON ({exc})", path=filename) from None

        groups = pick_files(repo_files, read_index)
        shards = [s for g in groups for s in g.shards]
        if not shards:
            if offline:
                raise ZTensorError(f"{_OFFLINE}: no .safetensors file is cached", path=repo)
            raise ZTensorError("the repo has no .safetensors files", path=repo)
        absent = [s for s in shards if s not in repo_files]
        if absent:
            index = next(g.index for g in groups if absent[0] in g.shards)
            if offline:
                raise ZTensorError(
                    f"{_OFFLINE}: shard {absent[0]!r}, named by {index}, is missing "
                    "(download the repo once with network access)",
                    path=repo,
                )
            raise FormatError(f"index names shard {absent[0]!r} that the repo lacks", path=index)
        root = os.path.join(out_dir, name)
        if single_file:
            if len(groups) > 1:
                raise ZTensorError(
                    "the repo keeps models in several folders "
                    f"({', '.join(g.folder for g in groups)}): drop --single-file to get "
                    "one .zt per file",
                    path=repo,
                )
            targets = {os.path.join(out_dir, name + ".zt"): shards}
            indexes: dict[str, list[str]] = {}
        else:
            targets = {_local_path(root, s[: -len(".safetensors")] + ".zt"): [s] for s in shards}
            indexes = {
                _local_path(root, g.index[: -len(INDEX_SUFFIX)] + ".zt.index.json"): [
                    _local_path(root, s[: -len(".safetensors")] + ".zt") for s in g.shards
                ]
                for g in groups
                if g.index is not None
            }
        for path in [*targets, *indexes]:
            if os.path.lexists(path) and not overwrite:
                raise FileExistsZTError("output exists (use --force to overwrite)", path=path)
        local: dict[str, str] = {}
        bars = {}
        if "tqdm_class" in inspect.signature(hub.hf_hub_download).parameters:
            bars["tqdm_class"] = _tqdm_for(progress)  # rich bars instead of tqdm's
        for filename in shards:
            local[filename] = fetch(filename, **bars)
    except ZTensorError:
        raise
    except (
        hub.errors.HfHubHTTPError,
        hub.errors.LocalEntryNotFoundError,
        OSError,
        ValueError,
    ) as exc:
        raise _hub_error(exc, repo) from None
    except Exception as exc:  # the transport's own errors (connection refused, timeouts)
        if type(exc).__module__.split(".")[0] not in _NETWORK_MODULES:
            raise
        raise ZTensorError(
            f"cannot reach the Hugging Face Hub ({type(exc).__name__}: {exc}); "
            "HF_HUB_OFFLINE=1 uses the local cache",
            path=repo,
        ) from None
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
    for path, shard_paths in indexes.items():
        written.append(_write_index(shard_paths, path))
    return written


def _write_index(targets: list[str], path: str) -> str:
    """``<name>.zt.index.json``: tensor name -> .zt shard (beside it), like the safetensors
    index. Written to a new file with a random name (O_EXCL) renamed into place, so no
    planted file or symlink is followed."""
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
