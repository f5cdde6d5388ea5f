"""PyTorch checkpoints and plain pickles in, without torch and without running their code.

``RestrictedUnpickler.find_class`` resolves only an explicit allow-list of globals: torch's
tensor-rebuilding helpers and storage/dtype names (answered by our own stand-ins, so torch is
never imported), ``collections.OrderedDict`` and numpy's array reconstruction helpers.
Anything else (``os.system``, a model class, ...) is refused with an error naming it before
it can be called. Storages are read straight from the archive, one tensor at a time:

- zip checkpoints (torch >= 1.6): ``<prefix>/data.pkl`` plus ``<prefix>/data/<key>`` entries;
- legacy torch files: magic number, protocol, system info, the object pickle, the list of
  storage keys, then each storage as an int64 element count followed by its bytes;
- plain pickles of dicts, lists, tuples and numpy arrays.

Nested containers are flattened to dotted names ("model.layer.0.weight"); scalars and text
become global attributes.
"""

from __future__ import annotations

import collections
import io
import math
import mmap
import os
import pickle
import struct
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import dtypes, files
from ..errors import FormatError, UnsupportedError, ZTensorError
from .source import Item, Source, add_array

TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_INT64 = 8
MAX_EXPANSION = 256 << 20  # a stride-0 view may not materialise to more than this
_INFLATE_BLOCK = 4 << 20  # a compressed zip entry is inflated into its array this much at a time
_BYTEORDER_MAX = 16  # the zip's "byteorder" entry is "little" or "big"
_DEFLATE_RATIO = 1032  # DEFLATE never inflates one byte into more than this many


def _check_expansion(nbytes: int, stored: int, what: str, path: str | None = None) -> None:
    """Refuse a view that would materialise to far more bytes than back it (zero strides
    turn a few bytes into gigabytes): more than 4x its buffer and more than MAX_EXPANSION."""
    if nbytes > max(4 * stored, MAX_EXPANSION):
        raise FormatError(
            f"{what} of {nbytes} bytes is a view expanding a {stored}-byte buffer", path=path
        )


class _StorageType:
    """Stand-in for a torch storage class (``torch.FloatStorage``, ``UntypedStorage``)."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name, self.dtype = name, dtype

    def __setstate__(self, state) -> None:
        raise FormatError(f"pickle tries to modify {self.name}")


class _TorchDType:
    """Stand-in for a torch dtype object (``torch.float8_e4m3fn``)."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, dtype

    def __setstate__(self, state) -> None:
        raise FormatError(f"pickle tries to modify torch.{self.name}")


class _Storage:
    """A storage in the file: its key, element dtype (None: bytes) and declared size."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, key: str, dtype: str | None, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state) -> None:
        raise FormatError("pickle tries to modify a storage")


class _Tensor:
    """A tensor rebuilt from a storage view; materialised only when written."""

    __slots__ = ("dtype", "offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset, size, stride, dtype: str | None) -> None:
        if not isinstance(storage, _Storage):
            raise FormatError("tensor is not backed by a storage of this file")
        dtype = dtype or storage.dtype
        if dtype is None:
            raise FormatError("tensor has no dtype")
        for value, what in ((offset, "storage offset"),):
            if type(value) is not int or value < 0:
                raise FormatError(f"tensor {what} {value!r} is invalid")
        size, stride = tuple(size), tuple(stride)
        if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in (*size, *stride)):
            raise FormatError(f"tensor size {size!r} / stride {stride!r} are invalid")
        self.storage, self.offset, self.shape, self.stride, self.dtype = (
            storage,
            offset,
            size,
            stride,
            dtype,
        )

    def __setstate__(self, state) -> None:
        raise FormatError("pickle tries to modify a tensor")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * dtypes.itemsize(self.dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _Tensor(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
    if not isinstance(dtype, _TorchDType):
        raise FormatError("tensor dtype is not a torch dtype")
    return _Tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _Tensor):
        raise FormatError("parameter does not wrap a tensor")
    return data


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles spell bytes as ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FormatError("refusing _codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _torch_size(values=()):
    return tuple(values)


_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
_TORCH_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}


class _NDArrayType:
    """Stand-in for ``numpy.ndarray``. numpy's own pickles name it only as the class that
    ``_reconstruct`` builds; called, it only views a buffer that came with the pickle: a
    shape and dtype alone would hand out uninitialized process memory, and zero strides
    may not expand the buffer beyond the cap the torch path applies."""

    __slots__ = ()

    def __call__(self, shape, dtype=float, buffer=None, offset=0, strides=None, order=None):
        if buffer is None:
            raise FormatError("refusing numpy.ndarray without a buffer (uninitialized memory)")
        array = np.ndarray(shape, dtype, buffer, offset, strides, order)
        _check_expansion(array.nbytes, memoryview(buffer).nbytes, "numpy.ndarray")
        return array

    def __setstate__(self, state) -> None:
        raise FormatError("pickle tries to modify numpy.ndarray")


_NDARRAY = _NDArrayType()
_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct`` for the empty array its pickles start from (``__setstate__``
    then gives it shape and bytes); a non-empty one would be uninitialized memory."""
    if subtype is not _NDARRAY or math.prod(shape) != 0:
        raise FormatError("refusing numpy _reconstruct of anything but an empty ndarray")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, dtype)


