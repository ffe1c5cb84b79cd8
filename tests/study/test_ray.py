"""The Ray backend against a local Ray instance that this module starts and stops: same numbers as local."""

from __future__ import annotations

import os

import pytest

from mixprune import StudyConfig, load_fashion_mnist, reproduce
from mixprune.core.config import with_overrides
from mixprune.train.engine import TrainingDiverged

from ..helpers import TINY, write_idx_set

ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")  # CI must have Ray

BASE = {"seeds": [0, 1], "train.epochs": 2, "prune.finetune_epochs": 1, "threads": 1, "bench.latency": False,
        "bench.onnx": False}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return load_fashion_mnist(write_idx_set(tmp_path_factory.mktemp("data") / "d"), spec=TINY)


class Events:
    def __init__(self):
        self.done = []

    def phase_start(self, *a): ...

    def epoch_end(self, *a): ...

    def model_done(self, name, seed, metrics):
        self.done.append((name, seed))


@pytest.mark.slow
def test_ray_tasks_give_the_local_numbers(local_ray, ds, tmp_path):
    local = reproduce(with_overrides(StudyConfig(), {**BASE, "workers": 1, "out": str(tmp_path / "l")}), dataset=ds)
    events = Events()
    on_ray = reproduce(with_overrides(StudyConfig(), {**BASE, "backend": "ray", "out": str(tmp_path / "r")}),
                       dataset=ds, observer=events)
    assert on_ray.execution["backend"] == "ray" and on_ray.execution["workers"] == 4  # 2 seeds x 2 chains
    for name in local.names:
        for seed, metrics in local.seeds(name).items():
            assert on_ray.metrics(name, seed)["test_loss"] == metrics["test_loss"], (name, seed)
    assert sorted(events.done) == sorted((n, s) for n in local.names for s in (0, 1))  # observer calls arrive


def test_a_failing_ray_task_raises_its_own_error(local_ray, ds, tmp_path):
    cfg = with_overrides(StudyConfig(), {**BASE, "train.lr": 1e6, "backend": "ray", "out": str(tmp_path / "x")})
    with pytest.raises(TrainingDiverged, match="training loss became"):
        reproduce(cfg, dataset=ds)


def test_missing_ray_is_a_clear_config_error(monkeypatch):
    import sys

    from mixprune.core.errors import ConfigError
    from mixprune.study.ray_backend import _start_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match="Ray is not installed; pip install 'mixprune\\[ray\\]'"):
        _start_ray(None)


def test_connection_errors_say_what_is_wrong():
    """Ray's own exception says only 'Failed to connect'; the cause is in the chained error or in the core's log."""
    from mixprune.study.ray_backend import _ray_error

    failed = ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")
    auth_log = "gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: InvalidAuthToken"
    auth = _ray_error("10.0.0.5:6379", failed, auth_log)
    assert "RAY_AUTH_MODE=token" in auth and "RAY_AUTH_TOKEN_PATH" in auth and "\n" not in auth
    mismatch = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.9.0\n    Python: 3.10.12\n"
                            "This process on node 10.0.0.9 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7")
    version = _ray_error("10.0.0.5:6379", mismatch)
    assert "differ in version" in version and "Ray: 2.9.0" in version and "\n" not in version
    other = _ray_error("10.0.0.5:6379", failed, "rpc_client.h:153: Failed to connect to GCS within 5 seconds")
    assert other.startswith("--address 10.0.0.5:6379: cannot connect to a Ray cluster") and "port 6379" in other


