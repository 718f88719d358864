"""A Ray cluster over a job's allocation: one task per node, node 0 is the head.

Node 0 starts ``ray start --head --block`` on ports it picks free for this job (two jobs on one
node never collide), writes the head address to a rendezvous file in the run directory and polls
the cluster until every node, CPU and GPU is registered. The other nodes wait for that file, join
with retries and then watch for the head's "done" file. Nothing sleeps for a fixed time: every
wait is a poll with a deadline that ends in a :class:`ClusterError` naming what is missing.

Each node owns the ``ray start --block`` process it spawned (own session, own temp dir) and stops
exactly that one: SIGTERM, which makes Ray shut its node down, then SIGKILL of that process group
if it lingers. Nothing is ever killed by name (``ray stop`` would hit other jobs on the node).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from miles_hydra.errors import ClusterError

log = logging.getLogger(__name__)

POLL_S = 0.25  # interval of every readiness poll
STOP_GRACE_S = 20.0  # SIGTERM grace (Ray drains the node) before its process group is killed
WORKER_STOP_GRACE_S = 5.0  # a worker stops after the head: no GCS left to drain towards
FAILED_STOP_GRACE_S = 2.0  # the same for a node that never came up: nothing to drain
PR_SET_PDEATHSIG = 1  # prctl option: signal this process when its parent dies
JOIN_ATTEMPTS = 3  # a worker retries `ray start` this many times before failing


@dataclass(frozen=True)
class RaySpec:
    """What the cluster must look like, and where this job keeps its Ray files."""

    num_nodes: int  # Ray nodes expected (one per Slurm node / task)
    num_cpus_per_node: int  # CPUs each node registers
    num_gpus_per_node: int  # GPUs each node registers
    startup_timeout_s: float  # deadline for the whole cluster to be up
    rendezvous_dir: Path  # shared directory (the run dir) for the head address and done marker
    attempt_id: str  # unique per job attempt (job id + requeue count): stale files never match
    dashboard_port: Optional[int] = None  # serve Ray's job API here (backend=miles: ray job submit)


def ray_env() -> dict[str, str]:
    """Environment for every Ray process and driver of the job."""
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # token auth (Ray >= 2.60 default) breaks CLI + drivers here
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_worker_niceness"] = "0"  # Ray's default nice 15 starves actors next to busy processes
    return env


def node_ip(num_nodes: int) -> str:
    """This node's address as other nodes reach it (loopback is fine for one node)."""
    ip = socket.gethostbyname(socket.gethostname())
    if num_nodes == 1 or not ip.startswith("127."):
        return ip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the default route's address
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _port_args() -> list[str]:
    """Every fixed-default port Ray would open on a node, replaced by a free one."""
    flags = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    )
    return [arg for flag in flags for arg in (flag, str(free_port()))]


def start_command(
    spec: RaySpec, temp_dir: Path, ip: str, head_port: Optional[int], head_address: Optional[str]
) -> list[str]:
    """The `ray start --block` argv of a head (head_port) or a worker (head_address)."""
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        f"--node-ip-address={ip}",
        f"--num-cpus={spec.num_cpus_per_node}",
        f"--num-gpus={spec.num_gpus_per_node}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if head_port is not None and spec.dashboard_port is not None:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=true"]
        cmd += ["--dashboard-host=0.0.0.0", f"--dashboard-port={spec.dashboard_port}"]
    elif head_port is not None:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        cmd += [f"--address={head_address}"]
    return cmd + _port_args()


