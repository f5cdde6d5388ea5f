"""``compute=False`` writes: the Delayed that writes and commits a file, and the clean-up of
one whose computation fails.

Dask has no "finally" task: a failed task only stops its dependents. So a failed write is
undone (temp file removed; in mode "a" the lock file and appended tail) where the failure
is seen first:

- local schedulers: in the computing process, by ``WriteDelayed.compute()`` and by a
  callback for ``dask.compute(...)`` / ``persist`` of several collections;
- ``distributed``: on the scheduler, which learns of a failure before any client does. The
  graph's first task (``begin``, on a worker) installs a scheduler plugin (``watch.py``) and
  registers its write under the commit task's key; when that task errs, or is released
  before it ever ran (the client cancelled, or went away), the plugin undoes the write
  before any client is told. A failure that happens before ``begin`` reached the scheduler
  is caught by ``begin`` itself: it asks after creating the file, and undoes it if the
  commit task is already erred or released.
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref

from dask.callbacks import Callback
from dask.delayed import Delayed

from ... import parallel
from ...errors import ZTensorError

_aborted: set[tuple[str, str]] = set()  # (target, token) of writes undone in this process
_aborted_lock = threading.Lock()
_live_writes: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # key -> write


def _plan_id(plan: parallel.ParallelPlan) -> tuple[str, str]:
    return plan.target, plan.token


def undo(plan: parallel.ParallelPlan) -> None:
    """Undo a write and make sure no task of it can begin the file again (``begin``)."""
    with _aborted_lock:
        _aborted.add(_plan_id(plan))
    parallel.abort(plan)  # waits for fenced writes in flight, then undoes them


def begin(plan: parallel.ParallelPlan, regions: list[int], commit_key: str) -> list[int]:
    """The graph's first task. Refuses to start a write that was already undone in this
    process (a failure elsewhere in the graph can be cleaned up while this task still waits
    to run, and it must not recreate the file afterwards); on a distributed worker, hands
    the write to the scheduler's watch, and undoes it if the commit can no longer run."""
    with _aborted_lock:
        if _plan_id(plan) in _aborted:
            raise ZTensorError(
                "this deferred write failed and was undone; call to_ztensor again",
                path=plan.path,
            )
        try:
            offsets = parallel.begin(plan, regions)
        except BaseException:
            parallel.abort(plan)  # a half-made temp file or our own lock file
            raise
    if not _watched(plan, commit_key):
        undo(plan)
        raise ZTensorError(
            "this deferred write failed or was cancelled before it began; nothing was written",
            path=plan.path,
        )
    return offsets


def _watched(plan: parallel.ParallelPlan, commit_key: str) -> bool:
    """False if this runs on a distributed worker and the scheduler says the commit task
    will never run; True otherwise (also where there is no scheduler to ask)."""
    if "distributed" not in sys.modules:
        return True
    import distributed  # already imported: this process runs distributed tasks

    try:
        begin_key = distributed.get_worker().get_current_task()
    except ValueError:
        return True  # not in a distributed task
    from .watch import watch_write  # imports distributed's plugin base class

    try:
        client = distributed.get_client()
        return client.run_on_scheduler(watch_write, commit_key, begin_key, plan.small())
    except Exception as exc:  # e.g. a scheduler without ztensor_array: write, unwatched
        warnings.warn(
            f"{plan.path}: the scheduler cannot watch this write ({exc!r}); if it fails, "
            "its temp file (mode 'a': lock file and tail) stays",
            RuntimeWarning,
            stacklevel=2,
        )
        return True


class WriteDelayed(Delayed):
    """The Delayed of ``to_ztensor(..., compute=False)``; computing it writes the file, and
    a failed ``compute()`` undoes what it wrote."""

    __slots__ = ("_plan",)

    def compute(self, **kwargs):
        try:
            return super().compute(**kwargs)
        except BaseException:
            undo(self._plan)
            raise

    def __setstate__(self, state):  # an unpickled write is watched in this process too
        attrs, slots = state if isinstance(state, tuple) else (state, None)
        for name, value in {**(attrs or {}), **(slots or {})}.items():
            object.__setattr__(self, name, value)
        _live_writes[self.key] = self


class _UndoFailedWrites(Callback):
    """Local schedulers: undo the writes of a graph that failed."""

    def _finish(self, dsk, state, errored):
        if errored and _live_writes:
            done = state.get("finished", ())
            for key, w in list(_live_writes.items()):
                if key in dsk and key not in done:  # a committed write stays
                    undo(w._plan)


_UndoFailedWrites().register()


def delayed_write(plan: parallel.ParallelPlan, final: Delayed) -> WriteDelayed:
    """``final`` (the commit of a write's graph) as a WriteDelayed that cleans up."""
    out = WriteDelayed(final.key, final.dask)
    out._plan = plan
    _live_writes[out.key] = out
    return out
