"""Real jobs on the two-node Slurm of this machine (``bash scripts/slurm_two_node.sh up``): two
slurmd, each in its own network + UTS + mount namespace with its own host name and address.

What they prove, through the real path (sbatch -> srun on both nodes -> Ray head on node 0, a
worker on node 1 -> the job function):

- the local engine trains on 2 nodes as ``python launch.py cluster=slurm cluster.nodes=2`` runs
  it: both Ray nodes (with their resources) are registered before training starts, the metrics
  equal those of the same run on one node;
- node loss: node 1's raylet is killed mid-run -> the job is requeued and resumes from its last
  checkpoint; killed again with no requeue left -> the job fails within 30 s with an error naming
  the node (launcher and status.json), sacct says FAILED, no Ray process of the job is left;
- two jobs on the same two nodes at once each see only their own Ray cluster (ports, temp dirs
  and head address per job).

The cluster is reached through ``SLURM_CONF`` (the single-node cluster stays the default). Its
nodes have their own /tmp, as real nodes do: run dirs go to a shared directory outside /tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import REPO, compose_config, materialize
from support.slurmenv import ray_processes_gone, wait_for_state
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local.metrics import read_records
from miles_hydra.cluster import allocation, placement, preemption, ray_cluster, rundir, submit
from miles_hydra.launch.plan import render_plan
from miles_hydra.sweep.manifest import read_status

TWO_NODE_CONF = Path(os.environ.get("MH_SLURM_TWO_NODE_CONF", "/etc/slurm-2n/slurm.conf"))
NODES = ("mhnode0", "mhnode1")  # scripts/slurm_two_node.sh
SHARED_ROOT = Path(os.environ.get("MH_TWO_NODE_SHARED", "/var/tmp/miles_hydra_two_node"))
# one CPU per task and per Ray node: the 2-CPU nodes then hold two jobs at once
SLURM_2N = [
    "cluster=slurm",
    "cluster.nodes=2",
    "cluster.cpus_per_task=1",
    "cluster.mem_gb=3",
    "cluster.timeout_min=10",
    "cluster.ray_startup_timeout_s=240",  # generous: a loaded 2-core machine starts Ray slowly
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # RayView, for the job to unpickle


def _two_node_cluster() -> str:
    """Why the two-node tests cannot run here, or '' when both nodes are idle."""
    if not TWO_NODE_CONF.exists():
        return f"no two-node Slurm ({TWO_NODE_CONF}); run: bash scripts/slurm_two_node.sh up"
    env = {**os.environ, "SLURM_CONF": str(TWO_NODE_CONF)}
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%n %t"], capture_output=True, text=True, timeout=10, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the two-node slurmctld does not answer ({exc})"
    idle = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == ["idle"]}
    if out.returncode != 0 or not set(NODES) <= idle:
        return f"two-node Slurm not idle (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return ""


NO_TWO_NODES = _two_node_cluster()
two_node_only = pytest.mark.skipif(bool(NO_TWO_NODES), reason=NO_TWO_NODES)


def on_two_nodes(test):
    """Real jobs on the two-node cluster: skipped while it is down."""
    return pytest.mark.slurm(pytest.mark.slow(two_node_only(test)))


@pytest.fixture
def shared(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory every node sees (their /tmp is their own), removed after the test."""
    path = SHARED_ROOT / f"{request.node.name[:40]}-{os.getpid()}-{time.time_ns()}"
    path.mkdir(parents=True)
    yield path
    if not os.environ.get("MH_TWO_NODE_KEEP"):  # set it to look at the run dirs afterwards
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def slurm2n_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's Slurm commands (submitit, sacct) and its children talk to the 2-node one."""
    monkeypatch.setenv("SLURM_CONF", str(TWO_NODE_CONF))
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _launch(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    argv = [sys.executable, "launch.py", *args, f"output_root={root}"]
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _job_dir(root: Path, proc: subprocess.Popen, timeout_s: float) -> Path:
    """The run dir (``<root>/default/<time>/<job id>``) of the job ``proc`` submitted."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list(root.glob("default/*/[0-9]*/logs/job.log"))
        if found:
            return found[0].parent.parent
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError("the job never started")


def _ready_line(job_log: str) -> re.Match:
    ready = re.search(r"all 2 Ray nodes ready in ([0-9.]+) s", job_log)
    assert ready, job_log[-3000:]
    return ready


def _rollout_records(run_dir: Path) -> list[dict]:
    """The metrics of each rollout, without wall-clock timings (perf/*)."""
    records = [r for r in read_records(run_dir / "metrics.jsonl") if "step" in r]
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time"))} for r in records]


@on_two_nodes
@pytest.mark.timeout(420)
def test_local_engine_trains_on_two_nodes_with_both_registered_first(
    shared: Path, slurm2n_env: dict[str, str]
) -> None:
    args = [*SLURM_2N, *TINY_BARE_RUN, "rollout.num_rollout=3", "seed=7"]
    proc = _launch(args, shared / "two", slurm2n_env)
    try:
        stdout, stderr = proc.communicate(timeout=360)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    run_dir = _job_dir(shared / "two", proc, 5)
    job_id = run_dir.name
    assert f"miles_hydra: submitted job {job_id}" in stdout
    log = (run_dir / "logs" / "job.log").read_text()
    ready = _ready_line(log)
    node_lines = log[ready.end() :].splitlines()[1:3]
    for node, line in zip(NODES, node_lines):  # the head first, each with its resources
        assert node in line and "CPU 1, GPU 0" in line, log
    assert "node 0 (mhnode0, 10.213.0.10, head)" in node_lines[0], node_lines
    assert "node 1 (mhnode1, 10.213.0.11)" in node_lines[1], node_lines
    # both nodes were in before the job function ran: its first log line comes after
    assert log.index("all 2 Ray nodes ready") < log.index("checkpoint"), log
    # the placement of the plan: the trainer on node 0, the rollout engine on node 1
    node0, node1 = log[log.index("Ray actors by node") :].splitlines()[1:3]
    assert node0.startswith("  node 0 (mhnode0") and node1.startswith("  node 1 (mhnode1"), log
    assert "TrainerActor" in node0 and "RolloutEngine" not in node0, node0
    assert "RolloutEngine" in node1 and "TrainerActor" not in node1, node1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["step"] == 2 and result["preempted"] is False
    assert 0 < result["cluster/ray_startup_s"] < 240
    print(f"two nodes ready in {ready.group(1)} s; {log[log.index('Ray actors by node') :]}")
    assert wait_for_state(job_id, "COMPLETED", timeout_s=60)
    nodelist = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "NodeList", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert nodelist == "mhnode[0-1]", nodelist
    # the same run on one node (in this process's Ray): the same metrics for the same seed
    single = _launch(
        [*TINY_BARE_RUN, "rollout.num_rollout=3", "seed=7"], shared / "one", {**slurm2n_env}
    )
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-3000:]
    (one_dir,) = {p.parent for p in (shared / "one").glob("default/*/**/metrics.jsonl")}
    assert _rollout_records(run_dir) == _rollout_records(one_dir)


def _descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (from /proc; read, never by name)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _raylet_of(ray_start_pid: int) -> int:
    for pid in _descendants(ray_start_pid):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"/raylet"):
            return pid
    raise AssertionError(f"no raylet under ray start pid {ray_start_pid}")


def _wait_for_rollout(run_dir: Path, after: int, proc: subprocess.Popen, deadline: float) -> int:
    """Wait until metrics.jsonl has a rollout past step ``after``; the number of rollouts."""
    metrics = run_dir / "metrics.jsonl"
    while True:
        steps = (
            [r["step"] for r in read_records(metrics) if "step" in r] if metrics.exists() else []
        )
        if steps and steps[-1] > after:
            return len(steps)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no rollout past {after}: {steps}"
        time.sleep(0.2)


def _kill_node_1_raylet(run_dir: Path, attempt: int, deadline: float) -> float:
    """SIGKILL the raylet of node 1's Ray in job attempt ``attempt``; when it was killed."""
    pid_file = run_dir / "ray" / f"ray_pid_{run_dir.name}_{attempt}_1"
    while not pid_file.exists():
        assert time.monotonic() < deadline, f"node 1 of attempt {attempt} never joined"
        time.sleep(0.2)
    os.kill(_raylet_of(int(pid_file.read_text())), signal.SIGKILL)  # node 1 loses its Ray
    return time.monotonic()


@on_two_nodes
@pytest.mark.timeout(420)
def test_losing_node_1_requeues_and_resumes_then_fails_fast_naming_the_node(
    shared: Path, slurm2n_env: dict[str, str]
) -> None:
    """Node 1's raylet is killed twice: the first loss requeues the job (cluster.max_num_requeue=1)
    and the next attempt resumes from the last checkpoint; the second, with no requeue left,
    fails the job fast with the node named in the launcher's error and in status.json."""
    args = [*SLURM_2N, *TINY_BARE_RUN, "rollout.num_rollout=500", "checkpoint.save_interval=1"]
    proc = _launch([*args, "cluster.max_num_requeue=1"], shared, slurm2n_env)
    run_dir = None
    try:
        run_dir = _job_dir(shared, proc, timeout_s=120)
        job_id = run_dir.name
        deadline = time.monotonic() + 300
        first = _wait_for_rollout(run_dir, 0, proc, deadline)  # 2 rollouts: 1 checkpointed
        _kill_node_1_raylet(run_dir, 0, deadline)
        job_log = run_dir / "logs" / "job.log"
        while "resuming from" not in job_log.read_text():  # attempt 1, same run dir
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, job_log.read_text()[-3000:]
            time.sleep(0.2)
        resumed = int(re.search(r"resuming from \S+ at rollout (\d+)", job_log.read_text())[1])
        _wait_for_rollout(run_dir, resumed, proc, deadline)
        killed = _kill_node_1_raylet(run_dir, 1, deadline)
        stdout, stderr = proc.communicate(timeout=120)
        failed_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            if run_dir is not None:
                subprocess.run(["scancel", run_dir.name], timeout=30, check=False)
    assert proc.returncode != 0
    print(f"job failed {failed_after:.1f} s after node 1's raylet was killed (attempt 1)")
    assert failed_after < 30, failed_after
    assert "Ray on node 1 died (mhnode1" in stderr, stderr[-3000:]  # the launcher names it
    log = job_log.read_text()
    assert "Ray on node 1 died (mhnode1" in log and "requeueing the job (requeue 1" in log, log
    assert wait_for_state(job_id, "FAILED", timeout_s=60)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed", status
    assert status["error"].startswith("Ray on node 1 died (mhnode1, 10.213.0.11"), status
    # resumed from the last checkpoint of attempt 0: every rollout once, in order
    assert first - 1 <= resumed, (first, resumed)  # the last rollout may not be saved yet
    steps = [r["step"] for r in read_records(run_dir / "metrics.jsonl") if "step" in r]
    assert steps == list(range(len(steps))) and resumed < len(steps) < 500, steps
    assert ray_processes_gone(job_id, timeout_s=60) == []


class RayView:
    """Job function: what Ray cluster this job sees, from its driver and from a fresh
    ``ray.init()`` in a subprocess (as tools like ``ray job submit`` attach); it then waits
    until ``expect`` jobs wrote theirs to ``meet_dir``, so the jobs provably overlap."""

    def __init__(self, meet_dir: str, expect: int) -> None:
        self.meet_dir = meet_dir
        self.expect = expect

    def __call__(self, cfg: Any, run_dir: Path) -> dict:
        import ray

        probe = (
            "import json, ray; ray.init(logging_level='ERROR'); "
            "print(json.dumps(ray.get_runtime_context().gcs_address))"
        )
        fresh = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
        view = {
            "gcs": ray.get_runtime_context().gcs_address,
            "fresh_gcs": json.loads(fresh.stdout.strip().splitlines()[-1]),
            "nodes": sorted(
                [n["NodeID"], n["NodeManagerHostname"], n["NodeManagerAddress"]]
                for n in ray.nodes()
                if n["Alive"]
            ),
            # node 0's /tmp: the head's Ray temp dir
            "temp_dirs": sorted(str(p) for p in Path("/tmp").glob(f"mh_ray_{run_dir.name}_*")),
        }
        meet = Path(self.meet_dir)
        (meet / f"{run_dir.name}.json").write_text(json.dumps(view))
        deadline = time.monotonic() + 300
        while len(list(meet.glob("*.json"))) < self.expect:
            assert time.monotonic() < deadline, "the other job never ran at the same time"
            time.sleep(0.2)
        return {"view": view, "others_seen": len(list(meet.glob("*.json")))}


@on_two_nodes
@pytest.mark.timeout(600)
def test_two_jobs_on_the_same_two_nodes_never_share_a_ray_cluster(
    shared: Path, slurm2n_env: dict[str, str]
) -> None:
    cfg = materialize(compose_config(SLURM_2N, output_root=shared))
    meet = shared / "meet"
    meet.mkdir()
    task = allocation.AllocationTask(RayView(str(meet), expect=2))
    jobs = []
    try:
        for i in range(2):
            group = rundir.group_dir(shared, "iso", f"j{i}")
            jobs += submit.submit_jobs([cfg], group, task)
            # the second job starts its Ray once the first one's is up (2 cores: starting four
            # Ray nodes at once is slow); the first then waits in RayView for the second
            job_log = rundir.job_run_dir(group, jobs[-1].job_id) / "logs" / "job.log"
            deadline = time.monotonic() + 300
            while "Ray nodes ready" not in (job_log.read_text() if job_log.exists() else ""):
                assert not jobs[-1].done(), jobs[-1].stderr()
                assert time.monotonic() < deadline, "the job's Ray never came up"
                time.sleep(0.5)
        views = [submit.wait_for(job)["view"] for job in jobs]
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
    for view in views:
        assert sorted(host for _, host, _ in view["nodes"]) == list(NODES), view
        assert view["fresh_gcs"] == view["gcs"], view  # ray.init() in the job finds its own
        assert len(view["temp_dirs"]) == 1, view
    first, second = views
    assert first["gcs"] != second["gcs"]
    assert not {n[0] for n in first["nodes"]} & {n[0] for n in second["nodes"]}
    assert not set(first["temp_dirs"]) & set(second["temp_dirs"])


def test_the_plan_puts_trainer_and_engines_on_different_nodes(tmp_path: Path) -> None:
    """No cluster needed: the placement the plan shows is the one the Ray nodes can honour."""
    cfg = materialize(compose_config([*SLURM_2N, "backend.num_engines=3"], output_root=tmp_path))
    assert "nodes:     trainer on node 0; rollout engines 0, 1, 2 on node 1" in render_plan(cfg)
    one = materialize(compose_config(["cluster=slurm"], output_root=tmp_path))
    assert "\nnodes:     " not in render_plan(one)  # one node: nothing pinned, nothing shown
    assert placement.place_actors(1, 2) == placement.Placement(None, (None, None))
    three = placement.place_actors(3, 3)
    assert (three.trainer, three.engines) == (0, (1, 2, 1))
    assert three.options(2) == {"resources": {"miles_hydra_node_2": placement.PIN_AMOUNT}}
    spec = ray_cluster.RaySpec(2, 1, 0, 30.0, tmp_path, "7_0")
    worker = ray_cluster.start_command(spec, tmp_path, "10.0.0.2", None, "10.0.0.1:6380", rank=1)
    assert '--resources={"miles_hydra_node_1": 1}' in worker


def test_a_lost_node_requeues_while_requeues_are_left_else_fails_naming_it(
    tmp_path: Path,
) -> None:
    """No cluster needed: the head's verdict on a node loss (``allocation._after_node_loss``),
    with a stand-in for submitit's requeue handler (it requeues and exits, as submitit does)."""
    requeued = []

    def submitit_handler(signum: int, frame: Any) -> None:
        requeued.append(signum)
        raise SystemExit(-1)

    lost = "Ray on node 1 died (mhnode1, 10.213.0.11; exit code 1)"
    previous = signal.signal(preemption.WARNING_SIGNAL, submitit_handler)
    try:
        preemption.install()
        with pytest.raises(SystemExit):
            allocation._after_node_loss(1, tmp_path, 0, lost)  # requeue 1 of at most 1
        assert requeued and read_status(tmp_path)["state"] == "preempted"
        preemption.install()
        allocation._after_node_loss(1, tmp_path, 1, lost)  # none left: the job fails
        assert len(requeued) == 1
        assert {k: read_status(tmp_path)[k] for k in ("state", "error")} == {
            "state": "failed",
            "error": lost,
        }
    finally:
        preemption.uninstall()
        signal.signal(preemption.WARNING_SIGNAL, previous)


def test_nodes_are_named_by_rank_host_and_address_in_logs_and_errors(tmp_path: Path) -> None:
    """No cluster needed: how the head's log and the launcher's error name the nodes."""
    spec = ray_cluster.RaySpec(2, 1, 0, 30.0, tmp_path, "7_0")
    (tmp_path / "ray_node_7_0_1.json").write_text(
        json.dumps({"rank": 1, "host": "mhnode1", "ip": "10.213.0.11", "pid": 1})
    )
    gib = 2.0**30
    nodes = [
        {
            "NodeID": "b" * 56,
            "NodeManagerHostname": "mhnode1",
            "NodeManagerAddress": "10.213.0.11",
            "Resources": {"CPU": 1.0, "memory": 2 * gib},
        },
        {
            "NodeID": "a" * 56,
            "NodeManagerHostname": "mhnode0",
            "NodeManagerAddress": "10.213.0.10",
            "Resources": {"CPU": 1.0, "GPU": 8.0, "memory": 4 * gib},
        },
    ]
    text = ray_cluster.describe_nodes(nodes, "10.213.0.10", ray_cluster._ranks_by_ip(spec))
    assert text.splitlines() == [
        "  node 0 (mhnode0, 10.213.0.10, head): CPU 1, GPU 8, memory 4.0 GiB, id aaaaaaaaaaaa",
        "  node 1 (mhnode1, 10.213.0.11): CPU 1, GPU 0, memory 2.0 GiB, id bbbbbbbbbbbb",
    ]
    run_dir = tmp_path / "run"
    (run_dir / "ray").mkdir(parents=True)
    assert ray_cluster.node_failures(run_dir) == []
    (run_dir / "ray" / "ray_failed_7_0_1").write_text("Ray on node 1 died (mhnode1)\nlog tail")
    assert ray_cluster.node_failures(run_dir) == ["Ray on node 1 died (mhnode1)"]
