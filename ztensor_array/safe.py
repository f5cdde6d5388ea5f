"""``safe_open``: safetensors' lazy reading surface over a .zt file, so code written for
``safetensors.safe_open`` runs on zTensor files unchanged.

Opening reads only the footer and the manifest (through ``Reader``); each ``get_tensor`` or
slice reads what it returns and nothing else (a slice of leading rows of a zstd tensor decodes
the frame only up to the last selected row). Tensors bound for an accelerator are copied once
into a pinned staging buffer and sent from there (``Staging``). torch is imported only when
``framework`` asks for it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import dtypes
from .errors import InvalidArgumentError, UnsupportedError
from .interop import import_torch, to_torch
from .reader import Reader

FRAMEWORKS = {"np": "numpy", "numpy": "numpy", "pt": "torch", "torch": "torch"}


class safe_open:  # noqa: N801 - the name safetensors users know
    """``with safe_open(path, framework="pt", device="cpu") as f:`` -- ``f.keys()``,
    ``f.get_tensor(name)``, ``f.get_slice(name)[...]``, ``f.metadata()``.

    ``framework``: "np"/"numpy" (numpy arrays) or "pt"/"torch" (torch tensors). ``device``
    (torch only): any torch device or index; numpy arrays live on the CPU. numpy results are
    owned, writable arrays; torch results on the CPU share nothing with the file or each
    other (raw tensors are private copy-on-write maps of it).
    """

    def __init__(self, filename: str | os.PathLike, framework: str, device: Any = "cpu") -> None:
        to = FRAMEWORKS.get(framework) if isinstance(framework, str) else None
        if to is None:
            raise InvalidArgumentError(
                f"framework must be one of {sorted(FRAMEWORKS)}, not {framework!r}",
                path=filename,
            )
        self._to = to
        self._staging: Staging | None = None  # None: the CPU
        if to == "torch":
            self._staging = _staging(device, filename)
        elif device not in ("cpu", None):
            raise InvalidArgumentError(
                f"numpy arrays live on the CPU; device {device!r} needs framework='pt'",
                path=filename,
            )
        self._reader = Reader(filename)

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (arrays already returned stay valid)."""
        self._reader.close()

    # ------------------------------------------------------------------ listing

    def keys(self) -> list[str]:
        """Tensor names, sorted (as safetensors lists them)."""
        return self._reader.tensor_names

    def offset_keys(self) -> list[str]:
        """Tensor names in the order their data lies in the file."""
        return self._reader.names_in_file_order()

    def metadata(self) -> dict[str, str] | None:
        """The global attributes as text (see ``metadata_text``), or None when there are none."""
        return metadata_text(self._reader.attributes) or None

    # ------------------------------------------------------------------ values

    def get_tensor(self, name: str):
        """The whole tensor (sparse layouts: scipy.sparse, or a sparse torch tensor)."""
        reader = self._reader
        if self._to == "numpy":
            return reader.read_tensor(name, copy=True)
        if self._staging is None:
            return reader.read_tensor(name, to="torch")
        return self._staging.put(reader.read_tensor(name))

    def get_slice(self, name: str) -> TensorSlice:
        """A lazy handle on one tensor: its shape and dtype, and ``[...]`` reading only the
        selected part."""
        if name not in self._reader:  # an unknown name fails here, as in safetensors
            self._reader.metadata(name)
        return TensorSlice(self, name)

    def get_tensors(self) -> dict:
        """Every tensor, by name. On the CPU read in parallel into owned arrays (the
        torch tensors share them); for a device one at a time through the staging buffer."""
        if self._staging is not None:
            return {name: self.get_tensor(name) for name in self.keys()}
        tensors = self._reader.to_dict(copy=True)
        return tensors if self._to == "numpy" else {k: to_torch(v) for k, v in tensors.items()}

    def _read_slice(self, name: str, key: Any):
        # copy=False: a read-only view of the file where the selection is one, so that the
        # one copy made is the one the caller gets (or the staging buffer's)
        if self._to == "torch" and self._staging is None:  # copies read-only views only
            return self._reader.read_slice(name, key, copy=False, to="torch")
        out = _as_array(self._reader.read_slice(name, key, copy=False))
        if self._staging is not None:
            return self._staging.put(out)
        read_only = isinstance(out, np.ndarray) and not out.flags.writeable
        return np.array(out) if read_only else out