def test_an_address_where_nothing_listens_is_refused_before_ray_tries():
    """In a fresh process (this module's Ray instance is running here): a ConfigError at once."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import time, ray; from mixprune.study.ray_backend import _start_ray; t = time.perf_counter()\n"
            f"try: _start_ray('127.0.0.1:{port}')\n"
            "except Exception as e: print(type(e).__name__, time.perf_counter() - t, ray.is_initialized(), e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    kind, seconds, initialized, message = res.stdout.split(" ", 3)
    assert kind == "ConfigError" and initialized == "False", res.stdout + res.stderr
    assert message.startswith(f"--address 127.0.0.1:{port}: cannot connect") and "nothing answers" in message
    assert float(seconds) < 10  # ray.init alone retries for ~80 s, then exits the process


def test_task_failures_become_one_line_errors():
    from mixprune.core.errors import ConfigError, WorkerDied
    from mixprune.study.ray_backend import _task_failure

    missing = ray.exceptions.RayTaskError("_ray_entry", "Traceback ...", ModuleNotFoundError("No module named 'torch'"))
    err = _task_failure(missing)
    assert isinstance(err, ConfigError) and "No module named 'torch'" in str(err) and "every node" in str(err)
    diverged = ray.exceptions.RayTaskError("_ray_entry", "Traceback ...", TrainingDiverged("loss became nan"))
    assert isinstance(_task_failure(diverged), TrainingDiverged)
    died = _task_failure(ray.exceptions.WorkerCrashedError())
    assert isinstance(died, WorkerDied) and "run the same command again" in str(died)


def test_tasks_ask_for_gpus_only_where_the_run_uses_them(local_ray):
    from mixprune.core.errors import ConfigError
    from mixprune.study.ray_backend import ray_gpus

    assert ray_gpus("cpu") == 0.0
    with pytest.raises(ConfigError, match="the Ray cluster has no GPUs"):  # this test's Ray instance has none
        ray_gpus("cuda")


def test_progress_reaches_the_driver_while_a_ray_task_runs(local_ray, tmp_path):
    """The task waits until the driver has seen its first event: events delivered only when a task returns would
    leave it waiting until its deadline (and the result False)."""
    import time

    from mixprune.study.backends import run_tasks

    flag = tmp_path / "seen"

    class Seen:
        def epoch_end(self, *args):
            flag.write_text(repr(args))

    def task(shared, item, obs, emit):
        obs.epoch_end("baseline", item, 1)
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return [flag.exists()]

    arrived = []
    run_tasks(task, [0], None, 1, 1, Seen(), arrived.append, backend="ray")
    assert arrived == [True]
    assert flag.read_text() == "('baseline', 0, 1)"


@pytest.mark.slow
def test_distillation_from_a_teacher_file_on_ray_gives_the_local_numbers(local_ray, ds, tmp_path):
    """The teacher file is read by the driver and travels with the task: Ray workers need not see it."""
    teacher_run = reproduce(with_overrides(StudyConfig(), {**BASE, "seeds": [0], "workers": 1,
                                                           "out": str(tmp_path / "t")}), dataset=ds)
    teacher = tmp_path / "teacher.safetensors"
    (tmp_path / "t" / "models" / "baseline-seed0.safetensors").rename(teacher)
    kd = {**BASE, "distill.enabled": True, "distill.teacher": str(teacher)}
    local = reproduce(with_overrides(StudyConfig(), {**kd, "workers": 1, "out": str(tmp_path / "l")}), dataset=ds)
    on_ray = reproduce(with_overrides(StudyConfig(), {**kd, "backend": "ray", "out": str(tmp_path / "r")}), dataset=ds)
    assert teacher_run.complete and on_ray.names[4:] == ("pruned_kd", "mixup_pruned_kd")
    for name in local.names:
        for seed, metrics in local.seeds(name).items():
            assert on_ray.metrics(name, seed)["test_loss"] == metrics["test_loss"], (name, seed)


@pytest.mark.slow
def test_search_on_ray_chooses_and_tests_as_the_local_search(local_ray, ds, tmp_path):
    from mixprune.explore.search import SearchSpec, run_search

    spec = SearchSpec(min_accuracy=1.0, sparsities=(0.5,), methods=("unstructured",), val_fraction=0.25,
                      distill=False)  # distillation on Ray: test_distillation_from_a_teacher_file_on_ray...
    base = {**BASE, "seeds": [0, 1, 2], "bench.onnx": True}
    local = run_search(with_overrides(StudyConfig(), {**base, "workers": 1}), spec, tmp_path / "l", dataset=ds)
    on_ray = run_search(with_overrides(StudyConfig(), {**base, "backend": "ray"}), spec, tmp_path / "r", dataset=ds)
    assert on_ray["chosen"]["val_accuracy"] == local["chosen"]["val_accuracy"]
    assert on_ray["final"]["test_accuracy"] == local["final"]["test_accuracy"]
