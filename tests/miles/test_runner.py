"""The miles runner against a REAL local Ray head (with the job API) and a FAKE train.py.

miles itself cannot run here (no GPUs), so the entry point is a tiny fake script; everything
else is real: `ray start --head`, `ray job submit --runtime-env-json`, `ray job logs --follow`,
`ray job status`, `ray job stop`. The Ray CLI with dashboard support comes from the oracle venv
(ray[default]); the project environment has Ray without the dashboard packages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from miles_hydra.backends.miles.check.oracle import DEFAULT_VENV, SETUP_HINT
from miles_hydra.backends.miles.compile import MilesCommand
from miles_hydra.backends.miles.runner import MilesJob, final_exit_status, run_command, run_miles
from miles_hydra.errors import TrainingError

VENV = Path(os.environ.get("MILES_ORACLE_VENV", DEFAULT_VENV))
RAY_CLI = VENV / "bin" / "ray"
needs_ray_job_api = pytest.mark.skipif(
    not (VENV / "lib").exists()
    or not RAY_CLI.exists()
    or not list((VENV / "lib").glob("python3*/site-packages/aiohttp_cors")),
    reason=f"no Ray with the job API (oracle venv with ray[default]); {SETUP_HINT}",
)

# A fake train.py that logs like miles: TensorBoard scalars into $TENSORBOARD_DIR (torch's
# SummaryWriter, as miles' TensorboardBackend), an eval before training and after each rollout.
FAKE_TB_TRAIN = """\
import os, sys
from torch.utils.tensorboard import SummaryWriter
assert "--use-tensorboard" in sys.argv, sys.argv
w = SummaryWriter(os.environ["TENSORBOARD_DIR"])
w.add_scalar("eval/eval", 0.0, 0)
for r in range(2):
    w.add_scalar("rollout/raw_reward", 0.25 * (r + 1), r)
    w.add_scalar("train/loss", 1.0 - r, r)
    w.add_scalar("eval/eval", 0.5 * (r + 1), r)
    w.flush()
w.close()
sys.exit(int(os.environ.get("FAKE_EXIT_CODE", "0")))
"""

FAKE_TRAIN = """\
import os, sys, time
print("fake train.py argv:", sys.argv[1:], flush=True)
print("env MILES_HYDRA_PROBE =", os.environ.get("MILES_HYDRA_PROBE"), flush=True)
print("secret visible:", bool(os.environ.get("WANDB_API_KEY")), flush=True)
if "--sleep" in sys.argv:
    time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