class TensorSlice:
    """safetensors' ``PySafeSlice``: ``get_shape()``, ``get_dtype()`` and ``[key]`` with
    ints, slices (any step, negative ones too), ``...`` and 1-D integer arrays."""

    __slots__ = ("_file", "_name")

    def __init__(self, file: safe_open, name: str) -> None:
        self._file, self._name = file, name

    def get_shape(self) -> list[int]:
        return list(self._file._reader.metadata(self._name).shape)

    def get_dtype(self) -> str:
        """The safetensors dtype name ("F32", "BF16"...); a dtype safetensors has no name for
        (complex128) is given by its zTensor name."""
        meta = self._file._reader.metadata(self._name)
        if meta.dtype is None:
            raise UnsupportedError(
                "the tensor's type is unknown to this version",
                path=self._file._reader.path,
                obj=self._name,
            )
        name = dtypes.from_numpy(meta.dtype)
        return dtypes.lookup(name).safetensors or name

    def __getitem__(self, key: Any):
        return self._file._read_slice(self._name, key)

    def __repr__(self) -> str:
        return f"<TensorSlice {self._name!r} shape={self.get_shape()} dtype={self.get_dtype()}>"


def _as_array(value):
    """numpy scalars (every axis picked by an integer) as 0-d arrays, as safetensors gives."""
    return np.asarray(value) if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------- metadata as text


def metadata_text(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Global attributes as safetensors metadata (text -> text): text values as they are,
    other values as ``diagnostic`` gives them."""
    return {k: v if isinstance(v, str) else diagnostic(v) for k, v in attributes.items()}


def diagnostic(value: Any) -> str:
    """A decoded CBOR value as text: exactly ``json.dumps(value, ensure_ascii=False)`` for
    a value JSON can hold; what JSON cannot (bytes, NaN and infinities, tags, simple
    values, undefined, maps with non-text keys) in CBOR diagnostic notation (RFC 8949
    section 8: ``h'00ff'``, ``NaN``, ``32("...")``, ``{1: 2}``), of which JSON is a subset;
    other objects cbor2 decodes tags into (datetime, Decimal, UUID, sets...) as the JSON
    string of their ``str()``."""
    import cbor2  # already loaded by the manifest parser; named here for its types

    if value is None or isinstance(value, (bool, int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return json.dumps(value)
    if isinstance(value, (bytes, bytearray)):
        return f"h'{bytes(value).hex()}'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(diagnostic(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{diagnostic(k)}: {diagnostic(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, cbor2.CBORTag):
        return f"{value.tag}({diagnostic(value.value)})"
    if value is cbor2.undefined:
        return "undefined"
    if isinstance(value, cbor2.CBORSimpleValue):
        return f"simple({value.value})"
    return json.dumps(str(value), ensure_ascii=False)


# ---------------------------------------------------------------------- devices


def _staging(device: Any, filename) -> Staging | None:
    """The staging for a torch device (None for the CPU); a clear error for a device this
    machine does not have."""
    torch = import_torch()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"not a torch device: {device!r} ({exc})", path=filename
        ) from None
    if dev.type == "cpu":
        return None
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise InvalidArgumentError(
            f"device {str(dev)!r} is not available in this torch build or on this machine",
            path=filename,
        )
    return Staging(dev, pin=dev.type == "cuda")


class Staging:
    """Host-to-device copies through one reused (pinned) host buffer.

    Each array is copied once, from where the reader has it (a view of the file, or the
    decoded array), into the staging buffer, and sent to the device from there; the next
    copy waits until the device has taken the previous one. So no host copy is made beyond
    the staging buffer a non-blocking transfer needs, and host memory stays at the largest
    tensor, not the file.
    """

    def __init__(self, device: Any, *, pin: bool) -> None:
        self.torch = import_torch()
        self.device, self.pin = device, pin
        self.buffer = None  # torch uint8 tensor, pinned when ``pin``
        self._done = None  # an event recorded after the last transfer (cuda)
        self.allocations = 0

    def _wait(self) -> None:
        if self._done is not None:
            self._done.synchronize()
            self._done = None

    def put(self, value: Any):
        """``value`` (a numpy array, or scipy.sparse) as a tensor on the device."""
        torch = self.torch
        if not isinstance(value, np.ndarray):  # sparse: no staging for its parts
            return to_torch(value).to(self.device)
        tdtype = dtypes.to_torch(dtypes.from_numpy(value.dtype))
        out = torch.empty(value.shape, dtype=tdtype, device=self.device)
        nbytes = value.nbytes
        if nbytes == 0:
            return out
        self._wait()  # the device has taken the previous tensor out of the buffer
        if self.buffer is None or self.buffer.numel() < nbytes:
            self.buffer = None
            self.buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
            self.allocations += 1
        stage = self.buffer[:nbytes]
        np.copyto(stage.numpy().view(value.dtype).reshape(value.shape), value, casting="no")
        out.reshape(-1).view(torch.uint8).copy_(stage, non_blocking=self.pin)
        if self.pin and self.device.type == "cuda":
            self._done = torch.cuda.Event()
            self._done.record(torch.cuda.current_stream(self.device))
        return out
