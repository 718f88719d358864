"""Pre-submission checks: what validation cannot see from the config alone, checked against the
files, the Python path and the Slurm cluster before anything starts or is submitted.

- prompt files (``data.prompt_data``, ``data.eval_prompt_data``) exist, are readable and their
  first ``RECORDS_CHECKED`` records parse (errors as ``path:line:column``); an empty file fails;
- ``reward.custom_rm_path`` imports and can be called as ``fn(prompt, response, label)``;
- ``checkpoint.load`` (backend=local) holds an intact checkpoint;
- on ``cluster=slurm``: the partition, account and QOS exist (``sinfo``, ``sacctmgr``; skipped
  with a warning where those commands are absent), and ``backend=miles`` names the container
  image (or the interpreter) that has miles.

``cluster.check_paths=false`` skips the file checks, for paths only the cluster's nodes see.
``run_checks`` returns one :class:`Check` per item; ``passes`` (the launcher's gate, which then
exits 2) logs warnings and prints one line per failure; ``render_checks`` is the ``mode=plan``
section (every check shown; ``mode=plan`` then exits 2 if one failed, like the launcher);
``refuse_failed_variants`` is the sweep launcher's gate, once per distinct variant.
"""

from __future__ import annotations

import enum
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from miles_hydra.config import RunConfig
from miles_hydra.config.backend import BackendKind
from miles_hydra.config.data import DataSource
from miles_hydra.config.reward import RewardType
from miles_hydra.errors import ConfigError, DataError
from miles_hydra.tasks.files import read_prompt_file
from miles_hydra.tasks.reward import load_custom_reward

log = logging.getLogger(__name__)

RECORDS_CHECKED = 100  # prompt-file records parsed before submission
SLURM_TIMEOUT_S = 15.0  # a sinfo / sacctmgr query that takes longer is skipped with a warning
SKIP_PATHS = "cluster.check_paths=false"


class Status(enum.Enum):
    ok = "ok"
    skipped = "skipped"  # not checked here; the reason says why
    warning = "warning"  # could not be checked (a Slurm command is absent or failed)
    failed = "FAILED"


@dataclass(frozen=True)
class Check:
    key: str  # the config key checked
    status: Status
    detail: str  # what was checked, or why it failed (with the fix)


def run_checks(run: RunConfig) -> list[Check]:
    """Every pre-submission check of ``run``, in a fixed order."""
    return [
        *_file_checks(run),
        *_task_checks(run),
        *_reward_checks(run),
        *_checkpoint_checks(run),
        *_slurm_checks(run),
    ]


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status is Status.failed]


def render_checks(checks: list[Check]) -> str:
    """The ``mode=plan`` section: one line per check."""
    lines = ["# ---- checks ----"]
    lines += [f"{c.status.value:<8} {c.key}: {c.detail}" for c in checks]
    if not checks:
        lines.append("(nothing to check beyond validation)")
    if failed := failures(checks):
        lines.append(
            f"{len(failed)} check(s) failed: this config is refused (rc 2) until they pass; "
            f"{SKIP_PATHS} skips the file checks for paths only the cluster's nodes see"
        )
    return "\n".join(lines) + "\n"


def passes(run: RunConfig) -> bool:
    """The launcher's gate: log warnings, print one line per failure; False if any failed."""
    checks = run_checks(run)
    for c in checks:
        if c.status is Status.warning:
            log.warning("pre-submission check %s: %s", c.key, c.detail)
    return not report_failures(checks)


def report_failures(checks: list[Check]) -> list[Check]:
    """Print each failed check as one ``miles_hydra: check failed: ...`` line; return them."""
    failed = failures(checks)
    for c in failed:
        print(f"miles_hydra: check failed: {c.detail}", file=sys.stderr)
    return failed


