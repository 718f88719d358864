"""Pre-submission checks: a corpus of bad inputs, each refused by the real ``python launch.py``
with rc 2, one line naming the key and the fix, no traceback and nothing submitted; plus the
checks in-process (fast) and the ``mode=plan`` checks section."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_fast, materialize

from miles_hydra.launch import preflight
from miles_hydra.launch.preflight import Status

REPO = Path(__file__).resolve().parents[2]
GOOD = '{"prompt": "1+2=", "label": "3"}\n{"prompt": "2+2=", "label": "4"}\n'
REWARDS = """
def score(prompt, response, label):
    return 1.0

def two_args(prompt, response):
    return 1.0
"""


def _slurm_answers() -> str:
    """Why the Slurm cases cannot run here, or ''."""
    if shutil.which("sinfo") is None or shutil.which("squeue") is None:
        return "no Slurm here (sinfo not found); run: bash scripts/slurm_single_node.sh up"
    proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=20)
    return "" if proc.returncode == 0 else f"sinfo fails: {proc.stderr.strip()}"


NO_SLURM = _slurm_answers()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Good and bad prompt files, a reward module and a directory without a checkpoint."""
    (tmp_path / "good.jsonl").write_text(GOOD)
    (tmp_path / "line3.jsonl").write_text(GOOD + '{"prompt": "3+3=", "label": "6"\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    (tmp_path / "nokey.jsonl").write_text('{"question": "1+2=", "label": "3"}\n')
    (tmp_path / "rewards_mod.py").write_text(REWARDS)
    (tmp_path / "no_ckpt").mkdir()
    return tmp_path


def _beyond_the_task(run) -> list[preflight.Check]:
    """The checks of ``run`` but the synthetic task's (tests of the other checks)."""
    return [c for c in preflight.run_checks(run) if c.key != "data.num_eval_prompts"]


def _jsonl(name: str) -> list[str]:
    return ["data=jsonl", "reward.rm_type=exact_match", f"data.prompt_data={{d}}/{name}"]


CORPUS = {
    "missing_file": (
        _jsonl("missing.jsonl"),
        "data.prompt_data='{d}/missing.jsonl' is unusable: {d}/missing.jsonl: prompt file not "
        "found",
    ),
    "malformed_line3": (_jsonl("line3.jsonl"), "{d}/line3.jsonl:3:32: invalid JSON"),
    "empty_jsonl": (_jsonl("empty.jsonl"), "{d}/empty.jsonl: the prompt file has no records"),
    "blank_jsonl": (_jsonl("blank.jsonl"), "{d}/blank.jsonl: the prompt file has no records"),
    "missing_key": (_jsonl("nokey.jsonl"), "{d}/nokey.jsonl:line 1: no 'prompt' field"),
    "missing_eval_file": (
        [*_jsonl("good.jsonl"), "data.eval_prompt_data={d}/nope.jsonl"],
        "data.eval_prompt_data='{d}/nope.jsonl' is unusable",
    ),
    "reward_module_missing": (
        ["reward=custom", "reward.custom_rm_path=nonexistent.mod:fn"],
        "reward.custom_rm_path='nonexistent.mod:fn' names module 'nonexistent.mod' that cannot "
        "be imported",
    ),
    "reward_function_missing": (
        ["reward=custom", "reward.custom_rm_path=rewards_mod:nope"],
        "reward.custom_rm_path='rewards_mod:nope' names 'nope', which module",
    ),
    "reward_wrong_signature": (
        ["reward=custom", "reward.custom_rm_path=rewards_mod:two_args"],
        "reward.custom_rm_path='rewards_mod:two_args' takes (prompt, response), so it cannot be "
        "called as fn(prompt, response, label)",
    ),
    "checkpoint_load_empty_dir": (
        ["checkpoint.load={d}/no_ckpt"],
        "checkpoint.load='{d}/no_ckpt' holds no checkpoint",
    ),
}


def _fill(items: list[str], d: Path) -> list[str]:
    return [item.format(d=d) for item in items]


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_checks_refuse_each_bad_input(inputs: Path, case: str, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(inputs))
    overrides, message = CORPUS[case]
    checks = preflight.run_checks(materialize(compose_fast(_fill(overrides, inputs))))
    failed = preflight.failures(checks)
    assert len(failed) == 1, checks
    assert message.format(d=inputs) in failed[0].detail


def test_good_inputs_pass(inputs: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(inputs))
    overrides = [
        "data=jsonl",
        f"data.prompt_data={inputs}/good.jsonl",
        f"data.eval_prompt_data={inputs}/good.jsonl",
        "reward=custom",
        "reward.custom_rm_path=rewards_mod:score",
    ]
    checks = preflight.run_checks(materialize(compose_fast(overrides)))
    assert [(c.key, c.status) for c in checks] == [
        ("data.prompt_data", Status.ok),
        ("data.eval_prompt_data", Status.ok),
        ("reward.custom_rm_path", Status.ok),
    ]
    (task,) = preflight.run_checks(materialize(compose_fast([])))  # synthetic: the task's own
    assert (task.key, task.status) == ("data.num_eval_prompts", Status.ok)


def test_check_paths_false_skips_the_file_checks(inputs: Path) -> None:
    overrides = [
        *_fill(_jsonl("missing.jsonl"), inputs),
        f"checkpoint.load={inputs}/no_ckpt",
        "cluster.check_paths=false",
    ]
    checks = preflight.run_checks(materialize(compose_fast(overrides)))
    assert [c.status for c in checks] == [Status.skipped, Status.skipped]
    assert all("cluster.check_paths=false" in c.detail for c in checks)


def test_checkpoint_load_holding_a_checkpoint_passes(tmp_path: Path) -> None:
    import torch

    from miles_hydra.backends.local import checkpoint

    def write(tmp: Path) -> None:
        (tmp / checkpoint.MODEL_DIR).mkdir()
        torch.save({}, tmp / checkpoint.TRAINER_FILE)

    path = checkpoint.save(tmp_path, 3, {}, write, keep_last=2)
    run = materialize(compose_fast([f"checkpoint.load={tmp_path}"]))
    (check,) = _beyond_the_task(run)
    assert check.status is Status.ok and str(path) in check.detail
    (path / checkpoint.DRIVER_FILE).write_bytes(b"x")  # damaged: the only one
    (check,) = _beyond_the_task(run)
    assert check.status is Status.failed
    assert f"every checkpoint under {tmp_path} is damaged" in check.detail


def test_miles_on_slurm_needs_an_image() -> None:
    miles = ["model=qwen3_4b", "parallelism=tp8", "precision=bf16", "cluster=slurm"]
    miles += ["cluster.gpus_per_node=8"]
    checks = preflight.run_checks(materialize(compose_fast(miles)))
    (image,) = [c for c in checks if c.key == "cluster.container_image"]
    assert image.status is Status.failed
    assert "set cluster.container_image=" in image.detail
    with_image = materialize(compose_fast([*miles, "cluster.container_image=miles-hydra:v0.1.0"]))
    assert preflight.failures(preflight.run_checks(with_image)) == []


def test_slurm_commands_absent_is_a_warning(monkeypatch) -> None:
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    run = materialize(compose_fast(["cluster=slurm", "cluster.partition=gpu", "cluster.qos=high"]))
    checks = _beyond_the_task(run)
    assert [(c.key, c.status) for c in checks] == [
        ("cluster.partition", Status.warning),
        ("cluster.qos", Status.warning),
    ]
    assert "sinfo is not installed here" in checks[0].detail


@pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM)
@pytest.mark.parametrize("key", ["partition", "account", "qos"])
def test_real_slurm_refuses_unknown_names(key: str) -> None:
    run = materialize(compose_fast(["cluster=slurm", f"cluster.{key}=nonexistent_{key}"]))
    (check,) = _beyond_the_task(run)
    assert check.status is Status.failed
    assert f"cluster.{key}='nonexistent_{key}' does not exist on this cluster" in check.detail


