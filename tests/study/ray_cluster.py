"""A real two-node Ray cluster, started with the `ray` CLI, for tests/study/test_ray_cluster.py. Run as root inside
namespaces of its own, so that Ray binds only 127.0.0.1 and every process it starts dies with this script:

    unshare -n -p -f --mount-proc python tests/study/ray_cluster.py WORKDIR DATA_DIR

The head node and a second node take one CPU each, with token authentication (RAY_AUTH_MODE=token, the
token in WORKDIR/token). The second node runs in a mount namespace of its own where DATA_DIR is hidden
under an empty directory, so its tasks can only get the images through Ray's object store. Then, each
command's exit code and stderr in WORKDIR/outcome.json, its files in WORKDIR/<name>/:
  no-token    reproduce --address without the token: must fail in one line
  unreachable reproduce --address of a port where nothing listens: must fail in one line, at once
  reproduce   a small reproduce through --address, and the same with the local backend (local)
  sweep       a small alpha sweep through --address, and the same locally (sweep-local)
  node-dies   the reproduce again, its fine-tuning made to wait for a file (WORKDIR/model/go) while the second
              node's raylet is killed (SIGKILL) with a task of it waiting there; then the file appears and the run
              completes
Every run trains a LeNet-5 whose fine-tuning waits for that file (tests/helpers.py); it is there but for
node-dies.
The cluster is stopped (`ray stop --force`) in every case; the pid namespace ends whatever is left.
Not a test by itself: tests/study/test_ray_cluster.py runs it and checks what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.helpers
from tests.helpers import held_model  # noqa: E402

PORT, NODE2_MANAGER_PORT = 6390, 6391
ADDRESS = f"127.0.0.1:{PORT}"
BIN = Path(sys.executable).parent
SMALL = ["--seeds", "0", "--epochs", "1", "--finetune-epochs", "1", "--threads", "1", "--train-subset", "600",
         "--test-subset", "200", "--no-latency", "--no-onnx"]  # one seed: two chains, one task on each node


def run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> dict:
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": res.returncode, "stderr": res.stderr[-4000:], "seconds": time.perf_counter() - start}


def alive_nodes(env: dict[str, str]) -> int:
    code = (f"import ray; ray.init(address={ADDRESS!r}, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    res = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return int(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 and res.stdout.strip() else 0


def processes() -> dict[int, tuple[str, str]]:
    """pid -> (command line, mount namespace) of every process in this pid namespace."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out[int(pid)] = (cmd, os.readlink(f"/proc/{pid}/ns/mnt"))
        except OSError:
            continue
    return out


def kill_node2_while_it_trains(timeout: float = 180) -> int | None:
    """Wait until a mixprune task runs on the second node (a process titled ray::_ray_entry in its mount
    namespace; the held network keeps it there until the test's file appears), then SIGKILL that node's raylet; its
    pid, or None if no task ever ran there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = processes()
        raylet = [(pid, mnt) for pid, (cmd, mnt) in procs.items()
                  if "raylet" in cmd.split(" ")[0] and f"--node_manager_port={NODE2_MANAGER_PORT}" in cmd]
        if raylet and any(cmd.startswith("ray::_ray_entry") and mnt == raylet[0][1] for cmd, mnt in procs.values()):
            os.kill(raylet[0][0], 9)
            return raylet[0][0]
        time.sleep(0.1)
    return None


def ray_temp(work: Path) -> Path:
    """Ray's temp directory for a cluster of WORK: short, since Ray's socket paths under it must stay within the
    107 bytes of a Unix socket name (pytest-xdist's deeper tmp paths made `ray start` fail)."""
    return Path("/tmp") / f"mixprune-ray-{hashlib.sha256(str(work).encode()).hexdigest()[:8]}"


def start_cluster(work: Path, data: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Bring loopback up and start the head and the second node (data hidden there); returns the environment
    with the cluster's token and one without any Ray setting (a driver that lacks the token)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    (work / "token").write_text(secrets.token_hex(32))
    (work / "empty").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # health checks every 0.5 s, 4 misses: a dead node is noticed in ~2 s, not the default ~30 s
    cluster = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(work / "token"),
               "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
    ray = str(BIN / "ray")
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--temp-dir", str(ray_temp(work)),
              "--disable-usage-stats"]
    started = subprocess.run([ray, "start", "--head", "--port", str(PORT), "--include-dashboard", "false", *common],
                             env=cluster, capture_output=True, text=True, timeout=180)
    if started.returncode:
        raise RuntimeError(f"ray start --head failed:\n{started.stdout}\n{started.stderr}")
    hidden = f"mount --bind {work / 'empty'} {data} && exec {ray} start --address {ADDRESS} " \
             f"--node-manager-port {NODE2_MANAGER_PORT} {' '.join(common)}"
    subprocess.run(["unshare", "-m", "sh", "-c", hidden], env=cluster, check=True, capture_output=True, timeout=180)
    deadline = time.monotonic() + 120
    while alive_nodes(cluster) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    return cluster, base


def stop_cluster(cluster: dict[str, str], work: Path) -> None:
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=cluster, capture_output=True, timeout=120)
    shutil.rmtree(ray_temp(work), ignore_errors=True)


def main() -> None:
    work, data = Path(sys.argv[1]), Path(sys.argv[2])
    mix = [str(BIN / "python"), "-m", "mixprune"]
    out: dict = {}
    cluster: dict[str, str] = {}
    try:
        cluster, base = start_cluster(work, data)
        out["nodes_at_start"] = alive_nodes(cluster)
        arch, go = held_model(work / "model")
        go.touch()
        small = [*SMALL, "--arch", arch]
        ray_args = ["--backend", "ray", "--address", ADDRESS, "--data-dir", str(data)]
        out["no-token"] = run([*mix, "reproduce", *small, *ray_args, "--out", str(work / "no-token")], base)
        out["unreachable"] = run([*mix, "reproduce", *small, "--backend", "ray", "--address", "127.0.0.1:6399",
                                  "--data-dir", str(data), "--out", str(work / "unreachable")], cluster)
        out["reproduce"] = run([*mix, "reproduce", *small, *ray_args, "--out", str(work / "reproduce")], cluster)
        out["local"] = run([*mix, "reproduce", *small, "--data-dir", str(data), "--workers", "1",
                            "--out", str(work / "local")], base)
        grid = ["--grid", "mixup.alpha=0.2,1.0"]
        out["sweep"] = run([*mix, "sweep", *grid, *small, *ray_args, "--out", str(work / "sweep")], cluster)
        out["sweep-local"] = run([*mix, "sweep", *grid, *small, "--data-dir", str(data), "--workers", "1",
                                  "--out", str(work / "sweep-local")], base)
        go.unlink()
        proc = subprocess.Popen([*mix, "reproduce", *small, *ray_args, "--out", str(work / "node-dies")], env=cluster,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out["killed_raylet"] = kill_node2_while_it_trains()
        go.touch()  # the task that the dead node held runs again on the head node, and goes through
        _, err = proc.communicate(timeout=600)
        out["node-dies"] = {"rc": proc.returncode, "stderr": err[-4000:]}
    finally:
        if cluster:
            stop_cluster(cluster, work)
        (work / "outcome.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
