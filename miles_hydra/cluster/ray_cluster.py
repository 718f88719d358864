"""A Ray cluster over a job's allocation: one task per node, node 0 is the head.

Node 0 starts ``ray start --head --block`` on ports it picks free for this job (two jobs on one
node never collide), writes the head address to a rendezvous file in the run directory and polls
the cluster until every node, CPU and GPU is registered; it then logs every node with its
resources ("all N Ray nodes ready"). The other nodes wait for that file, join with retries and
then watch for the head's "done" file. Nothing sleeps for a fixed time: every wait is a poll with
a deadline that ends in a :class:`ClusterError` naming what is missing.

While the job runs, node 0 watches the cluster (:class:`NodeWatch`): a node whose Ray dies (its
worker task reports it, or Ray's health checks mark it dead) ends the job at once with a
:class:`ClusterError` naming the node, instead of leaving the driver waiting on it.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from miles_hydra.cluster.placement import node_resource
from miles_hydra.errors import ClusterError

log = logging.getLogger(__name__)

POLL_S = 0.25  # interval of every readiness poll
STOP_GRACE_S = 20.0  # SIGTERM grace (Ray drains the node) before its process group is killed
WORKER_STOP_GRACE_S = 5.0  # a worker stops after the head: no GCS left to drain towards
FAILED_STOP_GRACE_S = 2.0  # the same for a node that never came up: nothing to drain
PR_SET_PDEATHSIG = 1  # prctl option: signal this process when its parent dies
JOIN_ATTEMPTS = 3  # a worker retries `ray start` this many times before failing
WATCH_POLL_S = 0.5  # how often node 0 checks, during the job, that every node is alive
SESSION_NAMESPACE = b"session"  # Ray's internal KV namespace of the session name
VERDICT_WAIT_S = 20.0  # a worker whose Ray died waits this long for the head to act on it


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
    # more ray.init arguments of the job's driver (launch.console.ray_driver_options: whether
    # actor output reaches the console, the actors' log directory)
    driver_options: dict[str, Any] = field(default_factory=dict)


def ray_env() -> dict[str, str]:
    """Environment for every Ray process and driver of the job."""
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # token auth (Ray >= 2.60 default) breaks CLI + drivers here
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_worker_niceness"] = "0"  # Ray's default nice 15 starves actors next to busy processes
    return env


def node_ip(num_nodes: int, peer: Optional[str] = None) -> str:
    """This node's address as other nodes reach it (loopback is fine for one node).

    The host name's address, unless that is loopback on a multi-node job: then the address of
    the interface that routes to ``peer`` (a worker passes the head's address), else to the
    default route.
    """
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        ip = "127.0.0.1"
    if num_nodes == 1 or not ip.startswith("127."):
        return ip
    target = peer or "10.255.255.255"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # no packet is sent
            probe.connect((target, 1))
            return probe.getsockname()[0]
    except OSError as exc:
        raise ClusterError(
            f"node {socket.gethostname()}: its host name resolves to {ip} and no interface "
            f"routes to {target} ({exc}); the other nodes of the job cannot reach it"
        ) from exc


def host_label() -> str:
    """How errors and logs name this node: its host name."""
    return socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def free_ports(count: int, exclude: Iterable[Optional[int]] = ()) -> list[int]:
    """``count`` distinct free ports, none in ``exclude``. All are held open while they are
    chosen: ports picked one at a time can repeat (the kernel hands a just-closed one out
    again), and Ray refuses a node whose components share a port."""
    taken = set(exclude)
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("", 0))
            port = sock.getsockname()[1]
            if port not in taken and port not in ports:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


PORT_FLAGS = (  # every fixed-default port Ray would open on a node: a free one instead
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def start_command(
    spec: RaySpec,
    temp_dir: Path,
    ip: str,
    head_port: Optional[int],
    head_address: Optional[str],
    *,
    rank: int = 0,
) -> list[str]:
    """The `ray start --block` argv of a head (head_port) or a worker (head_address) of task
    ``rank`` (the head's: 0); the node registers ``placement.node_resource(rank)``, which the
    actors of a multi-node job pin to."""
    ports = free_ports(len(PORT_FLAGS) + 1, exclude=(head_port, spec.dashboard_port))
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
        f"--resources={json.dumps({node_resource(rank): 1})}",
        "--disable-usage-stats",
    ]
    if head_port is not None:
        # the Ray Client server's default port (10001) would collide with another job's head;
        # no autoscaler monitor: nothing scales in a fixed allocation, and it is one Python
        # process fewer to start (seconds on a small node)
        cmd += ["--head", f"--port={head_port}", f"--ray-client-server-port={ports.pop()}"]
        cmd += ["--no-monitor"]
    if head_port is not None and spec.dashboard_port is not None:
        cmd += ["--include-dashboard=true"]
        cmd += ["--dashboard-host=0.0.0.0", f"--dashboard-port={spec.dashboard_port}"]
    elif head_port is not None:
        cmd += ["--include-dashboard=false"]
    else:
        cmd += [f"--address={head_address}"]
    return cmd + [arg for flag, port in zip(PORT_FLAGS, ports) for arg in (flag, str(port))]


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


def _wait_for_session(head: RayNodeProcess, address: str, deadline: float) -> None:
    """Poll until the head's GCS serves the session name (what joining nodes read first)."""
    _poll_head(head, address, deadline, "serve its session", _session_served)


def _wait_for_head_registered(head: RayNodeProcess, address: str, deadline: float) -> None:
    """Poll until a node is registered: the head's own, unless a worker's was quicker (then a
    head that dies during start-up fails ``wait_until_registered``, without a retry here)."""
    _poll_head(head, address, deadline, "register its node", _any_node_registered)


def _session_served(client: Any) -> Any:
    return client.internal_kv_get(b"session_name", SESSION_NAMESPACE, timeout=2)


def _any_node_registered(client: Any) -> Any:
    return client.get_all_node_info(timeout=2)


def _poll_head(
    head: RayNodeProcess, address: str, deadline: float, what: str, ready: Callable[[Any], Any]
) -> None:
    """Call ``ready(GcsClient)`` until it returns something truthy; ClusterError with the head's
    log when the head exits or ``deadline`` passes first."""
    from ray._raylet import GcsClient

    client = GcsClient(address=address)
    while time.monotonic() < deadline:
        if not head.alive():
            raise ClusterError(
                f"the Ray head exited (code {head.proc.returncode}) during start-up; "
                f"its log ({head.log_path}):\n{head.log_tail()}"
            )
        with contextlib.suppress(Exception):  # not serving yet: poll again
            if ready(client):
                return
        time.sleep(POLL_S)
    raise ClusterError(
        f"the Ray head at {address} did not {what} within cluster.ray_startup_timeout_s; its "
        f"log ({head.log_path}):\n{head.log_tail()}"
    )


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _registered(nodes: list[dict]) -> tuple[int, float, float]:
    cpus = sum(n["Resources"].get("CPU", 0.0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
    return len(nodes), cpus, gpus


def wait_until_registered(spec: RaySpec, head: RayNodeProcess, deadline: float) -> list[dict]:
    """Poll until all nodes, CPUs and GPUs are in; fail fast if the head or a worker failed.

    Returns the alive nodes (``ray.nodes()`` entries)."""
    want = (
        spec.num_nodes,
        spec.num_cpus_per_node * spec.num_nodes,
        spec.num_gpus_per_node * spec.num_nodes,
    )
    have = (0, 0.0, 0.0)
    while time.monotonic() < deadline:
        if not head.alive():
            raise ClusterError(
                f"the Ray head on node 0 ({host_label()}) died during start-up; "
                f"log:\n{head.log_tail()}"
            )
        failed = _failure_reports(spec)
        if failed:
            raise ClusterError(f"a worker node could not join: {failed[0]}")
        nodes = _alive_nodes()
        have = _registered(nodes)
        if have[0] >= want[0] and have[1] >= want[1] and have[2] >= want[2]:
            return nodes
        time.sleep(POLL_S)
    raise ClusterError(
        f"Ray was not up after {spec.startup_timeout_s:.0f} s (cluster.ray_startup_timeout_s): "
        f"{have[0]}/{want[0]} nodes, {have[1]:g}/{want[1]} CPUs, {have[2]:g}/{want[2]} GPUs "
        f"registered; check the node logs in {spec.rendezvous_dir.parent}/logs"
    )


def _failure_reports(spec: RaySpec) -> list[str]:
    """What worker nodes reported before giving up (join failed, their Ray died)."""
    reports = []
    for path in sorted(spec.rendezvous_dir.glob(f"ray_failed_{spec.attempt_id}_*")):
        with contextlib.suppress(OSError):
            reports.append(path.read_text())
    return reports


def node_failures(run_dir: Path) -> list[str]:
    """What the worker nodes of a job's attempts reported when they failed (one line each,
    oldest first): read by the launcher when Slurm has the job dead without a result."""
    found = []
    for path in (run_dir / "ray").glob("ray_failed_*"):
        with contextlib.suppress(OSError, IndexError):
            found.append((path.stat().st_mtime, path.read_text().splitlines()[0]))
    return [line for _, line in sorted(found)]


def _ranks_by_ip(spec: RaySpec) -> dict[str, list[int]]:
    """Task ranks of the joined worker nodes by address (from their ``ray_node_*`` records)."""
    ranks: dict[str, list[int]] = {}
    for path in spec.rendezvous_dir.glob(f"ray_node_{spec.attempt_id}_*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            ranks.setdefault(record["ip"], []).append(int(record["rank"]))
    return ranks


def node_label(node: dict, head_ip: str, ranks: dict[str, list[int]]) -> str:
    """``node 1 (mhnode1, 10.0.0.2)``: a Ray node as the job's logs and errors name it."""
    ip = node.get("NodeManagerAddress", "?")
    where = f"{node.get('NodeManagerHostname', '?')}, {ip}"
    if ip == head_ip and not ranks.get(ip):
        return f"node 0 ({where}, head)"
    found = sorted(ranks.get(ip, []))
    if len(found) == 1:
        return f"node {found[0]} ({where})"
    return f"node ({where})"


def describe_nodes(nodes: list[dict], head_ip: str, ranks: dict[str, list[int]]) -> str:
    """One line per node: who it is and what it registered."""
    lines = []
    for node in sorted(nodes, key=lambda n: node_label(n, head_ip, ranks)):
        res = node.get("Resources", {})
        mem_gib = res.get("memory", 0.0) / 2**30
        lines.append(
            f"  {node_label(node, head_ip, ranks)}: CPU {res.get('CPU', 0.0):g}, "
            f"GPU {res.get('GPU', 0.0):g}, memory {mem_gib:.1f} GiB, id {node['NodeID'][:12]}"
        )
    return "\n".join(lines)


class NodeLostError(ClusterError, KeyboardInterrupt):
    """A node of the job's Ray cluster died mid-job. Raised in node 0's main thread by the
    :class:`NodeWatch`; a KeyboardInterrupt too, so that no ``except Exception`` in the job
    function swallows it and a blocked ``ray.get`` returns."""


class NodeWatch:
    """Node 0's watch over a running job: every ``WATCH_POLL_S`` it checks the failure reports of
    the worker nodes, the head's own ``ray start`` process and Ray's node table. The first loss
    is logged and interrupts the main thread (SIGINT, simulated) with a :class:`NodeLostError`
    naming the node. Use from the main thread: ``start()`` ... ``stop()``."""

    def __init__(self, spec: RaySpec, head: RayNodeProcess, nodes: list[dict], head_ip: str):
        self.spec = spec
        self.head = head
        self.head_ip = head_ip
        self.node_ids = [n["NodeID"] for n in nodes]
        self.lost: Optional[str] = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._previous: Any = None
        self._thread = threading.Thread(target=self._run, name="ray-node-watch", daemon=True)

    def start(self) -> None:
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        self._thread.start()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.lost is not None:
            raise NodeLostError(self.lost)
        if self._previous is signal.SIG_IGN:
            return
        if callable(self._previous):
            self._previous(signum, frame)
            return
        raise KeyboardInterrupt

    def check(self) -> Optional[str]:
        """Why the cluster is no longer whole, or None."""
        reports = _failure_reports(self.spec)
        if reports:  # the first line names the node; the log tail is in its task's stderr
            return reports[0].splitlines()[0]
        if not self.head.alive():
            return (
                f"the Ray head on node 0 ({host_label()}) died (code {self.head.proc.returncode}); "
                f"log:\n{self.head.log_tail()}"
            )
        try:
            everyone = {n["NodeID"]: n for n in _all_nodes()}
        except Exception:  # noqa: BLE001 - a GCS hiccup; a dead head is seen above
            return None
        dead = [
            everyone.get(i, {"NodeID": i})
            for i in self.node_ids
            if not everyone.get(i, {}).get("Alive")
        ]
        if not dead:
            return None
        label = node_label(dead[0], self.head_ip, _ranks_by_ip(self.spec))
        return f"Ray {label} died during the job (Ray marked it dead)"

    def _run(self) -> None:
        import _thread

        while not self._stopped.wait(WATCH_POLL_S):
            reason = self.check()
            if reason is None:
                continue
            with self._lock:
                if self._stopped.is_set():
                    return
                self.lost = reason
                log.error("lost a node of the Ray cluster: %s", reason)
                _thread.interrupt_main(signal.SIGINT)
            return

    def wait_for_loss(self, timeout_s: float) -> Optional[str]:
        """After the job failed: poll up to ``timeout_s`` for the node loss behind it."""
        deadline = time.monotonic() + timeout_s
        while self.lost is None and time.monotonic() < deadline:
            reason = self.check()
            if reason is not None:
                return reason
            time.sleep(POLL_S)
        return self.lost

    def stop(self) -> None:
        """Stop watching and restore SIGINT. An interrupt the watch sent that the main thread
        has not taken yet is taken (and dropped) here."""
        with self._lock:
            self._stopped.set()
        self._thread.join(timeout=10)
        if self.lost is not None:
            with contextlib.suppress(KeyboardInterrupt):
                for _ in range(20):
                    time.sleep(0.01)  # a pending simulated SIGINT runs its handler here
        signal.signal(signal.SIGINT, self._previous)


def _all_nodes() -> list[dict]:
    import ray

    return list(ray.nodes())


def log_actor_placement(head_ip: str, spec: RaySpec) -> None:
    """Log which node ran which of the job's actors (read from Ray's actor table)."""
    try:
        import ray._private.state as ray_state

        actors = list(ray_state.actors().values())
        nodes = _all_nodes()
    except Exception as exc:  # noqa: BLE001 - a log line only
        log.info("Ray actor placement unknown: %s", exc)
        return
    ranks = _ranks_by_ip(spec)
    labels = {n["NodeID"]: node_label(n, head_ip, ranks) for n in nodes}
    by_node: dict[str, list[str]] = {label: [] for label in labels.values()}
    for actor in actors:
        node_id = (actor.get("Address") or {}).get("NodeID", "")
        label = labels.get(node_id, f"node {node_id[:12] or '?'}")
        by_node.setdefault(label, []).append(actor.get("ActorClassName", "?"))
    lines = [
        f"  {label}: {', '.join(sorted(names)) or '-'}" for label, names in sorted(by_node.items())
    ]
    log.info("Ray actors by node:\n%s", "\n".join(lines))


NODE_LOSS_GRACE_S = 10.0  # a job that failed right after a node died: wait this long to name it


RAY_STARTUP_TIMEOUT_LINE = b"timed out during startup"  # Ray gave its raylet 30 s: retry


def _start_head(
    spec: RaySpec, ip: str, log_dir: Path, deadline: float
) -> tuple[RayNodeProcess, str]:
    """Start the head until its GCS serves and its node is registered; the node and address.

    The head's address goes to the rendezvous file as soon as its GCS serves the session (all
    a joining `ray start --address` reads before starting its own raylet, giving up after ~40 s
    without it): the workers' nodes start while the head's own raylet does. A head whose raylet
    missed Ray's own 30 s registration window (a loaded machine) is started again, up to
    ``JOIN_ATTEMPTS`` times within the deadline; any other failure is final.
    """
    temp_dir = _temp_dir(spec, 0)
    log_path = log_dir / "ray_node_0.log"
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        offset = _log_size(log_path)
        port = free_port()
        cmd = start_command(spec, temp_dir, ip, port, None)
        head = RayNodeProcess(cmd, log_path, temp_dir)
        import ray  # noqa: F401 - while the head starts: importing Ray takes seconds

        address = f"{ip}:{port}"
        try:
            _wait_for_port(head, ip, port, deadline)
            _wait_for_session(head, address, deadline)
            _head_file(spec).write_text(json.dumps({"address": address}))
            _wait_for_head_registered(head, address, deadline)
            return head, address
        except ClusterError:
            _head_file(spec).unlink(missing_ok=True)  # workers must not join a stopped head
            head.stop(FAILED_STOP_GRACE_S)
            timed_out = _log_contains(log_path, offset, RAY_STARTUP_TIMEOUT_LINE)
            if not timed_out or attempt == JOIN_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("the Ray head timed out during start-up (attempt %d); again", attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def head_node(
    spec: RaySpec, log_dir: Path, on_node_lost: Optional[Callable[[str], None]] = None
) -> Iterator[str]:
    """Start the head, wait for the whole cluster, connect this process; yield the address.

    While the body runs, a :class:`NodeWatch` ends it with a :class:`ClusterError` naming the
    node when one dies; ``on_node_lost`` is called first with that message (it may requeue the
    job and exit), while the worker nodes still wait for the head's verdict (the done marker).
    On exit (also on error) the driver disconnects, the done marker tells workers to stop, and
    the head is stopped.
    """
    started = time.monotonic()
    deadline = started + spec.startup_timeout_s
    ip = node_ip(spec.num_nodes)
    head: Optional[RayNodeProcess] = None
    came_up = False
    watch: Optional[NodeWatch] = None
    try:
        head, address = _start_head(spec, ip, log_dir, deadline)
        import ray

        log.info(
            "Ray head at %s on %s up in %.1f s; waiting for %d node(s)",
            address,
            host_label(),
            time.monotonic() - started,
            spec.num_nodes,
        )
        os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address})
        if spec.dashboard_port is not None:  # the job API that `ray job submit` talks to
            os.environ["RAY_API_SERVER_ADDRESS"] = f"http://{ip}:{spec.dashboard_port}"
        ray.init(address=address, logging_level=logging.WARNING, **spec.driver_options)
        nodes = wait_until_registered(spec, head, deadline)
        came_up = True
        log.info(
            "all %d Ray nodes ready in %.1f s (head %s):\n%s",
            spec.num_nodes,
            time.monotonic() - started,
            address,
            describe_nodes(nodes, ip, _ranks_by_ip(spec)),
        )
        if spec.num_nodes > 1:
            watch = NodeWatch(spec, head, nodes, ip)
            watch.start()
        try:
            yield address
        except BaseException as exc:
            if watch is None:
                raise
            lost = watch.lost or watch.wait_for_loss(
                NODE_LOSS_GRACE_S if isinstance(exc, (ClusterError, KeyboardInterrupt)) else 0.0
            )
            watch.stop()
            watch = None
            if lost is None:
                raise
            if on_node_lost is not None:
                on_node_lost(lost)
            if isinstance(exc, NodeLostError):
                raise
            raise ClusterError(f"{lost} (the job failed: {type(exc).__name__}: {exc})") from exc
    finally:
        if watch is not None:
            watch.stop()
        if came_up and spec.num_nodes > 1:
            log_actor_placement(ip, spec)
        with contextlib.suppress(Exception):
            ray.shutdown()
        _done_file(spec).touch()
        if head is not None:
            head.stop(STOP_GRACE_S if came_up else FAILED_STOP_GRACE_S)
        os.environ.pop("RAY_ADDRESS", None)


def _read_head_address(
    head_file: Path, done_file: Path, deadline: float, node: Optional[RayNodeProcess] = None
) -> str:
    """Poll for the head's address; ClusterError when the head finished first, ``node`` (the
    pre-started `ray start` waiting for the same file) died, or the deadline passed."""
    while time.monotonic() < deadline:
        if done_file.exists():
            raise ClusterError("the head finished before this node joined")
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads(head_file.read_text())["address"]
        if node is not None and not node.alive():
            raise ClusterError(
                f"`ray start` exited (code {node.proc.returncode}) before the head was up; "
                f"log ({node.log_path}):\n{node.log_tail()}"
            )
        time.sleep(POLL_S)
    raise ClusterError(
        f"no Ray head address in {head_file} within the start-up deadline "
        "(cluster.ray_startup_timeout_s)"
    )


ADDRESS_SLOT, IP_SLOT = "{head_address}", "{node_ip}"  # filled in by `join` (see join_main)


def join_command(spec: RaySpec, rank: int, temp_dir: Path, deadline: float) -> list[str]:
    """A worker's `ray start --block`, started before the head is up: ``join_main`` imports Ray
    (seconds) while the head starts, then reads the head's address and runs `ray start`."""
    ray_argv = start_command(spec, temp_dir, IP_SLOT, None, ADDRESS_SLOT, rank=rank)
    ray_start = ray_argv[3:]  # from "start"
    timeout_s = f"{max(deadline - time.monotonic(), 1.0):.1f}"
    files = [str(_head_file(spec)), str(_done_file(spec))]
    return [
        sys.executable,
        "-m",
        __name__,
        "join",
        *files,
        timeout_s,
        str(spec.num_nodes),
        "--",
    ] + (ray_start)


def join_main(argv: list[str]) -> int:
    """``python -m miles_hydra.cluster.ray_cluster join HEAD_FILE DONE_FILE TIMEOUT_S NUM_NODES
    -- <ray start args with {head_address} and {node_ip}>``: the process becomes `ray start`."""
    import ray.scripts.scripts as ray_cli  # the slow part, overlapped with the head's start

    head_file, done_file, timeout_s, num_nodes = argv[:4]
    ray_args = argv[argv.index("--") + 1 :]
    deadline = time.monotonic() + float(timeout_s)
    try:
        address = _read_head_address(Path(head_file), Path(done_file), deadline)
        ip = node_ip(int(num_nodes), peer=address.rsplit(":", 1)[0])
    except ClusterError as exc:
        print(f"miles_hydra join: {exc}", file=sys.stderr, flush=True)
        return 3
    args = [a.replace(ADDRESS_SLOT, address).replace(IP_SLOT, ip) for a in ray_args]
    return ray_cli.cli.main(args=args, prog_name="ray")


STARTED_LINE = b"Ray runtime started."  # `ray start` prints it once its node is registered


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_contains(path: Path, offset: int, text: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return text in fh.read()
    except OSError:
        return False


def _started(node: RayNodeProcess, offset: int) -> bool:
    """Whether this `ray start` (its log from ``offset`` on) registered its node with the head."""
    return _log_contains(node.log_path, offset, STARTED_LINE)


def _join(spec: RaySpec, rank: int, log_dir: Path, deadline: float) -> tuple[RayNodeProcess, str]:
    """Start this worker's Ray node and join the head; the node and its address.

    Joined means registered (`ray start` says so), not merely alive: a `ray start` that gives up
    (e.g. its raylet was not up within Ray's own 30 s on a loaded machine) is retried."""
    temp_dir = _temp_dir(spec, rank)
    log_path = log_dir / f"ray_node_{rank}.log"
    offset = _log_size(log_path)
    node = RayNodeProcess(join_command(spec, rank, temp_dir, deadline), log_path, temp_dir)
    try:
        address = _read_head_address(_head_file(spec), _done_file(spec), deadline, node)
    except ClusterError:
        node.stop(FAILED_STOP_GRACE_S)
        raise
    ip = node_ip(spec.num_nodes, peer=address.rsplit(":", 1)[0])
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        if attempt > 1:
            offset = _log_size(log_path)
            cmd = join_command(spec, rank, temp_dir, deadline)
            node = RayNodeProcess(cmd, log_path, temp_dir)
        # which rank this address is, for the head's log (written before the node registers)
        record = {"rank": rank, "host": host_label(), "ip": ip, "pid": node.proc.pid}
        _node_file(spec, rank).write_text(json.dumps(record))
        while node.alive() and not _started(node, offset) and time.monotonic() < deadline:
            if _done_file(spec).exists():
                node.stop(FAILED_STOP_GRACE_S)
                raise ClusterError("the head finished before this node joined")
            time.sleep(POLL_S)
        if node.alive() and not _started(node, offset):
            node.stop(FAILED_STOP_GRACE_S)
            raise ClusterError(
                f"node {rank} ({host_label()}, {ip}) did not register with the Ray head at "
                f"{address} within cluster.ray_startup_timeout_s; log ({log_path}):\n"
                f"{node.log_tail()}"
            )
        if node.alive():
            # who runs this node's Ray, for operators (and tests) to find it by id, not by name
            pid_file = spec.rendezvous_dir / f"ray_pid_{spec.attempt_id}_{rank}"
            pid_file.write_text(str(node.proc.pid))
            return node, ip
        log.warning("ray start on node %d exited (attempt %d/%d)", rank, attempt, JOIN_ATTEMPTS)
        node.stop()
    raise ClusterError(
        f"node {rank} ({host_label()}, {ip}) could not join the Ray head at {address}; "
        f"log ({node.log_path}):\n{node.log_tail()}"
    )


def _node_file(spec: RaySpec, rank: int) -> Path:
    return spec.rendezvous_dir / f"ray_node_{spec.attempt_id}_{rank}.json"


def _await_verdict(spec: RaySpec) -> None:
    """After reporting its loss, a worker waits (up to ``VERDICT_WAIT_S``) until the head has
    acted on it (the done marker): its own failed exit would make Slurm kill the head's task
    (``srun --kill-on-bad-exit``) before the head records the loss or requeues the job."""
    deadline = time.monotonic() + VERDICT_WAIT_S
    while not _done_file(spec).exists() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def worker_node(spec: RaySpec, rank: int, log_dir: Path) -> None:
    """Join the head and stay until it is done. Raises ClusterError if this node's Ray dies;
    either failure is also reported to node 0 through a ``ray_failed_*`` file."""
    deadline = time.monotonic() + spec.startup_timeout_s
    try:
        node, ip = _join(spec, rank, log_dir, deadline)
    except ClusterError as exc:
        text = str(exc)
        prefix = "" if text.startswith(f"node {rank} ") else f"node {rank} ({host_label()}): "
        _failed_file(spec, rank).write_text(prefix + text)
        raise
    try:
        while not _done_file(spec).exists():
            if not node.alive():
                message = (
                    f"Ray on node {rank} died ({host_label()}, {ip}; "
                    f"exit code {node.proc.returncode})\nits log:\n{node.log_tail()}"
                )
                _failed_file(spec, rank).write_text(message)
                _await_verdict(spec)
                raise ClusterError(message)
            time.sleep(POLL_S)
    finally:
        node.stop(WORKER_STOP_GRACE_S)


if __name__ == "__main__":
    if sys.argv[1:2] != ["join"]:
        sys.exit("usage: python -m miles_hydra.cluster.ray_cluster join ... (see join_main)")
    sys.exit(join_main(sys.argv[2:]))
