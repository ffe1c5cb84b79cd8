"""The Ray backend against a local Ray instance that this module starts and stops: same numbers as local."""

from __future__ import annotations

import os

import pytest

from mixprune import StudyConfig, load_fashion_mnist, reproduce
from mixprune.config import with_overrides
from mixprune.engine import TrainingDiverged

from .helpers import TINY, write_idx_set

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


def test_ray_tasks_give_the_local_numbers(local_ray, ds, tmp_path):
    local = reproduce(with_overrides(StudyConfig(), {**BASE, "workers": 1, "out": str(tmp_path / "l")}), dataset=ds)
    events = Events()
    on_ray = reproduce(with_overrides(StudyConfig(), {**BASE, "backend": "ray", "out": str(tmp_path / "r")}),
                       dataset=ds, observer=events)
    assert on_ray["execution"]["backend"] == "ray" and on_ray["execution"]["workers"] == 4  # 2 seeds x 2 chains
    for name, entry in local["models"].items():
        for seed, metrics in entry["seeds"].items():
            assert on_ray["models"][name]["seeds"][seed]["test_loss"] == metrics["test_loss"], (name, seed)
    assert sorted(events.done) == sorted((n, s) for n in local["models"] for s in (0, 1))  # observer calls arrive


def test_a_failing_ray_task_raises_its_own_error(local_ray, ds, tmp_path):
    cfg = with_overrides(StudyConfig(), {**BASE, "train.lr": 1e6, "backend": "ray", "out": str(tmp_path / "x")})
    with pytest.raises(TrainingDiverged, match="training loss became"):
        reproduce(cfg, dataset=ds)


def test_missing_ray_is_a_clear_config_error(monkeypatch):
    import sys

    from mixprune.backends import _start_ray
    from mixprune.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match="Ray is not installed; pip install 'mixprune\\[ray\\]'"):
        _start_ray(None)
