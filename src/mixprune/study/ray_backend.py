"""Training tasks as Ray tasks, on a local Ray instance or an existing cluster (study.backends.run_tasks with
backend="ray" comes here).

`shared` goes to the object store once (no node needs the dataset files), every task asks Ray for `threads`
CPUs (and a GPU when the run's device is CUDA) and sets that many torch threads, so its numbers equal a local
worker's with the same `threads`. A task's observer calls travel through a Ray queue on the head node and reach
the driver's observer while the task runs (best effort). A task whose worker or node dies is retried
(RAY_RETRIES) on any node. With an address, mixprune's own code travels to the cluster (runtime_env
py_modules); the cluster's Python needs torch and the other dependencies. Connection failures
(authentication, address, versions) are one-line ConfigErrors that say what to set.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..core.errors import ConfigError, WorkerDied

RAY_RETRIES = 2  # a task whose worker process or node dies runs again elsewhere (Ray's max_retries)
RAY_POLL_SECONDS = 0.2  # how often the driver forwards a Ray task's progress events
RAY_PROBE_SECONDS = 3.0  # how long to wait for the head node's port to answer before ray.init


EMIT = "__emit__"  # the queue's tag for a task's result sent early


def _ray_entry(task_fn: Callable, shared: Any, task: Any, threads: int, events: Any) -> list[Any]:
    """A Ray task: set its threads, run task_fn with an observer (and an emit) that send every call (and every
    result) to the driver's queue as it happens; returns the task's results, each naming the node that ran it."""
    import ray

    torch.set_num_threads(threads)
    node = ray.get_runtime_context().get_node_id()
    send = _RayQueueObserver(events)
    items = task_fn(shared, task, send, lambda item: getattr(send, EMIT)(_on_node(item, node)))
    return [_on_node(item, node) for item in items]


def _ray_error(address: str | None, exc: BaseException, log: str = "") -> str:
    """What went wrong connecting to a Ray cluster, and what to do, in one line. `log` is what Ray's core wrote to
    stderr meanwhile: its exception says only "Failed to connect", the cause (e.g. an invalid token) is there."""
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    where = f"--address {address}" if address else "--backend ray"
    said = f"{type(exc).__name__} {text} {exc.__cause__!r} {log}".lower()  # Ray chains the cause, at times
    if "unauthenticated" in said or "invalidauthtoken" in said or "authentication" in said:
        return (f"{where}: the Ray cluster refused this process's authentication ({text}); clusters of Ray >= 2.52 "
                "use token authentication: export RAY_AUTH_MODE=token and provide the cluster's token in "
                "~/.ray/auth_token, in the file named by RAY_AUTH_TOKEN_PATH, or in RAY_AUTH_TOKEN (on the head "
                "node `ray get-auth-token` prints it)")
    if "version mismatch" in said:
        return (f"{where}: this Python and the Ray cluster differ in version ({text}); run mixprune with the "
                "cluster's Ray and Python versions (pip install 'ray==<the cluster's version>'), or run it on a node)")
    return (f"{where}: cannot connect to a Ray cluster ({text}); check the address (HOST:PORT of the head node's GCS, "
            "port 6379 unless `ray start --port` said otherwise, or ray://HOST:10001), that the head node is running "
            "(`ray status` there) and reachable from here, or omit --address for a local Ray")


def _reachable(address: str) -> str | None:
    """None where something listens at the address's HOST:PORT, else why not (refused, no such host, timeout)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto" and other forms: Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_SECONDS).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """Redirect this process's file descriptor 2 (where Ray's C++ core logs) to `path` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _start_ray(address: str | None) -> bool:
    """Connect to the cluster at `address` (or start a local Ray instance); True if this call started it. Ray's
    core logs during the connection are kept out of the terminal and read for the cause of a failure."""
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

        why = _reachable(address)
        if why is not None:  # ray.init would retry for ~80 s and then exit the process
            raise ConfigError(_ray_error(address, ConnectionError(f"nothing answers at {address}: {why}")))
        kwargs["runtime_env"] = {"py_modules": [mixprune]}  # the driver's mixprune, not whatever is installed there
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "ray-core.log")
        try:
            with _stderr_to(log):
                ray.init(address=address or None, **kwargs)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - Ray raises many types, and SystemExit on timeouts
            if ray.is_initialized():
                ray.shutdown()
            with open(log, encoding="utf-8", errors="replace") as f:
                raise ConfigError(_ray_error(address, exc, f.read(1 << 20))) from None
    return True


