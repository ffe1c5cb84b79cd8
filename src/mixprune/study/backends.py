"""Where independent training tasks run: in this process, in a pool of local worker processes, or as
Ray tasks on a Ray cluster (ray_backend.py).

    run_tasks(task_fn, tasks, shared=data, workers=2, threads=1, observer=obs, on_result=keep)
    run_tasks(..., backend="ray", address="ray://head:10001")   # an existing Ray cluster

`task_fn(shared, task, observer, emit)` must be a module-level function (workers import it by name). It passes
each result to `emit` as soon as it has it (a finished model) and returns the list of all of them; each
reaches `on_result` in this process's main thread, the emitted ones as they arrive, so that a run interrupted
later keeps them. An item may arrive twice (emitted, then returned: the returned list is what is guaranteed to
arrive), so `on_result` takes a repeat as a no-op. `shared` (the dataset tensors) is sent to each worker once,
through shared memory, when the worker starts. Workers are spawned, never forked: a fork of a process whose
OpenMP pool is running can hang. Each worker sets its own thread count, so a task's numbers depend on
`threads`, not on `workers`. Observer calls made in a worker travel back over a queue and reach `observer` in
this process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch
import torch.multiprocessing as tmp

from ..core.errors import WorkerDied

_SHARED: Any = None
_EVENTS: Any = None


class _QueueObserver:
    """Stands in for the parent's observer inside a worker: forwards every call over a queue."""

    def __init__(self, events: Any):
        self.events = events

    def __getattr__(self, method: str) -> Callable[..., None]:
        return lambda *args: self.events.put((method, args))


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when its parent dies (even by kill -9), so no orphan
    keeps training (and holding cores) after the study that wanted it is gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all there is
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int, shared: Any, events: Any) -> None:
    global _SHARED, _EVENTS
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the pool
    torch.set_num_threads(threads)
    _SHARED, _EVENTS = shared, events


EMIT = "__emit__"  # the queue's tag for a task's result sent early


def _call(task_fn: Callable, task: Any) -> Any:
    return task_fn(_SHARED, task, _QueueObserver(_EVENTS), lambda item: _EVENTS.put((EMIT, (item,))))


def _pump(events: Any, observer: Any, arrived: queue.Queue, stop: threading.Event) -> None:
    """Hand workers' observer calls to the observer and their early results to `arrived`, until stopped."""
    while not (stop.is_set() and events.empty()):
        try:
            method, args = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if method == EMIT:
            arrived.put(args[0])
        else:
            getattr(observer, method)(*args)


def _drain(arrived: queue.Queue, on_result: Callable[[Any], None]) -> None:
    while True:
        try:
            item = arrived.get_nowait()
        except queue.Empty:
            return
        on_result(item)


def run_tasks(task_fn: Callable, tasks: list[Any], shared: Any, workers: int, threads: int, observer: Any,
              on_result: Callable[[Any], None], backend: str = "local", address: str | None = None,
              started: Callable[[], None] | None = None, device: str = "cpu") -> None:
    """Run task_fn(shared, task, observer, emit) for every task; every result reaches on_result (see the module's
    docstring). `started()` runs in this process once the tasks run in worker processes, before the first
    result is awaited. With Ray, tasks ask for a GPU each when `device` is "cuda"."""
    if backend == "ray":
        from .ray_backend import run_ray

        run_ray(task_fn, tasks, shared, threads, observer, on_result, address, device)
        return
    if workers <= 1 or len(tasks) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for task in tasks:
                for item in task_fn(shared, task, observer, on_result):
                    on_result(item)
        finally:
            torch.set_num_threads(before)  # the caller's setting, not ours, outside this loop
        return
    ctx = tmp.get_context("spawn")
    events = ctx.Queue()
    arrived: queue.Queue = queue.Queue()
    stop = threading.Event()
    pump = threading.Thread(target=_pump, args=(events, observer, arrived, stop), daemon=True)
    pump.start()
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, shared, events))
    try:
        pending = {pool.submit(_call, task_fn, t) for t in tasks}
        if started is not None:
            started()
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(arrived, on_result)
            for fut in done:
                try:
                    items = fut.result()
                except BrokenProcessPool:
                    raise WorkerDied("a worker process died (killed by the out-of-memory killer or a signal); every "
                                     "model finished so far is saved; run again with fewer --workers, a smaller "
                                     "--batch-size or --train-subset") from None
                for item in items:
                    on_result(item)
        pool.shutdown(wait=True)
    except BaseException:
        # A failed task or Ctrl-C: stop the other workers now rather than letting them finish, and keep every
        # result that arrived before.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        stop.set()
        pump.join()
        _drain(arrived, on_result)
        raise
    finally:
        stop.set()
        pump.join()


@contextlib.contextmanager
def backend_session(cfg: Any) -> Iterator[None]:
    """The backend of a run (a StudyConfig's) for the block: nothing to hold for the local one; for --backend ray a
    connection to the cluster (or a local Ray), made here, before the run writes anything, so that a cluster that
    cannot be reached, refuses this process or lacks the GPUs the run asks for is one line and no output. A
    connection this process already holds (a sweep's, for each cell) is used and left open."""
    if cfg.backend != "ray":
        yield
        return
    from .ray_backend import ray_session

    with ray_session(cfg.ray_address, cfg.device):
        yield