_NUMPY_SCALAR = np.float64(0).__reduce__()[0]


def _scalar(dtype, obj=None):
    """numpy's ``scalar`` from the bytes numpy pickles with it; without them it would build
    a zero-filled value of any size the dtype names (gigabytes from a few bytes)."""
    if not isinstance(dtype, np.dtype) or (
        not dtype.hasobject and not (isinstance(obj, bytes) and len(obj) == dtype.itemsize)
    ):
        raise FormatError("refusing numpy scalar without its bytes")
    return _NUMPY_SCALAR(dtype, obj)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = _reconstruct
        out[(mod, "scalar")] = _scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = _frombuffer
    for name in (
        "float64",
        "float32",
        "float16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool_",
        "complex64",
        "complex128",
    ):
        out[("numpy", name)] = getattr(np, name)
    return out


def _frombuffer(buf, dtype, shape, order):
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise FormatError("refusing numpy _frombuffer with unexpected arguments")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "Size"): _torch_size,
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", None),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", None),
    }
    for cls, long_name in _STORAGE_DTYPES.items():
        allowed[("torch", cls)] = _StorageType(cls, dtypes.from_legacy(long_name))
    for name in dtypes.NAMES:
        attr = dtypes.lookup(name).torch
        if attr:
            allowed[("torch", attr)] = _TorchDType(attr, name)
    for alias, target in _TORCH_DTYPE_ALIASES.items():
        allowed[("torch", alias)] = _TorchDType(alias, dtypes.from_legacy(target))
    allowed.update(_numpy_globals())
    return allowed


_ALLOWED: dict[tuple[str, str], Any] | None = None


# The base is the standard library's pure-Python unpickler, not the C one: the C unpickler
# sizes its memo as a table up to the largest index a PUT names, so 10 bytes of pickle
# (LONG_BINPUT 2^30) allocate and clear gigabytes; this one keeps the memo in a dict.
class RestrictedUnpickler(pickle._Unpickler):
    """An Unpickler that resolves only tensor-rebuilding globals; nothing else can run."""

    def __init__(self, file, *, path: str, storages: dict[str, _Storage] | None) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise UnsupportedError(
                f"refusing to load global '{module}.{name}': only tensor-rebuilding globals "
                "are allowed (no code from the file is run)",
                path=self._path,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise FormatError("plain pickle refers to external storage", path=self._path)
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise FormatError(f"unknown persistent id {str(pid)[:60]!r}", path=self._path)
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType) or type(numel) is not int or numel < 0:
            raise FormatError("malformed storage reference", path=self._path)
        key = str(key)
        known = self._storages.get(key)
        if known is None:
            known = self._storages[key] = _Storage(key, stype.dtype, numel)
        return known


# what reading a damaged pickle or zip archive can raise, besides our own errors
_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    struct.error,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    OSError,
    SystemError,
)


def _load(data, path: str, storages) -> Any:
    try:
        return RestrictedUnpickler(data, path=path, storages=storages).load()
    except ZTensorError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(exc.reason, path=path, obj=exc.obj, component=exc.component) from None
    except RecursionError:
        raise FormatError("pickle is nested too deeply", path=path) from None
    except _READ_ERRORS as exc:
        raise FormatError(
            f"not a loadable pickle ({type(exc).__name__}: {exc})", path=path
        ) from None


