"""The ``distributed`` scheduler plugin that undoes a deferred write whose commit task errs,
or is released without ever having run (see ``deferred.py``). Imported on the scheduler by
the first task of such a write; importing it imports distributed."""

from __future__ import annotations

from distributed.diagnostics.plugin import SchedulerPlugin

from ... import parallel

WATCH = "ztensor-write-watch"  # the plugin's name on the scheduler
_LIVE_STATES = ("waiting", "queued", "no-worker")  # a commit task that may still run


class WriteWatch(SchedulerPlugin):
    """Undoes a registered write when its commit task errs, or is released without ever
    having run (transitions are seen before clients are told of them)."""

    idempotent = True
    name = WATCH

    def __init__(self) -> None:
        self.plans: dict[str, parallel.ParallelPlan] = {}
        self.started: set[str] = set()  # commit tasks that were sent to a worker

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        plan = self.plans.get(key)
        if plan is None:
            return
        if finish == "processing":
            self.started.add(key)  # from now on the commit cleans up after itself
            return
        ran = key in self.started
        if finish == "erred" or (finish in ("released", "forgotten") and not ran):
            self.plans.pop(key, None)
            self.started.discard(key)
            # a begin task still to come asks the scheduler first and finds the commit
            # erred or released (watch_write), so it cannot make the file again
            parallel.abort(plan)
        elif finish in ("memory", "forgotten"):
            self.plans.pop(key, None)
            self.started.discard(key)


def watch_write(
    commit_key: str, begin_key, plan: parallel.ParallelPlan, dask_scheduler=None
) -> bool:
    """Runs on the scheduler (its event loop, so no transition interleaves): installs the
    watch once, and registers the write if its commit task may still run."""
    watch = dask_scheduler.plugins.get(WATCH)
    if watch is None:
        watch = WriteWatch()
        dask_scheduler.add_plugin(watch, name=WATCH, idempotent=True)
    ts = dask_scheduler.tasks.get(commit_key)
    if ts is None:  # released and forgotten, or renamed (fused into a caller's task)
        begin = dask_scheduler.tasks.get(begin_key)
        return begin is not None and begin.state == "processing"  # renamed: not watched
    if ts.state not in _LIVE_STATES:
        return False
    watch.plans[commit_key] = plan
    return True
