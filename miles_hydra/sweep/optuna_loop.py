"""Asynchronous Optuna: an ask/tell loop that keeps ``max_concurrent`` trials running.

No batch barrier: as soon as one trial's job ends, its value is told to the study and the next
trial is asked and submitted. While trials run, each one's live ``metrics.jsonl`` feeds the
pruner (``trial.report``); a trial the pruner stops gets a prune request (:mod:`prune`): the
job checkpoints at the next rollout boundary and ends without a requeue, its ``status.json``
says ``pruned``, and the study records it as PRUNED.

The study lives in SQLite storage in the sweep directory (``optuna.db``), with each trial's
overrides, Slurm job id and run directory as user attributes, so a launcher that died is
resumed by launching again with the same ``hydra.sweep.dir``: running trials are re-attached
to their jobs (or, if their job ended meanwhile, told its result), trials asked but never
submitted are submitted once, and the loop continues until ``n_trials`` have ended.

Everything that knows Hydra or submitit comes in through :class:`TrialRunner`
(``hydra_plugins/miles_hydra_launcher/optuna_sweeper.py``), so this loop is plain Optuna.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from miles_hydra.sweep import prune
from miles_hydra.sweep.manifest import Manifest, Variant, read_status, write_status
from miles_hydra.sweep.report import metric_curve, pick_metric, read_metrics

log = logging.getLogger(__name__)

STORAGE_FILE = "optuna.db"  # the study, in the sweep directory
ATTR_OVERRIDES = "overrides"  # trial user attributes
ATTR_JOB = "job_id"
ATTR_RUN_DIR = "run_dir"
ATTR_METRIC = "metric"


class TrialInvalid(Exception):
    """A trial's config is refused by validation; it is never submitted."""


class TrialRunner(Protocol):
    """Submits one trial and follows its job (Slurm or a local subprocess)."""

    def validate(self, num: int, overrides: list[str]) -> str:
        """Compose and validate the trial's config; the metric it is judged on. Raises
        :class:`TrialInvalid` with the message when refused."""

    def submit(self, num: int, overrides: list[str], job_name: str) -> str:
        """Submit the trial's job; its job id."""

    def find(self, job_name: str) -> str | None:
        """The job id of a job submitted under ``job_name`` (resume after a crash between
        submitting and recording it), or None."""

    def poll(self, job_id: str) -> str:
        """``running`` (pending counts), ``done`` or ``failed: <why>``."""

    def result(self, job_id: str) -> float | None:
        """The objective the ended job returned (None: none)."""


@dataclass
class LoopSettings:
    study_name: str  # the Optuna study (and Slurm job names' prefix)
    direction: str  # maximize | minimize
    n_trials: int  # trials to end (complete, pruned or failed)
    max_concurrent: int  # trials running at once
    poll_s: float = 2.0  # seconds between looks at the running trials


@dataclass
class _Running:
    trial: optuna.trial.Trial
    job_id: str
    run_dir: Path
    metric: str
    reported: set[int] = field(default_factory=set)  # steps already told to the pruner
    pruned: bool = False  # a prune request was sent


def storage_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / STORAGE_FILE).resolve()}"


def load_or_create_study(
    sweep_dir: Path,
    settings: LoopSettings,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=settings.study_name,
        storage=storage_url(sweep_dir),
        sampler=sampler,
        pruner=pruner,
        direction=settings.direction,
        load_if_exists=True,
    )


