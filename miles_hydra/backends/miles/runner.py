"""Run the compiled miles command as a Ray job on the job's Ray cluster.

    ray job submit --no-wait --address A --submission-id S --runtime-env-json '{"env_vars": ...}'
        -- python3 /root/miles/train.py <argv>

after writing a synthetic task's prompts to ``<run_dir>/data`` (dataset.py); then
``ray job logs --follow`` streams the driver's output into ``<run_dir>/miles_job.log``, and
the job's final status gives our exit status (the entry point's own exit code when it failed).
Meanwhile events.py follows miles' TensorBoard events (``<run_dir>/tensorboard``) into
``<run_dir>/metrics.jsonl``; the result (``result.json``) holds the final metrics, as a local run's.
SIGTERM/SIGINT (Slurm cancel, Ctrl-C) or :meth:`MilesJob.stop` run ``ray job stop`` for this
submission id only; nothing is ever killed by name.

Secrets (WANDB_API_KEY) are not in the runtime env JSON (it is on the submit command line and in
Ray's job table): the driver inherits them from the environment of the Ray head, which the job
starts inside the allocation with the user's environment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from miles_hydra.backends.miles.compile import MilesCommand, compile_miles
from miles_hydra.backends.miles.convert import run_prepare
from miles_hydra.backends.miles.dataset import num_train_prompts, write_prompt_files
from miles_hydra.backends.miles.events import (
    METRICS_FILE,
    EventFollower,
    eval_name,
    final_metrics,
    following,
    read_records,
)
from miles_hydra.config.logging import TENSORBOARD_SUBDIR
from miles_hydra.config.run import RunConfig
from miles_hydra.errors import ClusterError, TrainingError

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # Ray's job API (dashboard) on the head node
_EXIT_CODE = re.compile(r"exit code (-?\d+)")


def job_address(cfg: RunConfig) -> str:
    """backend.ray_address, else Ray's own RAY_API_SERVER_ADDRESS, else the local head."""
    return cfg.backend.ray_address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS


