"""File primitives, each defined once: opening a regular file for reading, reading and writing
at offsets, creating a new file atomically, the writers' lock and append marker (SPEC §9.3),
truncation, folder fsync, the filesystem type, memory maps and dropping their pages.

The reader, the writer and the converters go through these; nothing above them opens, maps
or replaces a file by itself. Locks belong to the open file (its inode), never to a path
string: a path may be renamed over while its old file is still open.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from .errors import (
    AppendInProgressError,
    ArgumentTypeError,
    FileBusyError,
    FileExistsZTError,
    FileReplacedError,
    InvalidArgumentError,
    MissingFileError,
    SystemIOError,
    TornFileError,
    ZTensorError,
)

# O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not regular)
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def fspath(path) -> str:
    """A path argument as text: str, bytes or os.PathLike (anything else, or a NUL in it,
    is an argument error rather than a TypeError or ValueError from deep inside)."""
    try:
        text = os.fsdecode(path)
    except TypeError:
        raise ArgumentTypeError(
            f"a file path must be str or os.PathLike, not {type(path).__name__}"
        ) from None
    if "\x00" in text:
        raise InvalidArgumentError("a file path must not contain U+0000", path=ascii(text))
    return text


def token(nbytes: int = 6) -> str:
    """Random hex for temporary names (what secrets.token_hex does, without its imports)."""
    return os.urandom(nbytes).hex()


def temp_name(path: str) -> str:
    """A hidden temporary name beside the file a write to ``path`` replaces (``target``:
    same folder, so a rename onto it is atomic)."""
    folder, base = os.path.split(target(path))
    return os.path.join(folder, f".{base}.tmp-{token()}")


def target(path: str) -> str:
    """The file a write to ``path`` replaces: a symlink is followed to its target (dangling
    or not), as ``open(path, "w")`` follows it. The one rule for every writer (SPEC §9)."""
    return os.path.realpath(path)


def check_replaceable(path: str) -> os.stat_result | None:
    """The status of the regular file that a write to ``path`` would replace (None if there
    is none); a folder, device, FIFO or socket there is refused, never replaced."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ZTensorError(f"cannot inspect: {exc.strerror}", path=path) from None
    _refuse_special(st, path, ": refusing to replace it")
    return st


# --------------------------------------------------------------------------- opening


class FileIdentity(NamedTuple):
    """Which file, in which state: a write or truncation changes ``ctime_ns`` (which no
    user call can set back), a rename over the path changes ``ino``."""

    dev: int
    ino: int
    size: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


def identity(path: str) -> FileIdentity | None:
    """The identity of the file at ``path`` now (following symlinks); None if there is none."""
    try:
        return FileIdentity.of(os.stat(path))
    except OSError:
        return None


def _refuse_special(st: os.stat_result, path: str, doing: str = "") -> None:
    """Refuse anything but a regular file, naming what it is (``doing``: what is refused)."""
    if stat.S_ISDIR(st.st_mode):
        raise ZTensorError(f"is a folder, not a file{doing}", path=path)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "special")
        raise ZTensorError(f"is {kind}, not a regular file{doing}", path=path)


def _check_regular(fd: int, path: str) -> FileIdentity:
    """The identity of the open file, which must be a regular file (closes ``fd`` if not)."""
    try:
        st = os.fstat(fd)
        _refuse_special(st, path)
    except BaseException:
        os.close(fd)
        raise
    return FileIdentity.of(st)


def open_read(path: str) -> tuple[int, int]:
    """(fd, size) of a regular file opened read-only (FIFOs, devices and folders refused
    without blocking)."""
    fd, ident = open_read_identity(path)
    return fd, ident.size