class AsyncStudy:
    """The ask/tell loop over one study (see the module doc)."""

    def __init__(
        self,
        study: optuna.Study,
        sweep_dir: Path,
        settings: LoopSettings,
        distributions: dict[str, optuna.distributions.BaseDistribution],
        fixed_overrides: Sequence[str],
        runner: TrialRunner,
        manifest: Manifest,
    ) -> None:
        self.study, self.sweep_dir, self.settings = study, sweep_dir, settings
        self.distributions = distributions
        self.fixed = list(fixed_overrides)
        self.runner = runner
        self.manifest = manifest
        self.running: dict[int, _Running] = {}
        self.n_asked: int | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> optuna.Study:
        self._resume()
        while True:
            self._follow_running()
            self._fill_slots()
            if not self.running and self._asked() >= self.settings.n_trials:
                break
            time.sleep(self.settings.poll_s)
        return self.study

    def _asked(self) -> int:
        """Trials asked so far (enqueued ones still WAITING are not); read once, then counted."""
        if self.n_asked is None:
            trials = self.study.get_trials(deepcopy=False)
            self.n_asked = sum(t.state is not TrialState.WAITING for t in trials)
        return self.n_asked

    def _fill_slots(self) -> None:
        while (
            len(self.running) < self.settings.max_concurrent
            and self._asked() < self.settings.n_trials
        ):
            trial = self.study.ask(self.distributions)
            self.n_asked = self._asked() + 1
            self._start(trial)

    def _start(self, trial: optuna.trial.Trial) -> None:
        num = trial.number
        overrides = [*self.fixed, *(param_override(k, v) for k, v in trial.params.items())]
        trial.set_user_attr(ATTR_OVERRIDES, overrides)
        try:
            metric = self.runner.validate(num, overrides)
        except TrialInvalid as exc:
            log.error("trial %d is invalid, not submitted: %s", num, exc)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        job_id = self.runner.submit(num, overrides, self._job_name(num))
        self._record(trial, num, overrides, job_id, metric)

    def _record(
        self,
        trial: optuna.trial.Trial,
        num: int,
        overrides: list[str],
        job_id: str,
        metric: str,
        reported: set[int] | None = None,
    ) -> None:
        run_dir = self.sweep_dir / str(num)
        trial.set_user_attr(ATTR_JOB, job_id)
        trial.set_user_attr(ATTR_RUN_DIR, str(num))
        trial.set_user_attr(ATTR_METRIC, metric)
        self.running[num] = _Running(trial, job_id, run_dir, metric, set(reported or ()))
        if all(v.num != num for v in self.manifest.variants):
            self.manifest.variants.append(Variant(num=num, overrides=overrides, run_dir=str(num)))
            self.manifest.write(self.sweep_dir)
        log.info("trial %d submitted as job %s: %s", num, job_id, " ".join(overrides))

    def _job_name(self, num: int) -> str:
        return f"{self.settings.study_name}_t{num}"

    # ------------------------------------------------------------------ running trials
    def _follow_running(self) -> None:
        for num, run in list(self.running.items()):
            self._report_progress(run)
            state = self.runner.poll(run.job_id)
            if state == "running":
                continue
            del self.running[num]
            self._finish(run, state)

    def _report_progress(self, run: _Running) -> None:
        """Tell the pruner the trial's new steps; send a prune request when it says so."""
        records = read_metrics(run.run_dir)
        run.metric = run.metric or (pick_metric(records) if records else "")
        curve = metric_curve(records, run.metric) if run.metric else []
        new = [(step, value) for step, value in curve if step not in run.reported]
        for step, value in new:
            run.trial.report(value, step)
            run.reported.add(step)
        if new and not run.pruned and run.trial.should_prune():
            step, value = curve[-1]
            prune.request(run.run_dir, step=step, value=value)
            run.pruned = True
            log.info(
                "trial %d pruned at step %d (%s=%.4g)", run.trial.number, step, run.metric, value
            )

    def _finish(self, run: _Running, state: str) -> None:
        num = run.trial.number
        if run.pruned or prune.requested(run.run_dir):
            self.study.tell(run.trial, state=TrialState.PRUNED)
            return
        if state != "done":
            log.error("trial %d (job %s) %s", num, run.job_id, state)
            if read_status(run.run_dir).get("state") in ("pending", "running"):
                write_status(run.run_dir, "failed", error=state, job_id=run.job_id)
            self.study.tell(run.trial, state=TrialState.FAIL)
            return
        value = self.runner.result(run.job_id)
        if value is None:
            log.error("trial %d (job %s) returned no objective", num, run.job_id)
            self.study.tell(run.trial, state=TrialState.FAIL)
            return
        self.study.tell(run.trial, value)
        log.info("trial %d done: %s=%.4g", num, run.metric, value)

    # ------------------------------------------------------------------ resume
    def _resume(self) -> None:
        """Re-attach the trials a previous launcher left RUNNING."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            attrs = frozen.user_attrs
            num = frozen.number
            overrides = attrs.get(ATTR_OVERRIDES)
            if overrides is None:  # asked, never got as far as its overrides: start it now
                self._start(trial)
                continue
            job_id = attrs.get(ATTR_JOB) or self.runner.find(self._job_name(num))
            if job_id is None:  # validated but never submitted
                self._start(trial)
                continue
            metric = attrs.get(ATTR_METRIC) or self.runner.validate(num, overrides)
            self._record(trial, num, overrides, job_id, metric, set(frozen.intermediate_values))
            log.info("trial %d re-attached to job %s", num, job_id)


def param_override(key: str, value: Any) -> str:
    """A sampled value as a Hydra override (floats at full precision, bools lower-case)."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts per state and the best trial (of the completed ones)."""
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    return {
        "states": states,
        "best": None
        if best is None
        else {"trial": best.number, "params": best.params, "value": best.value},
    }
