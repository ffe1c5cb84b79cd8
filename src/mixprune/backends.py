"""Where independent training tasks run: in this process, in a pool of local worker processes, or as
Ray tasks on a Ray cluster.

    for result in run_tasks(task_fn, tasks, shared=data, workers=2, threads=1, observer=obs):
        ...   # results arrive as tasks finish
    run_tasks(..., backend="ray", address="ray://head:10001")   # an existing Ray cluster

`task_fn(shared, task, observer)` must be a module-level function (workers import it by name). `shared`
(the dataset tensors) is sent to each worker once, through shared memory, when the worker starts.
Workers are spawned, never forked: a fork of a process whose OpenMP pool is running can hang. Each
worker sets its own thread count, so a task's numbers depend on `threads`, not on `workers`. Observer
calls made in a worker travel back over a queue and reach `observer` in this process.

With Ray, `shared` goes to the object store once, every task asks Ray for `threads` CPUs and sets
that many torch threads, so its numbers equal a local worker's with the same `threads`. A Ray task's
observer calls are recorded and replayed here when the task returns. With an address, mixprune's own
code travels to the cluster (runtime_env py_modules); the cluster's Python needs torch and the other
dependencies.
"""

from __future__ import annotations

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

from .errors import MixpruneError

class WorkerDied(MixpruneError):
    """A worker process ended without a result (killed from outside)."""


_SHARED: Any = None
_EVENTS: Any = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def _call(task_fn: Callable, task: Any) -> Any:
    return task_fn(_SHARED, task, _QueueObserver(_EVENTS))


def _pump(events: Any, observer: Any, stop: threading.Event) -> None:
    while not (stop.is_set() and events.empty()):
        try:
            method, args = events.get(timeout=0.1)
        except queue.Empty:
            continue
        getattr(observer, method)(*args)


def run_tasks(task_fn: Callable, tasks: list[Any], shared: Any, workers: int, threads: int,
              observer: Any, backend: str = "local", address: str | None = None,
              started: Callable[[], None] | None = None) -> Iterator[Any]:
    """Yield task_fn(shared, task, observer) for every task, as each finishes; `started()` runs in this process
    once the tasks run elsewhere (worker processes or Ray), before the first result is awaited."""
    if backend == "ray":
        yield from _run_ray(task_fn, tasks, shared, threads, observer, address)
        return
    if workers <= 1 or len(tasks) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for task in tasks:
                yield task_fn(shared, task, observer)
        finally:
            torch.set_num_threads(before)  # the caller's setting, not ours, outside this loop
        return
    ctx = tmp.get_context("spawn")
    events = ctx.Queue()
    stop = threading.Event()
    pump = threading.Thread(target=_pump, args=(events, observer, stop), daemon=True)
    pump.start()
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, shared, events))
    try:
        pending = {pool.submit(_call, task_fn, t) for t in tasks}
        if started is not None:
            started()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    raise WorkerDied("a worker process died (killed by the out-of-memory killer or a signal); every "
                                     "model finished so far is saved; run again with fewer --workers, a smaller "
                                     "--batch-size or --train-subset") from None
                yield result
        pool.shutdown(wait=True)
    except BaseException:
        # A failed task or Ctrl-C: stop the other workers now rather than letting them finish.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        stop.set()
        pump.join()


class _Recorder:
    """A Ray task's observer: keeps every call, to be replayed by the driver when the task returns."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, method: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((method, args))


def _ray_entry(task_fn: Callable, shared: Any, task: Any, threads: int) -> tuple[Any, list[tuple[str, tuple]]]:
    torch.set_num_threads(threads)
    recorder = _Recorder()
    return task_fn(shared, task, recorder), recorder.calls


def _start_ray(address: str | None) -> bool:
    """Connect to the cluster at `address` (or start a local Ray instance); True if this call started it."""
    from .errors import ConfigError

    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray: Ray is not installed; pip install 'mixprune[ray]' "
                          "(or use --backend local)") from None
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        import mixprune

        kwargs["runtime_env"] = {"py_modules": [mixprune]}  # the driver's mixprune, not whatever is installed there
    try:
        ray.init(address=address or None, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--address {address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); "
                          "check the address (e.g. ray://HOST:10001 or HOST:6379) or omit it for a local Ray") from None
    return True


def _run_ray(task_fn: Callable, tasks: list[Any], shared: Any, threads: int, observer: Any,
             address: str | None) -> Iterator[Any]:
    import ray

    started = _start_ray(address)
    remote = ray.remote(_ray_entry).options(num_cpus=threads, max_retries=0)
    shared_ref = ray.put(shared)
    pending = [remote.remote(task_fn, shared_ref, t, threads) for t in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result, calls = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # re-raise the task's own error (e.g. TrainingDiverged)
                raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
            for method, args in calls:
                getattr(observer, method)(*args)
            yield result
    finally:
        for ref in pending:  # an error or Ctrl-C: stop the rest
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