def open_read_identity(path: str) -> tuple[int, FileIdentity]:
    """``open_read``, with the identity of the file opened."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise MissingFileError("no such file", path=path) from None
    except OSError as exc:
        raise ZTensorError(f"cannot open: {exc.strerror}", path=path) from None
    return fd, _check_regular(fd, path)


def open_stream(path: str):
    """A buffered binary file object over ``open_read(path)`` (for parsers that stream)."""
    fd, _ = open_read(path)
    return open(fd, "rb", closefd=True)  # noqa: SIM115 - the caller closes it


def read_file(path: str) -> bytes:
    """The whole content of a regular file."""
    fd, size = open_read(path)
    try:
        return read_at(fd, size, 0)
    finally:
        os.close(fd)


def open_target(target: str, flags: int, path: str) -> int:
    """A file that a parallel write is filling, opened for one write (or the commit); the
    error says the write was probably aborted meanwhile."""
    try:
        return os.open(target, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise ZTensorError(
            f"cannot open the file being written ({exc.strerror}); was the write aborted?",
            path=path,
        ) from None


def lock(fd: int, *, shared: bool = False, wait: bool | float = True) -> bool:
    """flock the open file (its inode, whatever path opened it; released when ``fd`` closes).
    ``wait``: True blocks until the lock is free, False does not wait, a number waits at
    most that many seconds. False when the lock was not taken."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if wait is True:
        fcntl.flock(fd, op)
        return True
    deadline = time.monotonic() + float(wait)
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


def same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


# --------------------------------------------------------------------------- writers' lock

LOCK_WAIT = 1.0  # seconds a writer waits for another's lock before FileBusyError
APPEND_KEY = "ztensor_array.append"  # root manifest key: the token of the append that wrote it
_BUSY = "another writer is appending to this file, or compacting or repairing it"
MARKER_KINDS = ("append", "parallel")


