"""A sweep's job array is built like a single run's job: the same sbatch parameters, requeue
limit and python. No Slurm daemon needed: a stand-in ``sbatch`` on PATH answers with a job id,
everything else is submitit's real array submission (``map_array``) as the launcher runs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import submitit
from conftest import compose_config, materialize

from miles_hydra.cluster.submit import make_executor, sbatch_script
from miles_hydra.sweep.manifest import Manifest
from miles_hydra.sweep.variants import SweepPlan, array_executor, submit_array

PYTHON = "/opt/mh-venv/bin/python3"  # a configured interpreter, not this process's
ARRAY_ID = "4242"

pytestmark = pytest.mark.skipif(
    not any(os.access(Path(d) / "srun", os.X_OK) for d in os.environ["PATH"].split(os.pathsep)),
    reason="submitit's SlurmExecutor needs srun on PATH (bash scripts/slurm_single_node.sh up)",
)


def _variant(num: int) -> int:  # what each array task would run (never runs here)
    return num


def _plan(tmp_path: Path, *overrides: str) -> SweepPlan:
    runs = [
        materialize(
            compose_config(["cluster=slurm", *overrides, f"seed={seed}"], output_root=tmp_path)
        )
        for seed in (1, 2)
    ]
    manifest = Manifest(sweep_id="s", experiment_name="exp", swept=["seed"], scheduler="slurm")
    return SweepPlan(manifest, [0, 1], runs, "slurm", tmp_path)


def _array_script(folder: Path) -> str:
    """The script the stand-in sbatch was given for the array."""
    return submitit.core.utils.JobPaths(folder, job_id=ARRAY_ID).submission_file.read_text()


def _fake_sbatch_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho 'Submitted batch job {ARRAY_ID}'\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_sweep_array_carries_requeue_limit_and_python_with_sbatch_faked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_sbatch_on_path(tmp_path, monkeypatch)
    plan = _plan(tmp_path, "cluster.max_num_requeue=7", f"cluster.python={PYTHON}")
    folder = tmp_path / ".submitit" / "%j"
    executor = array_executor(plan, folder)
    assert executor.max_num_timeout == 7 and executor.python == PYTHON
    assert f"{PYTHON} -u -m submitit.core._submit" in sbatch_script(executor)

    jobs = submit_array(plan, _variant, [(0,), (1,)], folder)

    assert [job.job_id for job in jobs] == [f"{ARRAY_ID}_0", f"{ARRAY_ID}_1"]  # one array
    script = _array_script(folder)
    assert "#SBATCH --array=0-1%2" in script  # both at once: min(2, cluster.array_parallelism)
    assert "#SBATCH --requeue" in script and "#SBATCH --signal=USR2@90" in script
    assert f" {PYTHON} -u -m submitit.core._submit " in script
    for num, job in enumerate(jobs):
        submitted = submitit.helpers.DelayedSubmission.load(job.paths.submitted_pickle)
        assert submitted.args == (num,)
        assert submitted._timeout_countdown == 7  # requeues submitit allows after a timeout
    assert Manifest.read(tmp_path).array_job_id == ARRAY_ID


def test_sweep_array_script_is_a_single_runs_plus_the_array_with_sbatch_faked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One builder: the sweep's sbatch script is what a single run's executor renders, plus
    ``--array`` and per-task log paths."""
    _fake_sbatch_on_path(tmp_path, monkeypatch)
    plan = _plan(tmp_path, "cluster.mem_gb=4", "cluster.array_parallelism=1")
    folder = tmp_path / ".submitit" / "%j"
    submit_array(plan, _variant, [(0,), (1,)], folder)
    single = sbatch_script(make_executor(plan.runs[0].cluster, folder, "miles_hydra"))
    expected = single.replace("# Parameters\n", "# Parameters\n#SBATCH --array=0-1%1\n")
    assert _array_script(folder) == expected.replace("%j/%j_", "%A_%a/%A_%a_")