def refuse_failed_variants(runs: Sequence[RunConfig], nums: Sequence[int]) -> None:
    """The sweep launcher's gate, before anything of the sweep runs or is submitted: the checks
    of every variant (once per distinct set of checked inputs: files, reward, checkpoint,
    cluster); SweepValidationError names each variant whose checks fail, with key and fix."""
    from miles_hydra.sweep.variants import SweepValidationError

    done: dict[str, list[Check]] = {}
    errors = []
    for num, run in zip(nums, runs):
        inputs = repr((run.data, run.reward, run.checkpoint, run.cluster, run.backend.kind))
        if inputs not in done:
            done[inputs] = run_checks(run)
            for c in done[inputs]:
                if c.status is Status.warning:
                    log.warning("pre-submission check %s: %s", c.key, c.detail)
        errors += [f"  variant #{num}: {c.detail}" for c in failures(done[inputs])]
    if errors:
        bad = len({line.split(":")[0] for line in errors})
        raise SweepValidationError(
            f"{bad} of {len(runs)} sweep variants fail their pre-submission checks; nothing was "
            "submitted:\n" + "\n".join(errors)
        )


# ---------------------------------------------------------------- files
def _file_checks(run: RunConfig) -> list[Check]:
    d = run.data
    keys = [("data.prompt_data", d.prompt_data if d.source is DataSource.file else None)]
    keys.append(("data.eval_prompt_data", d.eval_prompt_data))
    out = []
    for key, path in keys:
        if not path:
            continue
        if not run.cluster.check_paths:
            out.append(Check(key, Status.skipped, f"{path} ({SKIP_PATHS})"))
            continue
        out.append(_prompt_file_check(key, path, d.input_key, d.label_key))
    return out


def _prompt_file_check(key: str, path: str, input_key: str, label_key: str) -> Check:
    try:
        records = read_prompt_file(path, input_key, label_key, max_records=RECORDS_CHECKED)
    except DataError as exc:
        if "not found" in str(exc):
            fix = f"fix {key}, or set {SKIP_PATHS} if only the cluster's nodes see the file"
        elif "no records" in str(exc):
            fix = "give it at least one record"
        else:
            fix = "fix that record"
        return Check(key, Status.failed, str(ConfigError(key, path, f"is unusable: {exc}", fix)))
    return Check(key, Status.ok, f"{path}: first {len(records)} record(s) parse")


# ---------------------------------------------------------------- synthetic task
def _task_checks(run: RunConfig) -> list[Check]:
    """A synthetic task must have the held-out eval problems and training problems beside
    them (the prompt source builds both at the start of the run)."""
    from miles_hydra.tasks.source import draw_problem, held_out_problems
    from miles_hydra.tasks.synthetic import build_task

    d = run.data
    if d.source is not DataSource.synthetic:
        return []
    key = "data.num_eval_prompts"
    try:
        task = build_task(d.task, d.task_kwargs)
        held_out = {text for text, _ in held_out_problems(d, task, run.seed)}
        draw_problem(d, task, run.seed, held_out, "train", 0)
    except ConfigError as exc:
        return [Check(exc.key, Status.failed, str(exc))]
    return [
        Check(key, Status.ok, f"task {task.name}: {len(held_out)} problem(s) held out for eval")
    ]


# ---------------------------------------------------------------- reward
def _reward_checks(run: RunConfig) -> list[Check]:
    path = run.reward.custom_rm_path
    if run.reward.rm_type is not RewardType.custom or not path:
        return []
    key = "reward.custom_rm_path"
    try:
        load_custom_reward(path)
    except ConfigError as exc:
        if exc.why and not exc.fix:  # every refusal says what to do
            fix = "point it at 'module:function' where function(prompt, response, label) -> float"
            exc = ConfigError(exc.key, exc.value, exc.why, fix)
        return [Check(key, Status.failed, str(exc))]
    except Exception as exc:  # the user's module raised while being imported
        why = f"raised {type(exc).__name__} while importing: {exc}"
        error = ConfigError(key, path, why, "fix the module so that it imports")
        return [Check(key, Status.failed, str(error))]
    return [Check(key, Status.ok, f"{path} imports and takes (prompt, response, label)")]


