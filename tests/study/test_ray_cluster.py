"""mixprune on a real two-node Ray cluster started with the `ray` CLI (tests/study/ray_cluster.py), with token
authentication, in network, pid and mount namespaces of its own (only loopback; every Ray process dies with
it), the second node without the dataset files: connection errors, equal numbers, a node that dies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import assert_one_line_error
from .ray_cluster import ray_temp

DATA = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent
CI = bool(os.environ.get("CI"))

pytestmark = [pytest.mark.realdata, pytest.mark.slow, pytest.mark.skipif(
    not CI and (os.geteuid() != 0 or shutil.which("unshare") is None or not DATA.is_dir()
                or shutil.which("ray", path=str(Path(sys.executable).parent)) is None),
    reason="needs root (namespaces), unshare, the ray CLI and the FashionMNIST files")]  # CI must run it


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Run the whole cluster script once; its outcome.json and the run directories it wrote."""
    work = tmp_path_factory.mktemp("cluster")
    subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", sys.executable, str(HERE / "ray_cluster.py"),
                    str(work), str(DATA)], timeout=1500, check=False)
    return work, json.loads((work / "outcome.json").read_text())


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def metrics(run: Path) -> dict:
    return {(name, seed): (m["test_accuracy"], m["test_loss"], m["size_bytes_sparse"])
            for name, entry in results(run)["models"].items() for seed, m in entry["seeds"].items()}


def test_the_cluster_has_two_nodes_and_is_gone_afterwards(cluster):
    work, out = cluster
    assert out["nodes_at_start"] == 2
    # nothing of the cluster survives the pid namespace: no raylet of this work directory is running
    running = subprocess.run(["pgrep", "-f", str(ray_temp(work))], capture_output=True, text=True).stdout.split()
    assert running == []


def test_without_the_token_the_error_says_what_to_set(cluster):
    _, out = cluster
    res = subprocess.CompletedProcess([], out["no-token"]["rc"], "", out["no-token"]["stderr"])
    assert_one_line_error(res, "token authentication", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH")


def test_an_address_where_nothing_listens_fails_at_once(cluster):
    _, out = cluster
    res = subprocess.CompletedProcess([], out["unreachable"]["rc"], "", out["unreachable"]["stderr"])
    assert_one_line_error(res, "--address 127.0.0.1:6399", "cannot connect", "nothing answers")
    assert out["unreachable"]["seconds"] < 30  # ray.init alone retries for ~80 s, then exits the process


def test_reproduce_on_the_cluster_gives_the_local_numbers_on_both_nodes(cluster):
    work, out = cluster
    assert out["reproduce"]["rc"] == 0, out["reproduce"]["stderr"]
    assert out["local"]["rc"] == 0, out["local"]["stderr"]
    assert metrics(work / "reproduce") == metrics(work / "local")
    execution = results(work / "reproduce")["execution"]
    assert execution["backend"] == "ray" and len(execution["ray_nodes"]) == 2  # one of them cannot see the data


def test_a_sweep_on_the_cluster_gives_the_local_table(cluster):
    work, out = cluster
    assert out["sweep"]["rc"] == 0, out["sweep"]["stderr"]
    assert out["sweep-local"]["rc"] == 0, out["sweep-local"]["stderr"]

    def table(sweep: Path) -> dict:
        cells = json.loads((sweep / "sweep.json").read_text())["cells"]
        return {json.dumps(c["values"], sort_keys=True): c["accuracy"] for c in cells}
    on_ray, local = table(work / "sweep"), table(work / "sweep-local")
    assert len(on_ray) == 2 and on_ray == local


def test_tasks_of_a_node_that_dies_run_again_on_the_other(cluster):
    work, out = cluster
    assert out["killed_raylet"] is not None  # the second node's raylet was running, and was killed
    assert out["node-dies"]["rc"] == 0, out["node-dies"]["stderr"]
    assert metrics(work / "node-dies") == metrics(work / "local")  # the same run, uninterrupted, on one machine
