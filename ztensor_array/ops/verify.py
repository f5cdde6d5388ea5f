"""``verify``: every problem of a file, collected instead of stopping at the first.

Structure and digests (of the stored bytes, without decoding), and with ``deep`` every
component decoded and every object read, so a user sees the whole damage at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import validation
from ..codecs import digests
from ..errors import MissingFileError, ZTensorError
from ..reader import Reader
from .base import Progress


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, where it is, and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def verify(
    path: str | os.PathLike,
    *,
    deep: bool = False,
    progress: Progress | None = None,
) -> list[Problem]:
    """Every problem of a file; an empty list means clean.

    ``progress`` is started with the file size and advanced by the stored bytes checked.
    A missing file raises (there is nothing to verify); any other error opening the file
    is its one problem.
    """
    path = os.fspath(path)
    progress = progress or Progress()
    try:
        r = Reader(path)
    except MissingFileError:
        raise
    except ZTensorError as exc:
        return [Problem("", exc.reason)]
    problems: list[Problem] = []
    with r:
        progress.start(f"verify {os.path.basename(path)}", r.size)
        for name in r.tensor_names:
            obj = r.manifest.objects[name]
            ok = True
            for role, comp in obj.components.items():
                where = f"object {name!r} component {role!r}"
                try:
                    if comp.digest is not None:
                        problem = digest_problem(comp.digest, r.stored_bytes(name, role))
                        if problem is not None:
                            problems.append(Problem(where, problem))
                    if deep:
                        r.read_component(name, role, verify=False, copy=False)
                except ZTensorError as exc:
                    ok = False
                    problems.append(Problem(where, exc.reason))
                progress.advance(comp.length)
            if obj.format == "chunked":
                ok &= _verify_chunks(r, name, problems, progress)
            if deep and ok:
                try:
                    _touch(r.read_tensor(name))
                except ZTensorError as exc:
                    where = f"object {name!r}"
                    if exc.component is not None:
                        where += f" component {exc.component!r}"
                    problems.append(Problem(where, exc.reason))
                except (ValueError, TypeError, IndexError) as exc:
                    problems.append(Problem(f"object {name!r}", f"cannot be decoded ({exc})"))
    return problems


def _verify_chunks(r: Reader, name: str, problems: list[Problem], progress) -> bool:
    """The chunks an index locates (they are no components): the whole index in one
    vectorised pass, then each chunk's digest over its stored bytes."""
    from ..layouts import chunked  # concurrent.futures comes with it: chunked files only

    obj = r.manifest.objects[name]
    try:
        grid = chunked.chunk_grid(obj, r.path, name)
        chunks = r.chunks(name)
    except ZTensorError as exc:
        problems.append(Problem(f"object {name!r}", exc.reason))
        return False
    located = {i: c for i, c in chunks.items() if c not in obj.components.values()}
    found = validation.index_problems(r.manifest.objects, grid, located)
    for label, message in found:
        problems.append(Problem(f"object {name!r} chunk {label}", message))
    if found:
        return False  # their bytes are not this chunk's: no digest to check there
    for index, (comp, blob) in r.chunk_blobs(name).items():
        if index in located and comp.digest is not None:
            problem = digest_problem(comp.digest, blob)
            if problem is not None:
                where = f"object {name!r} chunk {chunked.chunk_role(index)}"
                problems.append(Problem(where, problem))
        progress.advance(comp.length)
    return True


def digest_problem(digest: str, stored) -> str | None:
    """What is wrong with a component whose stored bytes should have ``digest``: a
    mismatch, or an algorithm this version cannot check; None when it matches."""
    ok = digests.matches(digest, stored)
    if ok is None:
        return f"digest {digest!r} has an unknown algorithm"
    return None if ok else f"digest mismatch (expected {digest})"


def _touch(value: Any) -> None:
    """Force a lazily decoded value to materialise (sparse matrices check their indices)."""
    check = getattr(value, "check_format", None)
    if callable(check):
        check(full_check=True)