@contextlib.contextmanager
def ray_session(address: str | None, device: str) -> Iterator[None]:
    """Connected to the cluster at `address` (or a local Ray) for the block, and checked to have a GPU where the run's
    `device` asks for one (cuda, or auto on a machine with one); disconnected afterwards if this call connected."""
    started = _start_ray(address)
    import ray

    try:
        ray_gpus("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
        yield
    finally:
        if started:
            ray.shutdown()


def ray_gpus(device: str) -> float:
    """GPUs each Ray task asks for: 1 when the run's device is CUDA (ConfigError where the cluster has none), else 0."""
    import ray

    if device != "cuda":
        return 0.0
    if ray.cluster_resources().get("GPU", 0) < 1:
        raise ConfigError("--device cuda with --backend ray: the Ray cluster has no GPUs (`ray status` lists its "
                          "resources); use --device cpu, or start the nodes with GPUs (ray start --num-gpus N)")
    return 1.0


def _task_failure(exc: BaseException) -> BaseException:
    """The error to raise for a failed Ray task: the task's own error (e.g. TrainingDiverged); a missing module
    or a runtime environment the node could not set up as a one-line ConfigError; a worker or node that died
    after every retry as WorkerDied."""
    import ray

    cause = getattr(exc, "cause", None)
    if isinstance(cause, ImportError) or isinstance(exc, ray.exceptions.RuntimeEnvSetupError):
        what = cause if isinstance(cause, ImportError) else exc
        detail = " ".join(str(what).split())[:200]
        return ConfigError(f"--backend ray: a node of the cluster cannot run mixprune's tasks ({detail}); "
                           "install mixprune's dependencies on every node (pip install 'mixprune[ray]' in the "
                           "Python that `ray start` runs)")
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.ObjectLostError)):
        return WorkerDied(f"a Ray task's worker or node died {RAY_RETRIES + 1} times ({type(exc).__name__}); every "
                          "model finished so far is saved; run the same command again to train the rest")
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        return cause
    return exc


def _forward(events: Any, observer: Any, on_result: Callable[[Any], None]) -> Any:
    """Hand the progress events that Ray tasks queued so far to the observer, and their early results to on_result,
    in order; the queue, or None once it is gone (best effort: a lost queue stops the display's updates and the
    early results, never the run: every result also comes back with its task)."""
    import ray
    from ray.util.queue import Empty

    while events is not None:
        try:
            method, args = events.get_nowait()
        except Empty:
            break
        except ray.exceptions.RayError:
            return None
        if method == EMIT:
            on_result(*args)
        else:
            getattr(observer, method)(*args)
    return events


class _RayQueueObserver:
    """A Ray task's observer: each call goes to the driver's queue at once; a queue that is gone drops the call."""

    def __init__(self, events: Any):
        self.events = events

    def __getattr__(self, method: str) -> Callable[..., None]:
        import ray

        def send(*args: Any) -> None:
            try:
                self.events.put((method, args))
            except ray.exceptions.RayError:
                pass
        return send


def _event_queue() -> Any:
    """A Ray queue for progress events, on the head node (the cluster ends with it; any other node may die)."""
    from ray.util.queue import Queue

    return Queue(actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}})


def run_ray(task_fn: Callable, tasks: list[Any], shared: Any, threads: int, observer: Any,
            on_result: Callable[[Any], None], address: str | None, device: str = "cpu") -> None:
    """study.backends.run_tasks on Ray: every task a Ray task, every result to on_result in this thread."""
    import ray

    started = _start_ray(address)
    try:
        events = _event_queue()
        remote = ray.remote(_ray_entry).options(num_cpus=threads, num_gpus=ray_gpus(device), max_retries=RAY_RETRIES)
        shared_ref = ray.put(shared)
        pending = [remote.remote(task_fn, shared_ref, t, threads, events) for t in tasks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=RAY_POLL_SECONDS)
                events = _forward(events, observer, on_result)
                for ref in done:
                    try:
                        items = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise _task_failure(exc) from None
                    for item in items:
                        on_result(item)
        finally:
            for ref in pending:  # an error or Ctrl-C: stop the rest
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()


def _on_node(item: Any, node: str) -> Any:
    """Name the Ray node in a result's worker record, where it has one."""
    if isinstance(item, dict) and isinstance(item.get("worker"), dict):
        item["worker"] = {**item["worker"], "node": node}
    return item