@pytest.mark.skipif(bool(NO_SLURM), reason=NO_SLURM)
def test_real_slurm_accepts_existing_partition() -> None:
    partition = subprocess.run(
        ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20
    ).stdout.split()[0]
    run = materialize(compose_fast(["cluster=slurm", f"cluster.partition={partition}"]))
    assert [c.status for c in _beyond_the_task(run)] == [Status.ok]


# ---------------------------------------------------------------- the real CLI
def _squeue() -> str:
    if shutil.which("squeue") is None:
        return ""
    argv = ["squeue", "-h", "-u", os.environ.get("USER", "root"), "-o", "%i %j"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def _launch(args: list[str], cwd: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args, f"output_root={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


CLI_CASES = {
    **CORPUS,
    "slurm_partition": (
        ["cluster=slurm", "cluster.partition=nonexistent", "cluster.wait=false"],
        "cluster.partition='nonexistent' does not exist on this cluster; use one of",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_refuses_before_submitting(inputs: Path, case: str) -> None:
    if case.startswith("slurm") and NO_SLURM:
        pytest.skip(NO_SLURM)
    overrides, message = CLI_CASES[case]
    out = inputs / "runs"
    before = _squeue()
    proc = _launch(_fill(overrides, inputs), inputs, out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("miles_hydra: check failed: ")
    assert message.format(d=inputs) in lines[0]
    assert "; " in lines[0]  # the fix follows the why
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _squeue() == before  # nothing submitted
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_plan_shows_the_checks(inputs: Path) -> None:
    """mode=plan shows every check, and exits 2 like the launcher when one fails."""
    out = inputs / "runs"
    proc = _launch([*_fill(_jsonl("good.jsonl"), inputs), "mode=plan"], inputs, out)
    assert proc.returncode == 0, proc.stderr
    assert "# ---- checks ----" in proc.stdout
    assert f"ok       data.prompt_data: {inputs}/good.jsonl: first 2 record(s) parse" in proc.stdout
    proc = _launch([*_fill(_jsonl("line3.jsonl"), inputs), "mode=plan"], inputs, out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"FAILED   data.prompt_data: data.prompt_data='{inputs}/line3.jsonl'" in proc.stdout
    assert f"{inputs}/line3.jsonl:3:32: invalid JSON" in proc.stdout
    assert "1 check(s) failed: this config is refused (rc 2)" in proc.stdout


def test_sweep_refuses_a_variant_whose_checks_fail(inputs: Path) -> None:
    """Every variant of a sweep is checked before any runs: the bad one is named, rc 2."""
    out = inputs / "runs"
    good, missing = inputs / "good.jsonl", inputs / "missing.jsonl"
    args = ["-m", "data=jsonl", "reward.rm_type=exact_match", f"data.prompt_data={good},{missing}"]
    before = _squeue()
    proc = _launch(args, inputs, out)
    assert proc.returncode == 2, proc.stderr
    assert "1 of 2 sweep variants fail their pre-submission checks" in proc.stderr
    assert f"variant #1: data.prompt_data='{missing}' is unusable" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _squeue() == before
    assert not list(out.rglob("sweep.json")) if out.exists() else True  # refused before its dir


def test_synthetic_task_with_too_few_problems_is_refused_before_the_run() -> None:
    """One-digit addition has 100 distinct problems: holding out 500 is refused up front, with
    the key; the default task passes and says how many problems it holds out."""
    run = materialize(compose_fast(["data.num_eval_prompts=500", "data.task_kwargs.max_digits=1"]))
    (check,) = [c for c in preflight.run_checks(run) if c.key.startswith("data.")]
    assert check.status is Status.failed and check.key == "data.num_eval_prompts"
    assert "found 100" in check.detail and "lower data.num_eval_prompts" in check.detail
    (ok,) = [
        c for c in preflight.run_checks(materialize(compose_fast([]))) if c.key.startswith("data.")
    ]
    assert ok.status is Status.ok and "64 problem(s) held out for eval" in ok.detail
