"""safetensors-style helpers for PyTorch: ``save_file`` / ``load_file`` / ``save`` / ``load`` /
``save_model`` / ``load_model``. Importing this module imports torch."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from . import numpy as zt_numpy
from .errors import StateDictError, ZTensorError
from .interop import to_torch
from .safe import safe_open


def _storage_key(t: torch.Tensor):
    if t.device.type == "meta":
        return None
    return (t.device, t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def _shared_groups(tensors: Mapping[str, torch.Tensor]) -> list[list[str]]:
    groups: dict[Any, list[str]] = defaultdict(list)
    for name, t in tensors.items():
        key = _storage_key(t)
        if key is not None and t.numel():
            groups[key].append(name)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _refuse_shared(tensors: Mapping[str, torch.Tensor]) -> None:
    shared = _shared_groups(tensors)
    if shared:
        raise ZTensorError(
            f"tensors share memory: {shared}; saving them would duplicate or split their "
            "storage. Use save_model(), or clone() the ones you need separately"
        )


def save_file(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    compress: bool | int = False,
    *,
    checksum: str | None = None,
    compression: bool | int | None = None,
) -> None:
    """Write a dict of tensors. Tensors that share storage are refused (use save_model).
    ``compression`` is the reference's spelling of ``compress``."""
    _refuse_shared(tensors)
    zt_numpy.save_file(
        tensors, path, metadata, compress, checksum=checksum, compression=compression
    )


def load_file(path: str | os.PathLike, device: str | int | torch.device = "cpu") -> dict:
    """Every tensor as a torch tensor on ``device`` (as safetensors' ``load_file``): on the
    CPU owned tensors read in parallel; on an accelerator each tensor is copied once, from
    the file's map or its decoded array, into one pinned staging buffer and sent from there
    (``safe.Staging``)."""
    with safe_open(path, "pt", device=device) as f:
        return f.get_tensors()


def save(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
    compress: bool | int = False,
    *,
    compression: bool | int | None = None,
) -> bytes:
    """The bytes of a .zt file holding ``tensors`` (shared storage refused, as save_file)."""
    _refuse_shared(tensors)
    return zt_numpy.save(tensors, metadata, compress, compression=compression)


def load(data: bytes) -> dict:
    return {k: to_torch(v) for k, v in zt_numpy.load(data).items()}


def _dedupe(
    state: Mapping[str, torch.Tensor], preferred: Iterable[str] = ()
) -> tuple[dict, dict[str, list[str]]]:
    """Keep one name per group of tensors sharing storage (tied weights).

    The kept name is the first, in sorted order, among those that cover the whole storage,
    and among them those in ``preferred`` (the names a file holds) first, as safetensors
    chooses; the other names are restored by ``load_model`` through the model's own tying.
    """
    preferred = set(preferred)
    kept = dict(state)
    dropped: dict[str, list[str]] = {}
    for group in _shared_groups(state):
        full = [
            n
            for n in group
            if state[n].untyped_storage().nbytes() == state[n].nbytes and state[n].is_contiguous()
        ]
        keep = ([n for n in full if n in preferred] or full or group)[0]
        dropped[keep] = [n for n in group if n != keep]
        for n in dropped[keep]:
            del kept[n]
    return kept, dropped


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    force_contiguous: bool = False,
    compress: bool | int = False,
) -> None:
    """Save ``model.state_dict()``, storing tied (shared) tensors once."""
    state, _ = _dedupe(model.state_dict())
    if force_contiguous:
        state = {k: v.contiguous() for k, v in state.items()}
    zt_numpy.save_file(state, path, metadata, compress)


def load_model(
    model: torch.nn.Module,
    path: str | os.PathLike,
    strict: bool = True,
    device: str | int | torch.device = "cpu",
) -> tuple[list[str], list[str]]:
    """Load into ``model``; returns (missing, unexpected) as safetensors' ``load_model``
    does: a name left out because it shares storage with a loaded one is not missing (and
    is unexpected if the file holds it too). ``strict``: a mismatch raises StateDictError
    (also a RuntimeError, as in safetensors) listing both."""
    state = load_file(path, device=device)
    _, dropped = _dedupe(model.state_dict(), preferred=state)
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys)
    unexpected = list(result.unexpected_keys)
    for name in (n for names in dropped.values() for n in names):
        if name in missing:
            missing.remove(name)
        else:
            unexpected.append(name)
    if strict and (missing or unexpected):
        lines = [f"Error(s) in loading state_dict for {type(model).__name__}:"]
        if missing:
            lines.append("Missing key(s) in state_dict: " + ", ".join(map(repr, sorted(missing))))
        if unexpected:
            keys = ", ".join(map(repr, sorted(unexpected)))
            lines.append("Unexpected key(s) in state_dict: " + keys)
        raise StateDictError("\n    ".join(lines), path=path)
    return sorted(missing), unexpected
