"""Compile a RunConfig into miles' command line: entry point, argv, job environment.

``compile_miles`` is pure (no I/O, no environment reads): the same config gives the same
command, which is what the golden files under tests/miles/golden pin. ``plan_values`` is what
our config says miles will derive; the oracle compares the two (tests/miles/test_oracle.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.config.algorithm import AdvantageEstimator, CorrectionKind
from miles_hydra.config.data import DataSource
from miles_hydra.config.run import RunConfig
from miles_hydra.config.speculative import SpecMode
from miles_hydra.errors import ConfigError
from miles_hydra.miles import sections
from miles_hydra.miles.model_args import model_args

# Secrets reach the job only through the environment of the processes that run it.
SECRET_ENV_KEYS = ("WANDB_API_KEY",)
# miles' built-in reward functions that our reward.rm_type names map onto one-to-one.
MILES_RM_TYPES = ("math", "dapo", "deepscaler", "f1", "gpqa", "remote_rm")


@dataclass(frozen=True)
class MilesCommand:
    """What the job runs: ``python3 <entry> <argv...>`` under ``env`` on the Ray cluster."""

    entry: str  # train.py (synchronous) or train_async.py (one-step off-policy), full path
    argv: list[str]  # every flag and value, unquoted
    env: dict[str, str] = field(default_factory=dict)  # job runtime env (no secrets)
    secret_env_keys: tuple[str, ...] = SECRET_ENV_KEYS  # passed through from the environment


def compile_miles(cfg: RunConfig, run_dir: Optional[str] = None) -> MilesCommand:
    """The miles command for `cfg`; raises ConfigError for what miles cannot run."""
    validate_for_miles(cfg)
    run_dir = run_dir or f"{cfg.output_root}/{cfg.experiment_name}"
    argv = [
        *model_args(cfg.model),
        *sections.checkpoint_args(cfg, run_dir),
        *sections.data_args(cfg),
        *sections.rollout_args(cfg),
        *sections.eval_args(cfg),
        *sections.algorithm_args(cfg),
        *sections.optimizer_args(cfg),
        *sections.parallelism_args(cfg),
        *sections.recipe_args(cfg),
        *sections.precision_args(cfg),
        *sections.speculative_args(cfg),
        *sections.sglang_args(cfg),
        *sections.logging_args(cfg),
        *cfg.backend.extra_args,
    ]
    script = "train_async.py" if cfg.rollout.async_training else "train.py"
    entry = f"{cfg.backend.miles_root.rstrip('/')}/{script}"
    return MilesCommand(entry=entry, argv=argv, env=job_env(cfg))


def job_env(cfg: RunConfig) -> dict[str, str]:
    """The job's runtime env: Megatron/miles requirements, precision recipe, user extras."""
    b = cfg.backend
    env = {
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # Megatron asserts it for TP/CP > 1 before Blackwell
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{b.megatron_path}:{b.miles_root}",
        "NCCL_CUMEM_ENABLE": "0",
    }
    env.update(cfg.precision.env)  # FP8 block scaling / INT4 QAT switches
    env.update(b.env)
    for key in SECRET_ENV_KEYS:
        if key in env:
            raise ConfigError(
                f"backend.env.{key}",
                "<redacted>",
                "must not be in the config",
                f"export {key} in your environment; the job inherits it",
            )
    return {k: str(v) for k, v in env.items()}


def secret_env(cmd: MilesCommand) -> dict[str, str]:
    """The secrets to hand to the job's processes, read from our environment at submit time."""
    return {k: os.environ[k] for k in cmd.secret_env_keys if os.environ.get(k)}


def validate_for_miles(cfg: RunConfig) -> None:
    """Rules only backend=miles has (run before anything is submitted)."""
    if cfg.data.source is DataSource.synthetic:
        raise ConfigError(
            "data",
            cfg.data.name,
            "is a synthetic task of the local engine; miles reads prompt files",
            "use data=jsonl data.prompt_data=<file.jsonl> with backend=miles",
        )
    if cfg.reward.rm_type not in (*MILES_RM_TYPES, "custom"):
        raise ConfigError(
            "reward.rm_type",
            cfg.reward.rm_type,
            "has no miles equivalent",
            f"use one of {', '.join(MILES_RM_TYPES)} or reward=custom",
        )
    if cfg.rollout.eval_interval is not None and not cfg.data.eval_prompt_data:
        raise ConfigError(
            "rollout.eval_interval",
            cfg.rollout.eval_interval,
            "needs data.eval_prompt_data with backend=miles (miles evaluates prompt files)",
            "set data.eval_prompt_data=<file.jsonl> or rollout.eval_interval=null",
        )
    a = cfg.algorithm
    if (
        cfg.rollout.async_training
        and not a.use_rollout_logprobs
        and a.correction.kind is CorrectionKind.none
    ):
        raise ConfigError(
            "rollout.async_training",
            True,
            "trains one step off-policy; miles train_async.py needs an off-policy correction",
            "set algorithm.correction=tis (or algorithm.use_rollout_logprobs=true)",
        )


def plan_values(cfg: RunConfig) -> dict[str, Any]:
    """What miles must derive from our argv, computed from our config alone."""
    p, r, a, s = cfg.parallelism, cfg.rollout, cfg.algorithm, cfg.speculative
    return {
        "rollout_num_gpus": rollout_gpus(cfg),
        "world_size": p.actor_world_size,
        "data_parallel_size": p.data_parallel_size,
        "global_batch_size": r.effective_global_batch_size,
        "sglang_tp_size": p.rollout_num_gpus_per_engine,
        "eps_clip_high": a.clip_high,
        "offload_train": p.colocate,
        "offload_rollout": p.colocate,
        "colocate": p.colocate,
        "tensor_model_parallel_size": p.tensor_model_parallel_size,
        "pipeline_model_parallel_size": p.pipeline_model_parallel_size,
        "expert_model_parallel_size": p.expert_model_parallel_size,
        "expert_tensor_parallel_size": p.etp,
        "use_critic": a.advantage_estimator is AdvantageEstimator.ppo,
        "use_kl_loss": a.use_kl_loss,
        "use_tis": a.correction.kind is not CorrectionKind.none,
        "use_routing_replay": a.use_rollout_routing_replay,
        "enable_mtp_training": s.mode is SpecMode.mtp_online,
        "mtp_num_layers": s.mtp_num_layers if s.mode is SpecMode.mtp_online else None,
        "sglang_speculative_algorithm": s.algorithm if s.enabled else None,
        "bf16": True,
        "use_distributed_optimizer": a.optimizer.value == "adam",
        "lr": a.lr,
    }


def rollout_gpus(cfg: RunConfig) -> int:
    """miles' rollout_num_gpus: under --colocate with ppo it adds the critic's GPUs.

    miles_validate_args: colocate => rollout_num_gpus = actor GPUs (+ critic GPUs, = actor
    layout, when use_critic). The placement group then holds max(actor, rollout) bundles, so a
    colocated PPO job asks Ray for twice the actor GPUs.
    """
    p = cfg.parallelism
    ppo = cfg.algorithm.advantage_estimator is AdvantageEstimator.ppo
    return p.total_rollout_gpus + (p.actor_world_size if p.colocate and ppo else 0)