@dataclass(frozen=True)
class Marker:
    """The append marker: a hidden file ``.NAME.append`` beside the file (symlinks
    followed) that exists while an append is under way. It names the file by device and
    inode, the size ``base`` of its last complete state and the append's random ``token``,
    which the append's manifest records (``APPEND_KEY``): a manifest at the end of the file
    without it is a torn tail, whatever it looks like (SPEC §9.3)."""

    kind: str  # "append" (a Writer in mode "a") or "parallel" (a multi-process append)
    token: str
    dev: int
    ino: int
    base: int
    pid: int
    host: str

    def encode(self) -> bytes:
        fields = (self.kind, self.token, self.dev, self.ino, self.base, self.pid, self.host)
        return ("ztensor-append " + " ".join(str(f) for f in fields) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Marker | None:
        """The marker in ``data``; None for anything else (a partly written marker too)."""
        words = data.decode("ascii", "replace").split()
        if len(words) != 8 or words[0] != "ztensor-append" or words[1] not in MARKER_KINDS:
            return None
        try:
            dev, ino, base, pid = (int(w) for w in words[3:7])
        except ValueError:
            return None
        return cls(words[1], words[2], dev, ino, base, pid, words[7])

    def names(self, ident) -> bool:
        """Whether the marker is about the file of identity ``ident`` (else it is left
        over from a file that was replaced at the path, and means nothing)."""
        return (self.dev, self.ino) == (ident[0], ident[1])

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, from byte {self.base}"


def marker_path(path: str) -> str:
    """Where the append marker of the file at ``path`` lives: beside the file itself (a
    symlink is followed), so every path to one file finds the same marker."""
    if os.path.islink(path):
        path = target(path)
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.append")


def read_marker(path: str, ident) -> Marker | None:
    """The append marker of the file of identity ``ident`` (dev, ino, ...) at ``path``;
    None if there is none (or one left over from another file)."""
    try:
        fd = os.open(marker_path(path), _READ_FLAGS)
    except OSError:
        return None
    try:
        marker = Marker.decode(os.pread(fd, 4096, 0))
    except OSError:
        marker = None
    finally:
        os.close(fd)
    return marker if marker is not None and marker.names(ident) else None


def remove_marker(path: str, token: str) -> None:
    """Remove the append marker of the file at ``path`` if it holds ``token`` (ours)."""
    where = marker_path(path)
    try:
        fd = os.open(where, _READ_FLAGS)
    except OSError:
        return
    try:
        marker = Marker.decode(os.pread(fd, 4096, 0))
        ours = marker is not None and marker.token == token and same_file(fd, where)
    finally:
        os.close(fd)
    if ours:
        unlink_quietly(where)


def marker_error(marker: Marker, path: str) -> ZTensorError:
    """What a writer meeting ``marker`` while holding the file's lock is told: a parallel
    append may still run; a Writer's append marker under a lock we hold is a dead one."""
    if marker.kind == "parallel":
        return AppendInProgressError(
            f"a parallel append is in progress ({marker.describe()}); if its processes "
            "died, repair(path, abandon=True) (ztensor repair --abandon) undoes it",
            path=path,
        )
    return TornFileError(
        f"an append was interrupted ({marker.describe()}): "
        "ztensor_array.repair(path) restores the last complete state",
        path=path,
    )


class FileLock:
    """The writers' lock on one file: an exclusive flock on the file itself (its inode,
    whichever path or symlink opened it), taken after which the path is checked to still
    name that file. Every writer of an existing file holds it while it changes the file
    (SPEC §9.3); readers never take it."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)

    @classmethod
    def acquire(
        cls,
        path: str,
        *,
        write: bool = True,
        wait: float | None = None,
        missing: str = "no such file",
    ) -> FileLock:
        """Open ``path`` (read-write with ``write``) and lock it, waiting at most ``wait``
        seconds (default ``LOCK_WAIT``) for another writer. A file renamed over the path
        while we waited is let go and the new one locked instead."""
        flags = (os.O_RDWR if write else _READ_FLAGS) | os.O_CLOEXEC
        for _ in range(8):
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                raise MissingFileError(missing, path=path) from None
            except OSError as exc:
                raise ZTensorError(f"cannot open: {exc.strerror}", path=path) from None
            _check_regular(fd, path)
            if not lock(fd, wait=LOCK_WAIT if wait is None else wait):
                os.close(fd)
                raise FileBusyError(_BUSY, path=path)
            if same_file(fd, path):
                return cls(fd, path)
            os.close(fd)
        raise FileReplacedError(
            "the file kept being replaced while waiting for its lock", path=path
        )

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def marker(self) -> Marker | None:
        """The append marker of the locked file, if any."""
        return read_marker(self.path, self.ident)

    def check_named(self) -> None:
        """Fail loudly if the path no longer names the locked file (compact or a rename
        replaced it): what was written went to a file nobody will find."""
        if not same_file(self.fd, self.path):
            raise FileReplacedError(
                "the file was replaced (compacted, renamed over or rewritten) while this "
                "writer had it open: nothing was added to the file now at the path",
                path=self.path,
            )

    def begin_append(
        self, kind: str, base: int, *, token: str | None = None, durable: bool = False
    ) -> Marker:
        """Create the append marker (before any byte after ``base`` is written). A marker
        of this file already there is refused; one of a file replaced since is replaced."""
        import socket  # ~1 ms: appends only

        marker = Marker(
            kind, token or _token_hex(8), *self.ident, base, os.getpid(), socket.gethostname()
        )
        where = marker_path(self.path)
        for _ in range(3):
            try:
                fd = os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                old = read_marker(self.path, self.ident)
                if old is not None:
                    raise marker_error(old, self.path) from None
                unlink_quietly(where)  # left over from a file replaced at this path
                continue
            except OSError as exc:
                raise ZTensorError(
                    f"cannot create the append marker {where}: {exc.strerror}", path=self.path
                ) from None
            try:
                write_at(fd, marker.encode(), 0, path=where)
                if durable:
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                unlink_quietly(where)
                raise
            os.close(fd)
            if durable:
                fsync_dir(os.path.dirname(os.path.abspath(where)))
            return marker
        raise FileBusyError("cannot create the append marker", path=self.path)

    def end_append(self, marker: Marker) -> None:
        """Remove the append marker if it is still ``marker`` (ours)."""
        remove_marker(self.path, marker.token)

    def clear_leftover_marker(self) -> None:
        """Remove a marker file that names no append of this file: one left by a process
        killed while creating it (unreadable), or by a file since replaced at the path."""
        where = marker_path(self.path)
        if os.path.lexists(where) and self.marker() is None:
            unlink_quietly(where)

    def truncate(self, size: int, *, durable: bool = True) -> None:
        """Cut the locked file to ``size`` bytes (and make that durable)."""
        try:
            os.ftruncate(self.fd, size)
            if durable:
                os.fsync(self.fd)
        except OSError as exc:
            raise system_error(exc, self.path, "truncate") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_to_replace(path: str) -> FileLock | None:
    """The writers' lock on the regular file that a new file at ``path`` replaces (None if
    there is none, or it cannot be opened to lock): a replacement waits for the append,
    compact or repair in progress to end rather than discard it. A marker is not refused
    (a torn file may be replaced; a parallel append of it then fails at its commit)."""
    try:
        return FileLock.acquire(path, write=False)
    except (MissingFileError, FileReplacedError):
        return None
    except FileBusyError:
        raise
    except ZTensorError:
        return None  # not a regular file, or not readable: commit() decides


def _token_hex(nbytes: int) -> str:
    return token(nbytes)


# --------------------------------------------------------------------------- filesystems

# Filesystems shared between machines, on which O_APPEND is not atomic across clients
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "beegfs",
        "9p",
        "afs",
        "fuse.sshfs",
        "panfs",
        "pvfs2",
        "orangefs",
        "ocfs2",
        "gfs2",
    }
)


def _unescape_mount(field: str) -> str:
    """A /proc/mounts path field (space, tab, newline and backslash octal-escaped)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (its folder if it does not exist yet), as
    /proc/mounts names it ("ext4", "nfs4", "lustre"...); "" where unknown. The one place
    that asks, so tests can substitute another answer (statvfs gives no type)."""
    where = os.path.realpath(path)
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    best, kind = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _unescape_mount(fields[1])
                inside = where == point or where.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def on_network_filesystem(path: str) -> bool:
    """Whether ``path`` is on a filesystem shared between machines (NFS, Lustre, GPFS,
    CIFS...), where O_APPEND writes of different clients may overwrite each other."""
    return filesystem_type(path) in NETWORK_FILESYSTEMS


# --------------------------------------------------------------------------- reading, writing


def system_error(exc: OSError, path: str, doing: str) -> SystemIOError:
    """An OSError of a read or write on ``path`` (which the system does not name: it
    only knows the fd) as the error that names it and keeps the errno."""
    return SystemIOError(f"cannot {doing}: {exc.strerror or exc}", errno=exc.errno, path=path)


def read_at(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset``: fewer only where the file ends."""
    first = os.pread(fd, n, offset)
    if len(first) == n or not first:
        return first
    out = bytearray(first)
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def readinto_at(fd: int, buf: memoryview, offset: int) -> int:
    """Fill the byte buffer ``buf`` from ``offset`` without a copy; returns the bytes read
    (fewer only where the file ends)."""
    done = 0
    while done < buf.nbytes:
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            break
        done += n
    return done