@dataclass
class MilesJob:
    """One submission of a MilesCommand to a Ray cluster's job API."""

    address: str  # http://<head>:<dashboard port>
    log_path: Path  # where the driver's output is streamed
    ray_cli: str = "ray"  # the `ray` executable (the one in the miles image by default)
    submission_id: str = field(default_factory=lambda: f"miles-hydra-{uuid.uuid4().hex[:12]}")
    stop_requested: bool = field(default=False, init=False)  # stop() was called

    def submit_argv(self, cmd: MilesCommand) -> list[str]:
        """The exact `ray job submit` command line (no secrets in it)."""
        runtime_env = json.dumps({"env_vars": cmd.env}, sort_keys=True)
        return [
            self.ray_cli,
            "job",
            "submit",
            "--no-wait",
            "--address",
            self.address,
            "--submission-id",
            self.submission_id,
            "--runtime-env-json",
            runtime_env,
            "--",
            "python3",
            cmd.entry,
            *cmd.argv,
        ]

    def submit(self, cmd: MilesCommand) -> None:
        argv = self.submit_argv(cmd)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.with_name("miles_command.sh").write_text(shlex.join(argv) + "\n")
        proc = self._ray(argv[1:], timeout_s=120)
        if proc.returncode != 0:
            raise ClusterError(
                f"ray job submit to {self.address} failed (exit {proc.returncode}): "
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        log.info("submitted miles job %s to %s", self.submission_id, self.address)

    def follow(self) -> int:
        """Stream the job's logs into log_path until it ends; return its exit status."""
        with open(self.log_path, "ab") as sink:
            follower = subprocess.Popen(
                [
                    self.ray_cli,
                    "job",
                    "logs",
                    "--follow",
                    "--address",
                    self.address,
                    self.submission_id,
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=_ray_env(),
            )
            follower.wait()
        return self.exit_status()

    def status(self) -> str:
        """The raw `ray job status` text."""
        proc = self._ray(["job", "status", "--address", self.address, self.submission_id], 120)
        return proc.stdout + proc.stderr

    def exit_status(self, timeout_s: float = 120.0) -> int:
        """0 if the job succeeded; its entry point's exit code if it failed; 143 if stopped."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.status()
            code = final_exit_status(text, self.submission_id)
            if code is not None:
                return code
            if time.monotonic() > deadline:
                raise ClusterError(f"miles job {self.submission_id} did not finish: {text[-1000:]}")
            time.sleep(1.0)

    def stop(self) -> None:
        """`ray job stop` for this submission (the driver and its Ray actors go with it)."""
        self.stop_requested = True
        log.warning("stopping miles job %s", self.submission_id)
        self._ray(["job", "stop", "--address", self.address, self.submission_id], 120)

    def _ray(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.ray_cli, *args], capture_output=True, text=True, timeout=timeout_s, env=_ray_env()
        )


def final_exit_status(status_text: str, submission_id: str) -> Optional[int]:
    """From `ray job status` output: 0 succeeded, the entry's exit code if failed, 143 stopped,
    None while the job is still pending/running."""
    final = re.search(
        rf"Job '{re.escape(submission_id)}' (succeeded|failed|was stopped)", status_text
    )
    if final is None:
        return None
    if final.group(1) == "succeeded":
        return 0
    if final.group(1) == "was stopped":
        return 143
    match = _EXIT_CODE.search(status_text)
    return int(match.group(1)) if match else 1


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")  # as our Ray bring-up (miles_hydra/cluster)
    return env


def run_command(
    cmd: MilesCommand, run_dir: Path, address: str, ray_cli: str = "ray"
) -> tuple[MilesJob, int]:
    """Submit `cmd`, follow it to the end, stop it on SIGTERM/SIGINT; (job, exit status)."""
    job = MilesJob(address=address, log_path=run_dir / "miles_job.log", ray_cli=ray_cli)
    job.submit(cmd)
    previous = _install_stop_handlers(job)
    try:
        return job, job.follow()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install_stop_handlers(job: MilesJob) -> dict[int, Any]:
    """SIGTERM/SIGINT -> ray job stop (the follower then sees the job end)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Optional[Any]) -> None:  # noqa: ARG001
        threading.Thread(target=job.stop, daemon=True).start()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def run_miles(cfg: RunConfig, run_dir: Path, ray_cli: str = "ray") -> dict[str, Any]:
    """The backend=miles job body: write a synthetic task's prompt files (run_dir must be on
    storage the Ray cluster shares, like its checkpoints), compile, submit, follow; raise
    TrainingError on failure."""
    if cfg.data.warmup_sft_steps:
        log.warning(
            "data.warmup_sft_steps=%d is a backend=local warm-start; miles starts RL from "
            "model.hf_checkpoint as is",
            cfg.data.warmup_sft_steps,
        )
    files = write_prompt_files(cfg, run_dir)
    if files is not None:
        log.info("wrote %d %s prompts to %s", num_train_prompts(cfg), cfg.data.task, files.train)
    run_prepare(cfg, run_dir)  # HF -> torch_dist conversion when needed (convert.py)
    cmd = compile_miles(cfg, str(run_dir))
    if not os.path.isabs(cmd.entry):  # backend.miles_entry relative to the launch directory
        cmd = dataclasses.replace(cmd, entry=os.path.abspath(cmd.entry))
    follower = EventFollower(
        run_dir / TENSORBOARD_SUBDIR,
        run_dir / METRICS_FILE,
        eval_name(cfg),
        cfg.rollout.num_steps_per_rollout,
    )
    with following(follower):
        job, code = run_command(cmd, run_dir, job_address(cfg), ray_cli)
    if code != 0:
        why = "was stopped" if job.stop_requested or code == 143 else f"exited with {code}"
        raise TrainingError(f"miles job {job.submission_id} {why}; driver log: {job.log_path}")
    return {
        "run_dir": str(run_dir),
        **final_metrics(read_records(run_dir / METRICS_FILE)),
        "exit_code": code,
        "submission_id": job.submission_id,
        "log": str(job.log_path),
    }