sys.exit(int(sys.argv[sys.argv.index("--exit-code") + 1]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head with the dashboard/job API, stopped by its own process group only."""
    temp_dir = tempfile.mkdtemp(prefix="mhray_", dir="/tmp")  # short: Ray's unix socket paths
    dash = _free_port()
    ports = [
        a
        for f in (
            "--node-manager-port",
            "--object-manager-port",
            "--metrics-export-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
        )
        for a in (f, str(_free_port()))
    ]
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_API_KEY": "test-secret",
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
    }
    log = open(Path(temp_dir) / "head.log", "wb")  # noqa: SIM115 - closed in teardown
    head = subprocess.Popen(
        [
            str(RAY_CLI),
            "start",
            "--head",
            "--block",
            f"--port={_free_port()}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            *ports,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
            break
        except OSError:
            if head.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"Ray head did not come up:\n{Path(temp_dir, 'head.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
    yield address
    head.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops its node (~3 s)
    try:  # never `ray stop`: it kills every Ray process on the machine by name
        head.wait(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=10)
    log.close()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Job 'j1' is currently RUNNING", None),
        ("\x1b[32mJob 'j1' succeeded\x1b[39m", 0),
        (
            "Job 'j1' failed\nStatus message: Job entrypoint command failed with exit code 3, last",
            3,
        ),
        ("Job 'j1' was stopped", 143),
        ("Job 'j2' succeeded", None),
    ],
)
def test_final_exit_status_parsing(text: str, code) -> None:
    assert final_exit_status(text, "j1") == code


@pytest.fixture
def fake_entry(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(FAKE_TRAIN)
    return path


def _command(entry: Path, *argv: str) -> MilesCommand:
    return MilesCommand(
        entry=str(entry), argv=list(argv), env={"MILES_HYDRA_PROBE": "from-runtime-env"}
    )


@needs_ray_job_api
def test_runner_real_ray_head_fake_entry_exit_status_and_logs(ray_head, fake_entry, tmp_path):
    job, code = run_command(
        _command(fake_entry, "--exit-code", "3", "--lr", "1e-06"),
        tmp_path,
        ray_head,
        ray_cli=str(RAY_CLI),
    )
    assert code == 3  # the entry point's own exit status comes back
    text = job.log_path.read_text()
    assert "fake train.py argv: ['--exit-code', '3', '--lr', '1e-06']" in text
    assert "env MILES_HYDRA_PROBE = from-runtime-env" in text
    assert "secret visible: True" in text  # inherited from the head's environment
    submit_line = (tmp_path / "miles_command.sh").read_text()
    assert "--runtime-env-json" in submit_line and "test-secret" not in submit_line


@needs_ray_job_api
def test_runner_real_ray_head_fake_entry_stop(ray_head, fake_entry, tmp_path):
    job = MilesJob(address=ray_head, log_path=tmp_path / "miles_job.log", ray_cli=str(RAY_CLI))
    job.submit(_command(fake_entry, "--sleep", "120", "--exit-code", "0"))
    deadline = time.monotonic() + 60
    while "RUNNING" not in job.status() and time.monotonic() < deadline:
        time.sleep(0.5)
    stopper = threading.Timer(1.0, job.stop)
    stopper.start()
    start = time.monotonic()
    assert job.follow() == 143
    assert time.monotonic() - start < 60
    stopper.join(timeout=60)


def _miles_run(tmp_path: Path, address: str, *overrides: str):
    from conftest import compose_config, materialize
    from support.tiny import TINY_MODEL

    entry = tmp_path / "fake_tb_train.py"
    entry.write_text(FAKE_TB_TRAIN)
    return materialize(
        compose_config(
            [
                "backend=miles",
                f"backend.miles_entry={entry}",
                f"backend.ray_address={address}",
                *TINY_MODEL,
                "precision=bf16",
                f"model.hf_checkpoint={tmp_path / 'hf'}",
                f"checkpoint.ref_load={tmp_path / 'ref'}",
                "rollout.num_rollout=2",
                "rollout.rollout_batch_size=2",
                "rollout.eval_interval=1",
                "data.num_eval_prompts=2",
                *overrides,
            ]
        )
    )


needs_tensorboard = pytest.mark.skipif(
    not list((VENV / "lib").glob("python3*/site-packages/tensorboard")),
    reason=f"no tensorboard in the oracle venv; {SETUP_HINT}",
)


@needs_ray_job_api
@needs_tensorboard
def test_run_miles_follows_tensorboard_events_into_metrics_and_result(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    result = run_miles(_miles_run(tmp_path, ray_head), run_dir, ray_cli=str(RAY_CLI))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == [0, 1]
    assert [r["eval/step"] for r in records if "eval/step" in r] == [0, 1, 2]
    assert result["exit_code"] == 0 and result["step"] == 1
    assert result["eval/arithmetic"] == 1.0 and result["rollout/raw_reward"] == 0.5


@needs_ray_job_api
@needs_tensorboard
def test_run_miles_failure_names_the_driver_log_and_keeps_the_metrics(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    cfg = _miles_run(tmp_path, ray_head, "+backend.env.FAKE_EXIT_CODE=5")
    with pytest.raises(TrainingError, match=f"exited with 5; driver log: {run_dir}/miles_job.log"):
        run_miles(cfg, run_dir, ray_cli=str(RAY_CLI))
    assert (run_dir / "metrics.jsonl").read_text().count('"step"') == 2
