"""Rules only backend=miles has, run when the RunConfig is materialized (before any submission).

``miles_hydra.config.validate._check_miles_backend`` calls ``validate_for_miles``; the compiler
calls it again, so a config built without validation still cannot compile into a bad command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miles_hydra.config.algorithm import CorrectionKind
from miles_hydra.config.data import DataSource
from miles_hydra.config.reward import RewardType
from miles_hydra.errors import ConfigError
from miles_hydra.tasks.synthetic import build_task

if TYPE_CHECKING:
    from miles_hydra.config.run import RunConfig

# Secrets reach the job only through the environment of the processes that run it.
SECRET_ENV_KEYS = ("WANDB_API_KEY",)
# miles' built-in reward functions that our reward.rm_type names map onto one-to-one.
MILES_RM_TYPES = (
    RewardType.math,
    RewardType.dapo,
    RewardType.deepscaler,
    RewardType.f1,
    RewardType.gpqa,
    RewardType.remote_rm,
)
# Ours, run inside miles through --custom-rm-path (miles_hydra.backends.miles.rewards).
OUR_RM_TYPES = (RewardType.task, RewardType.custom)


def validate_for_miles(cfg: RunConfig) -> None:
    """Raise ConfigError for what the miles backend cannot run."""
    _check_reward(cfg)
    r = cfg.rollout
    synthetic = cfg.data.source is DataSource.synthetic
    if r.eval_interval is not None and not synthetic and not cfg.data.eval_prompt_data:
        raise ConfigError(
            "rollout.eval_interval",
            r.eval_interval,
            "needs data.eval_prompt_data with backend=miles (miles evaluates prompt files)",
            "set data.eval_prompt_data=<file.jsonl> or rollout.eval_interval=null",
        )
    a = cfg.algorithm
    if r.async_training and not a.use_rollout_logprobs and a.correction.kind is CorrectionKind.none:
        raise ConfigError(
            "rollout.async_training",
            True,
            "trains one step off-policy; miles train_async.py needs an off-policy correction",
            "set algorithm.correction=tis (or algorithm.use_rollout_logprobs=true)",
        )
    for key in SECRET_ENV_KEYS:
        if key in cfg.backend.env:
            raise ConfigError(
                f"backend.env.{key}",
                "<redacted>",
                "must not be in the config",
                f"export {key} in your environment; the job inherits it",
            )


def _check_reward(cfg: RunConfig) -> None:
    """Synthetic tasks are scored by our verifier (or yours); prompt files by any miles RM."""
    rm_type, d = cfg.reward.rm_type, cfg.data
    if rm_type not in (*MILES_RM_TYPES, *OUR_RM_TYPES):
        raise ConfigError(
            "reward.rm_type",
            rm_type.value,
            "has no miles equivalent",
            f"use one of {', '.join(t.value for t in MILES_RM_TYPES)}, reward=task (synthetic "
            "data) or reward=custom",
        )
    if d.source is DataSource.synthetic:
        build_task(d.task, d.task_kwargs)  # unknown task or knobs: ConfigError now, not in the job
        if rm_type not in OUR_RM_TYPES:
            raise ConfigError(
                "reward.rm_type",
                rm_type.value,
                f"cannot score the synthetic task {d.task} on backend=miles (its labels carry "
                "the task, which miles' built-in reward functions do not read)",
                "use reward=task (the task's verifier) or reward=custom",
            )
    elif rm_type is RewardType.task:
        raise ConfigError(
            "reward.rm_type",
            rm_type.value,
            f"needs a synthetic task, but data.source={d.source.value}",
            "use reward=math (or another miles reward type) or reward=custom for prompt files",
        )