def write_at(fd: int, data, offset: int, *, path: str | None = None) -> int:
    """Write all of ``data`` (any buffer) at ``offset``; returns the offset after it. With
    ``path``, a refused write (disk full, file size limit) is a SystemIOError naming it."""
    view = memoryview(data).cast("B")
    try:
        while view.nbytes:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    except OSError as exc:
        if path is None:
            raise
        raise system_error(exc, path, "write") from None
    return offset


def truncate_file(path: str, size: int) -> None:
    """Cut a file to ``size`` bytes under the writers' lock and make that durable."""
    with FileLock.acquire(path) as held:
        held.truncate(size)


# --------------------------------------------------------------------------- new files


def create_temp(path: str, *, exclusive: bool = False) -> tuple[int, str | None]:
    """(fd, temporary name or None) of a new empty file in the folder of ``target(path)``
    that nobody sees until ``commit``: unnamed (Linux O_TMPFILE) where the filesystem
    allows, else under a hidden temporary name. ``exclusive``: refuse a path that exists
    already (a dangling symlink too); otherwise what is there must be a regular file."""
    if exclusive and os.path.lexists(path):
        raise FileExistsZTError("path exists (mode='x')", path=path)
    check_replaceable(path)
    folder = os.path.dirname(target(path))
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666), None
    except (AttributeError, OSError):
        tmp = temp_name(path)
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o666), tmp
        except OSError as exc:
            raise ZTensorError(f"cannot create: {exc.strerror}", path=path) from None


