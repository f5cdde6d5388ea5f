"""The exception hierarchy: one base class users catch, subclasses that say what went wrong.

Every message names where the problem is: the file, the object (tensor) and the component,
whichever are known, so a user with a thousand-tensor checkpoint knows where to look.
"""

from __future__ import annotations

import os


def _where(path: str | os.PathLike | None, obj: str | None, component: str | None) -> str:
    parts = []
    if path is not None:
        parts.append(os.fspath(path))
    if obj is not None:
        parts.append(f"object {obj!r}")
    if component is not None:
        parts.append(f"component {component!r}")
    return ", ".join(parts)


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: "1 tensor", "3 tensors" (regular nouns)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class ZTensorError(Exception):
    """Base class of every error this package raises on bad input or misuse."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        obj: str | None = None,
        component: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.obj = obj
        self.component = component
        self.reason = message
        where = _where(path, obj, component)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):  # keep pickling (e.g. across dask workers) lossless
        return (
            _rebuild,
            (type(self), self.reason, self.path, self.obj, self.component),
        )


def _rebuild(cls, reason, path, obj, component):
    return cls(reason, path=path, obj=obj, component=component)


class FormatError(ZTensorError, ValueError):
    """The bytes do not form a valid zTensor file (bad magic, manifest, offsets, structure)."""


class TornFileError(FormatError):
    """The file ends in an incomplete write (a torn tail); `ztensor_array.repair` can fix it."""


class FileBusyError(ZTensorError):
    """Another writer holds the file (an append, compact, repair or parallel write of it):
    nothing was changed; try again when it is done (SPEC.md §9.3)."""


class AppendInProgressError(FileBusyError):
    """A parallel append of the file is in progress (or its processes died: then
    ``repair(path, abandon=True)`` undoes it). Not a torn file: do not repair it while the
    append may still run."""


class FileReplacedError(ZTensorError):
    """The path no longer names the file a writer opened (compact, a rename or a new file
    replaced it): what the writer added is not in the file at the path, so it fails."""


class ChecksumError(ZTensorError, ValueError):
    """A component's stored bytes do not match its recorded digest."""


class DecodeError(FormatError):
    """A component failed to decode (corrupt zstd frame, wrong decoded size)."""


class TensorNotFoundError(ZTensorError, KeyError):
    """The requested object name is not in the file."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return Exception.__str__(self)


class ObjectIndexError(TensorNotFoundError, IndexError):
    """An integer index beyond the objects of a file (``reader[-4]`` of three objects); an
    IndexError too, as a sequence index must be."""


class MissingFileError(ZTensorError, FileNotFoundError):
    """The file to read does not exist."""


class SystemIOError(ZTensorError, OSError):
    """The system refused a read or write (disk full, file size limit, I/O error); an
    OSError too, with the system's ``errno`` and ``strerror``."""

    def __init__(self, message: str, *, errno: int | None = None, **where) -> None:
        super().__init__(message, **where)
        self.errno = errno
        self.strerror = os.strerror(errno) if errno is not None else None

    def __str__(self) -> str:  # OSError's would be "[Errno n] text", without the file
        return Exception.__str__(self)

    def __reduce__(self):
        return (_rebuild_io, (self.reason, self.errno, self.path, self.obj, self.component))


def _rebuild_io(reason, errno, path, obj, component):
    return SystemIOError(reason, errno=errno, path=path, obj=obj, component=component)


class RemoteError(ZTensorError, OSError):
    """A remote file could not be read as one consistent object: the server failed, sent
    fewer or other bytes than asked for, or ignored a range request for a file too large to
    fetch whole; an OSError too, as a failed read is."""

    def __str__(self) -> str:  # OSError's would drop the file
        return Exception.__str__(self)


class ObjectChangedError(RemoteError):
    """The remote object changed (another size, ETag or version) since it was opened: the
    bytes already read and the ones asked for now would mix two files. Open it again."""


class FileExistsZTError(ZTensorError, FileExistsError):
    """``mode="x"`` (or a command without ``--force``) met an existing path."""


class UnsupportedError(ZTensorError, NotImplementedError):
    """Valid input that this version cannot handle (unknown format, dtype without numpy type)."""


class InvalidArgumentError(ZTensorError, ValueError):
    """An argument has a value the API does not accept (``compress=30``, ``mode="q"``);
    a ValueError too, so ``except ValueError`` keeps working."""


class InvalidIndexError(ZTensorError, IndexError):
    """A selection that does not fit the tensor (an index out of bounds, index arrays that
    do not broadcast); an IndexError too, as numpy raises."""


class ArgumentTypeError(ZTensorError, TypeError):
    """An argument has a type the API does not accept (a non-text tensor name); a
    TypeError too."""


class StateDictError(ZTensorError, RuntimeError):
    """A file's tensors do not match a model's state dict (``load_model(strict=True)``); a
    RuntimeError too, as safetensors and ``load_state_dict`` raise."""