def _child_setup() -> None:  # pragma: no cover - runs in the child before exec
    """Slurm sends the USR2 warning to every process of the step: Ray must not die of it. And
    Ray must not outlive this task: if the task is killed (SIGKILL, a crashed driver), the
    kernel sends SIGTERM to `ray start --block`, which then stops its node."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


class RayNodeProcess:
    """One `ray start --block` process (and everything it spawns), owned by this task."""

    def __init__(self, cmd: list[str], log_path: Path, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=ray_env(),
                start_new_session=True,
                preexec_fn=_child_setup,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (Ray drains and stops the node), then SIGKILL the process group if needed."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("ray node pid %d ignored SIGTERM; killing its group", self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of our own session only
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _temp_dir(spec: RaySpec, rank: int) -> Path:
    # short: Ray's unix socket paths must stay under 107 characters
    return Path("/tmp") / f"mh_ray_{spec.attempt_id}_{rank}"


def _head_file(spec: RaySpec) -> Path:
    return spec.rendezvous_dir / f"ray_head_{spec.attempt_id}.json"


def _done_file(spec: RaySpec) -> Path:
    return spec.rendezvous_dir / f"ray_done_{spec.attempt_id}"


def _failed_file(spec: RaySpec, rank: int) -> Path:
    return spec.rendezvous_dir / f"ray_failed_{spec.attempt_id}_{rank}"


def _wait_for_port(node: RayNodeProcess, host: str, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not node.alive():
            raise ClusterError(
                f"the Ray head exited (code {node.proc.returncode}) before opening port {port}; "
                f"its log ({node.log_path}):\n{node.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(POLL_S)
    raise ClusterError(
        f"the Ray head did not open {host}:{port} within cluster.ray_startup_timeout_s; "
        f"its log ({node.log_path}):\n{node.log_tail()}"
    )


def _registered(spec: RaySpec) -> tuple[int, float, float]:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n["Resources"].get("CPU", 0.0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
    return len(nodes), cpus, gpus


def wait_until_registered(spec: RaySpec, head: RayNodeProcess, deadline: float) -> None:
    """Poll until all nodes, CPUs and GPUs are in; fail fast if the head or a worker failed."""
    want = (
        spec.num_nodes,
        spec.num_cpus_per_node * spec.num_nodes,
        spec.num_gpus_per_node * spec.num_nodes,
    )
    have = (0, 0.0, 0.0)
    while time.monotonic() < deadline:
        if not head.alive():
            raise ClusterError(f"the Ray head died during start-up; log:\n{head.log_tail()}")
        failed = sorted(spec.rendezvous_dir.glob(f"ray_failed_{spec.attempt_id}_*"))
        if failed:
            raise ClusterError(f"a worker node could not join: {failed[0].read_text()}")
        have = _registered(spec)
        if have[0] >= want[0] and have[1] >= want[1] and have[2] >= want[2]:
            return
        time.sleep(POLL_S)
    raise ClusterError(
        f"Ray was not up after {spec.startup_timeout_s:.0f} s (cluster.ray_startup_timeout_s): "
        f"{have[0]}/{want[0]} nodes, {have[1]:g}/{want[1]} CPUs, {have[2]:g}/{want[2]} GPUs "
        f"registered; check the node logs in {spec.rendezvous_dir.parent}/logs"
    )


@contextlib.contextmanager
def head_node(spec: RaySpec, log_dir: Path) -> Iterator[str]:
    """Start the head, wait for the whole cluster, connect this process; yield the address.

    On exit (also on error) the driver disconnects, the done marker tells workers to stop, and
    the head is stopped.
    """
    import ray

    started = time.monotonic()
    deadline = started + spec.startup_timeout_s
    ip = node_ip(spec.num_nodes)
    port = free_port()
    temp_dir = _temp_dir(spec, 0)
    head = RayNodeProcess(
        start_command(spec, temp_dir, ip, port, None), log_dir / "ray_node_0.log", temp_dir
    )
    address = f"{ip}:{port}"
    came_up = False
    try:
        _wait_for_port(head, ip, port, deadline)
        _head_file(spec).write_text(json.dumps({"address": address}))
        os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address})
        if spec.dashboard_port is not None:  # the job API that `ray job submit` talks to
            os.environ["RAY_API_SERVER_ADDRESS"] = f"http://{ip}:{spec.dashboard_port}"
        ray.init(address=address, logging_level=logging.WARNING)
        wait_until_registered(spec, head, deadline)
        came_up = True
        log.info(
            "Ray up at %s in %.1f s (%d nodes)", address, time.monotonic() - started, spec.num_nodes
        )
        yield address
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        _done_file(spec).touch()
        head.stop(STOP_GRACE_S if came_up else FAILED_STOP_GRACE_S)
        os.environ.pop("RAY_ADDRESS", None)


def _read_head_address(spec: RaySpec, deadline: float) -> str:
    while time.monotonic() < deadline:
        if _done_file(spec).exists():
            raise ClusterError("the head finished before this node joined")
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads(_head_file(spec).read_text())["address"]
        time.sleep(POLL_S)
    raise ClusterError(
        f"no Ray head address in {_head_file(spec)} after "
        f"{spec.startup_timeout_s:.0f} s (cluster.ray_startup_timeout_s)"
    )


def _join(spec: RaySpec, rank: int, log_dir: Path, deadline: float) -> RayNodeProcess:
    address = _read_head_address(spec, deadline)
    ip = node_ip(spec.num_nodes)
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        temp_dir = _temp_dir(spec, rank)
        node = RayNodeProcess(
            start_command(spec, temp_dir, ip, None, address),
            log_dir / f"ray_node_{rank}.log",
            temp_dir,
        )
        settle = min(deadline, time.monotonic() + 10.0)  # a failed `ray start` exits quickly
        while node.alive() and time.monotonic() < settle:
            time.sleep(POLL_S)
        if node.alive():
            # who runs this node's Ray, for operators (and tests) to find it by id, not by name
            pid_file = spec.rendezvous_dir / f"ray_pid_{spec.attempt_id}_{rank}"
            pid_file.write_text(str(node.proc.pid))
            return node
        log.warning("ray start on node %d exited (attempt %d/%d)", rank, attempt, JOIN_ATTEMPTS)
        node.stop()
    raise ClusterError(
        f"node {rank} could not join the Ray head at {address}; "
        f"log ({node.log_path}):\n{node.log_tail()}"
    )


def worker_node(spec: RaySpec, rank: int, log_dir: Path) -> None:
    """Join the head and stay until it is done. Raises ClusterError if this node's Ray dies."""
    deadline = time.monotonic() + spec.startup_timeout_s
    try:
        node = _join(spec, rank, log_dir, deadline)
    except ClusterError as exc:
        _failed_file(spec, rank).write_text(f"node {rank}: {exc}")
        raise
    try:
        while not _done_file(spec).exists():
            if not node.alive():
                raise ClusterError(
                    f"Ray on node {rank} died (code {node.proc.returncode}); "
                    f"log:\n{node.log_tail()}"
                )
            time.sleep(POLL_S * 4)
    finally:
        node.stop(WORKER_STOP_GRACE_S)