def commit(fd: int, tmp: str | None, path: str, *, exclusive: bool, durable: bool) -> None:
    """Make the file open as ``fd`` (from ``create_temp``; ``tmp`` its temporary name, if
    any) appear at ``path`` in one step, replacing what is there or, with ``exclusive``,
    failing if anything is. The temporary name is gone afterwards, whatever happens.
    A replaced file is ``target(path)`` (a symlink stays and points at the new file) and
    must be a regular file; the new file takes its permission bits, as a file rewritten
    through ``open(path, "w")`` keeps them. ``durable``: fsync the folder too (the caller
    fsyncs the file)."""
    dest = path if exclusive else target(path)
    folder = os.path.dirname(os.path.abspath(dest))
    if tmp is None:  # unnamed: give it a hidden name first
        base = os.path.basename(temp_name(path))
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:  # a dir fd makes os.link use linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd
            os.link(f"/proc/self/fd/{fd}", base, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        tmp = os.path.join(folder, base)
    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsZTError("path exists (mode='x')", path=path) from None
            os.unlink(tmp)
        else:
            old = check_replaceable(path)
            if old is not None:
                os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
            os.replace(tmp, dest)
    except OSError as exc:
        unlink_quietly(tmp)
        if isinstance(exc, ZTensorError):
            raise
        raise ZTensorError(f"cannot move into place: {exc.strerror}", path=path) from None
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(folder)


@contextmanager
def replacing(path: str, *, durable: bool = False) -> Iterator[int]:
    """The fd of a new file that replaces ``path`` atomically when the block ends cleanly
    (``durable``: fsynced, file and folder) and vanishes if it raises."""
    fd, tmp = create_temp(path)
    try:
        yield fd
        if durable:
            os.fsync(fd)
        commit(fd, tmp, path, exclusive=False, durable=durable)
    except BaseException:
        if tmp is not None:
            unlink_quietly(tmp)
        raise
    finally:
        os.close(fd)


def write_new(path: str, data, *, durable: bool = False) -> None:
    """A new file holding ``data``, replacing ``path`` atomically."""
    with replacing(path, durable=durable) as fd:
        write_at(fd, data, 0)


def copy_prefix(src: str, dst: str, size: int) -> None:
    """A new file holding the first ``size`` bytes of ``src``, replacing ``dst`` atomically
    and durably (repair's ``out=``)."""
    fd_in, _ = open_read(src)
    try:
        with replacing(dst, durable=True) as fd:
            done = 0
            while done < size:
                n = os.copy_file_range(fd_in, fd, size - done, done, done)
                if n == 0:
                    raise ZTensorError("source ended early", path=src)
                done += n
    finally:
        os.close(fd_in)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(folder: str) -> None:
    """Make a folder's entries (a rename, a new name) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- maps


def map_read(fd: int) -> mmap.mmap:
    """A shared read-only map of the whole (non-empty) file."""
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def map_private(fd: int, offset: int, length: int, *, scattered: bool = False) -> memoryview:
    """A writable copy-on-write view of ``length`` bytes at ``offset``: writes through it
    reach neither the file nor any other map. ``scattered``: the view will be read in a few
    scattered places (a small selection of a large tensor), so the kernel is told to read
    only the pages touched, not megabytes of read-ahead around each."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mm = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_COPY, offset=start)
    if scattered and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    return memoryview(mm)[offset - start :]


def drop_pages(mm: mmap.mmap, offset: int, length: int) -> None:
    """Unmap the whole pages inside ``[offset, offset + length)`` of a shared read-only map
    from this process (advice only; never on a private map, whose writes it would discard).

    Bytes read once (compressed frames, converted inputs) would otherwise count in the
    resident set until the map goes, growing it to the file size. The pages stay in the
    page cache. Pages shared with a neighbour are kept: it may be read next, and a small
    blob's call costs no syscall.
    """
    page = mmap.PAGESIZE
    start = -(-offset // page) * page
    end = min(offset + length, len(mm)) // page * page
    if end > start and hasattr(mm, "madvise"):
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass  # advice only