# ---------------------------------------------------------------- checkpoint
def _checkpoint_checks(run: RunConfig) -> list[Check]:
    c = run.checkpoint
    key = "checkpoint.load"
    if not c.load:
        return []
    if run.backend.kind is not BackendKind.local:
        return [Check(key, Status.skipped, f"{c.load} (miles/Megatron checks its own --load)")]
    if c.save and Path(c.load) == Path(c.save):
        return [Check(key, Status.skipped, f"{c.load} is also checkpoint.save (may start empty)")]
    if not run.cluster.check_paths:
        return [Check(key, Status.skipped, f"{c.load} ({SKIP_PATHS})")]
    from miles_hydra.backends.local import checkpoint  # imports torch: only when it is needed

    try:
        found = checkpoint.find_latest(Path(c.load), checksums=False)
    except checkpoint.CheckpointError as exc:
        fix = "point it at an intact checkpoint, or delete the damaged ones"
        return [
            Check(key, Status.failed, str(ConfigError(key, c.load, f"is unusable: {exc}", fix)))
        ]
    if found is None:
        why = "holds no checkpoint (no step_* directory with driver.pt)"
        fix = "point it at a checkpoint directory or its parent, or set it to null"
        return [Check(key, Status.failed, str(ConfigError(key, c.load, why, fix)))]
    return [Check(key, Status.ok, f"resumes from {found}")]


# ---------------------------------------------------------------- Slurm
def _slurm_checks(run: RunConfig) -> list[Check]:
    cl = run.cluster
    if not cl.is_slurm:
        return []
    out = []
    if cl.partition:
        out.append(
            _slurm_exists(
                "cluster.partition", cl.partition, ["sinfo", "-h", "-o", "%R", "-p", cl.partition]
            )
        )
    for key, what, value in (
        ("cluster.account", "account", cl.account),
        ("cluster.qos", "qos", cl.qos),
    ):
        if value:
            argv = ["sacctmgr", "-n", "-P", "show", what, value, "format=name"]
            out.append(_slurm_exists(key, value, argv))
    if run.backend.kind is BackendKind.miles:
        out.append(_miles_image_check(run))
    return out


def _slurm_exists(key: str, value: str, argv: list[str]) -> Check:
    if shutil.which(argv[0]) is None:
        return Check(key, Status.warning, f"{value} not checked: {argv[0]} is not installed here")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(key, Status.warning, f"{value} not checked: {argv[0]} failed ({exc})")
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        return Check(key, Status.warning, f"{value} not checked: {argv[0]}: {' '.join(why[:1])}")
    names = {line.strip() for line in proc.stdout.splitlines() if line.strip()}
    if value in names:
        return Check(key, Status.ok, f"{value} exists")
    known = _known(argv[0], key)
    fix = f"use one of {', '.join(known)}" if known else f"check the name with {argv[0]}"
    return Check(
        key, Status.failed, str(ConfigError(key, value, "does not exist on this cluster", fix))
    )


def _known(command: str, key: str) -> list[str]:
    """The partitions / accounts / QOS that do exist, for the fix."""
    if key == "cluster.partition":
        argv = ["sinfo", "-h", "-o", "%R"]
    else:
        argv = ["sacctmgr", "-n", "-P", "show", key.split(".")[1], "format=name"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def _miles_image_check(run: RunConfig) -> Check:
    key = "cluster.container_image"
    if run.cluster.container_image:
        return Check(key, Status.ok, f"{run.cluster.container_image} (miles runs in it)")
    if run.cluster.python:
        return Check(key, Status.skipped, f"none; cluster.python={run.cluster.python} has miles")
    error = ConfigError(
        key,
        None,
        "is required for backend=miles on Slurm: miles, Megatron and SGLang live in its image",
        "set cluster.container_image=<image with miles> (see docker/), or cluster.python="
        "<interpreter on the nodes that has miles>",
    )
    return Check(key, Status.failed, str(error))