class PickleSource(Source):
    """A torch zip checkpoint, a legacy torch file or a plain pickle."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.attributes: dict[str, Any] = {}
        self.notes: list[str] = []
        self._zip: zipfile.ZipFile | None = None
        self._file = None
        self._spans: dict[str, tuple[int, int]] = {}
        self._cache: tuple[str, np.ndarray] | None = None
        self._map: mmap.mmap | None = None
        self._regions: deque[tuple[int, int]] = deque(maxlen=16)
        self._storages: dict[str, _Storage] = {}
        self._big_endian = False
        try:
            if _is_zip(path):
                self._root = self._open_zip()
            else:
                self._root = self._open_stream()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open_zip(self) -> Any:
        try:
            return self._read_zip()
        except ZTensorError:
            raise
        except _READ_ERRORS as exc:
            raise FormatError(
                f"not a readable zip checkpoint ({type(exc).__name__}: {exc})", path=self.path
            ) from None

    def _read_zip(self) -> Any:
        self._file = files.open_stream(self.path)
        self._zip = zipfile.ZipFile(self._file)
        names = self._zip.namelist()
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise FormatError(
                "zip archive has no single data.pkl (not a torch checkpoint)", path=self.path
            )
        self._prefix = pkls[0][: -len("data.pkl")]
        if self._prefix + "byteorder" in names:
            info = self._zip.getinfo(self._prefix + "byteorder")
            if info.file_size > _BYTEORDER_MAX:
                raise FormatError("zip entry 'byteorder' is not a byte order", path=self.path)
            order = self._zip.read(info).decode("ascii", "replace")
            self._big_endian = order.strip() == "big"
        with self._zip.open(pkls[0]) as f:
            return _load(io.BufferedReader(f), self.path, self._storages)

    def _open_stream(self) -> Any:
        self._file = files.open_stream(self.path)
        first = _load(self._file, self.path, None)
        if not (type(first) is int and first == TORCH_MAGIC):
            return first  # a plain pickle: the first object is the content
        protocol = _load(self._file, self.path, None)
        if protocol != 1001:
            raise UnsupportedError(f"legacy torch protocol {protocol!r}", path=self.path)
        sys_info = _load(self._file, self.path, None)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            self._big_endian = True
        root = _load(self._file, self.path, self._storages)
        keys = _load(self._file, self.path, None)
        if not isinstance(keys, list):
            raise FormatError("legacy torch file has no storage key list", path=self.path)
        size = os.fstat(self._file.fileno()).st_size
        pos = self._file.tell()
        for key in keys:
            st = self._storages.get(str(key))
            if st is None:
                raise FormatError(f"storage {key!r} is listed but never used", path=self.path)
            head = files.read_at(self._file.fileno(), _INT64, pos)
            if len(head) != _INT64:
                raise FormatError(f"file ends before storage {key!r}", path=self.path)
            count = int.from_bytes(head, "little", signed=True)
            nbytes = count * (dtypes.itemsize(st.dtype) if st.dtype else 1)
            if count != st.numel or pos + _INT64 + nbytes > size:
                raise FormatError(f"storage {key!r} is truncated or mis-sized", path=self.path)
            self._spans[str(key)] = (pos + _INT64, nbytes)
            pos += _INT64 + nbytes
        return root

    # ------------------------------------------------------------------ storages

    def _storage_bytes(self, st: _Storage) -> np.ndarray:
        """The storage's bytes: a read-only view of the file when it is stored uncompressed
        (torch writes zip entries that way), else read from the archive."""
        if self._cache is not None and self._cache[0] == st.key:
            return self._cache[1]
        if self._zip is not None:
            entry = f"{self._prefix}data/{st.key}"
            try:
                info = self._zip.getinfo(entry)
            except KeyError:
                raise FormatError(
                    f"storage {st.key!r} is missing from the archive", path=self.path
                ) from None
            want = st.numel * (dtypes.itemsize(st.dtype) if st.dtype else 1)
            if info.file_size != want:
                raise FormatError(
                    f"storage {st.key!r} holds {info.file_size} bytes, expected {want}",
                    path=self.path,
                )
            try:
                raw = self._stored_entry(info)
                if raw is None:
                    raw = self._inflated_entry(info)
            except ZTensorError:
                raise
            except _READ_ERRORS as exc:
                raise FormatError(
                    f"storage {st.key!r} is unreadable ({exc})", path=self.path
                ) from None
        else:
            span = self._spans.get(st.key)
            if span is None:
                raise FormatError(f"storage {st.key!r} has no data", path=self.path)
            raw = np.frombuffer(self._file_map(), dtype=np.uint8, count=span[1], offset=span[0])
            self._regions.append(span)
        self._cache = (st.key, raw)
        return raw

    def _file_map(self) -> mmap.mmap:
        if self._map is None:
            self._map = files.map_read(self._file.fileno())
        return self._map

    def _stored_entry(self, info: zipfile.ZipInfo) -> np.ndarray | None:
        """A zero-copy view of an uncompressed zip entry, its CRC checked; None otherwise."""
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        mm = self._file_map()
        head = mm[info.header_offset : info.header_offset + 30]
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise FormatError(f"zip entry {info.filename!r} has no local header", path=self.path)
        name_len = int.from_bytes(head[26:28], "little")
        extra_len = int.from_bytes(head[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > len(mm):
            raise FormatError(f"zip entry {info.filename!r} is truncated", path=self.path)
        raw = np.frombuffer(mm, dtype=np.uint8, count=info.file_size, offset=start)
        if zlib.crc32(raw) != info.CRC:
            raise FormatError(f"zip entry {info.filename!r} fails its CRC", path=self.path)
        self._regions.append((start, info.file_size))
        return raw

    def _inflated_entry(self, info: zipfile.ZipInfo) -> np.ndarray:
        """A compressed zip entry inflated straight into one array of its declared size, a
        block at a time (``ZipFile.read`` would hold it twice); zipfile checks its CRC.
        A size DEFLATE cannot reach from the stored bytes is refused before allocating."""
        if (
            info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > _DEFLATE_RATIO * info.compress_size + 1024
        ):
            raise FormatError(
                f"zip entry {info.filename!r} declares {info.file_size} bytes, more than "
                f"DEFLATE can make of its {info.compress_size}",
                path=self.path,
            )
        out = np.empty(info.file_size, dtype=np.uint8)
        view = memoryview(out)
        done = 0
        with self._zip.open(info) as f:
            while done < info.file_size:
                n = f.readinto(view[done : done + _INFLATE_BLOCK])
                if not n:
                    raise FormatError(f"zip entry {info.filename!r} is truncated", path=self.path)
                done += n
            if f.read(1):
                raise FormatError(
                    f"zip entry {info.filename!r} is longer than declared", path=self.path
                )
        return out

    def _release(self) -> None:
        """Drop pages of recently written storages (the writer's pool may still re-read)."""
        if self._map is not None:
            for offset, length in self._regions:
                files.drop_pages(self._map, offset, length)

    def _materialize(self, t: _Tensor) -> np.ndarray:
        dt = dtypes.to_numpy(t.dtype)
        if self._big_endian:
            dt = dt.newbyteorder(">")
        raw = self._storage_bytes(t.storage)
        n = raw.size // dt.itemsize
        if math.prod(t.shape) == 0:
            return np.zeros(t.shape, dtype=dtypes.to_numpy(t.dtype))
        last = t.offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride))
        if last >= n:
            raise FormatError(
                f"tensor view reaches element {last} of a storage of {n}", path=self.path
            )
        _check_expansion(t.nbytes, raw.size, "tensor", self.path)
        base = raw[: n * dt.itemsize].view(dt)
        view = np.lib.stride_tricks.as_strided(
            base[t.offset :], t.shape, tuple(s * dt.itemsize for s in t.stride), writeable=False
        )
        return np.ascontiguousarray(view).astype(dtypes.to_numpy(t.dtype), copy=False)

    # ------------------------------------------------------------------ items

    def items(self) -> Iterator[Item]:
        try:  # unpickling is iterative, so containers may nest deeper than Python recurses
            leaves = list(_flatten(self._root, ""))
        except RecursionError:
            raise FormatError("pickle nests its containers too deeply", path=self.path) from None
        for name, value in leaves:
            if isinstance(value, _Tensor):
                yield Item(name or "tensor", value.nbytes, self._tensor_writer(value))
            elif isinstance(value, np.ndarray):
                if value.dtype.kind in "OUSV":
                    self.notes.append(
                        f"{self.path}: skipped {name!r} (numpy dtype "
                        f"{value.dtype} has no zTensor equivalent)"
                    )
                    continue
                yield Item(name or "array", value.nbytes, _array_writer(value))
            elif isinstance(value, np.generic):
                self.attributes[name or "value"] = value.item()
            elif value is None or isinstance(value, (bool, int, float, str)):
                self.attributes[name or "value"] = value
            else:
                self.notes.append(
                    f"{self.path}: skipped {name!r} ({type(value).__name__} is not a tensor)"
                )

    def _tensor_writer(self, t: _Tensor):
        def write(writer, out_name, level, checksum, attributes=None) -> None:
            add_array(writer, out_name, self._materialize(t), level, checksum, attributes)
            self._release()

        return write

    def close(self) -> None:
        self._cache = None
        self._map = None  # unmapped when the writer's last view of it goes
        if self._zip is not None:
            self._zip.close()
        if self._file is not None:
            self._file.close()


def _is_zip(path: str) -> bool:
    fd, _ = files.open_read(path)
    try:
        return files.read_at(fd, 4, 0) == b"PK\x03\x04"
    finally:
        os.close(fd)


def _array_writer(array: np.ndarray):
    def write(writer, out_name, level, checksum, attributes=None) -> None:
        add_array(writer, out_name, array, level, checksum, attributes)

    return write


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted name, leaf) pairs of nested dicts, lists and tuples, in their order."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (list, tuple)) and not (
        value and all(isinstance(v, (int, float, str, bool)) for v in value)
    ):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, value
