"""Compile a RunConfig into miles' command line: entry point, argv, job environment.

``compile_miles`` is pure (no I/O, no environment reads): the same config gives the same
command, which is what the golden files under tests/miles/golden pin. ``plan_values`` is what
our config says miles will derive; the oracle compares the two (tests/miles/test_oracle.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.backends.miles import sections
from miles_hydra.backends.miles.dataset import PLACEHOLDER_RUN_DIR
from miles_hydra.backends.miles.model_args import model_args
from miles_hydra.config.algorithm import (
    AdvantageEstimator,
    CorrectionKind,
    LossAggregation,
    Optimizer,
)
from miles_hydra.config.layout import rollout_gpus
from miles_hydra.config.logging import TENSORBOARD_SUBDIR, Tracker
from miles_hydra.config.miles_rules import SECRET_ENV_KEYS, validate_for_miles
from miles_hydra.config.precision import PrecisionMode
from miles_hydra.config.run import RunConfig
from miles_hydra.config.speculative import SpecMode

__all__ = [
    "MilesCommand",
    "compile_miles",
    "job_env",
    "plan_values",
    "secret_env",
    "validate_for_miles",
]


@dataclass(frozen=True)
class MilesCommand:
    """What the job runs: ``python3 <entry> <argv...>`` under ``env`` on the Ray cluster."""

    entry: str  # train.py (synchronous) or train_async.py (one-step off-policy), full path
    argv: list[str]  # every flag and value, unquoted
    env: dict[str, str] = field(default_factory=dict)  # job runtime env (no secrets)
    secret_env_keys: tuple[str, ...] = SECRET_ENV_KEYS  # passed through from the environment


def compile_miles(cfg: RunConfig, run_dir: Optional[str] = None) -> MilesCommand:
    """The miles command for `cfg`; raises ConfigError for what miles cannot run.

    Paths under the job's run directory (checkpoints, a synthetic task's prompt files) start
    with ``run_dir``, or with the ``<run_dir>`` placeholder where it is not known yet (plan).
    """
    validate_for_miles(cfg)
    run_dir = run_dir or PLACEHOLDER_RUN_DIR
    argv = [
        *model_args(cfg.model),
        *sections.checkpoint_args(cfg, run_dir),
        *sections.data_args(cfg, run_dir),
        *sections.rollout_args(cfg),
        *sections.eval_args(cfg, run_dir),
        *sections.algorithm_args(cfg),
        *sections.custom_config_args(cfg),
        *sections.optimizer_args(cfg),
        *sections.parallelism_args(cfg),
        *sections.recipe_args(cfg),
        *sections.precision_args(cfg),
        *sections.speculative_args(cfg),
        *sections.sglang_args(cfg),
        *sections.logging_args(cfg, run_dir),
        *cfg.backend.extra_args,
    ]
    script = "train_async.py" if cfg.rollout.async_training else "train.py"
    entry = cfg.backend.miles_entry or f"{cfg.backend.miles_root.rstrip('/')}/{script}"
    return MilesCommand(entry=entry, argv=argv, env=job_env(cfg, run_dir))


def job_env(cfg: RunConfig, run_dir: Optional[str] = None) -> dict[str, str]:
    """The job's runtime env: Megatron/miles requirements, where miles' TensorBoard writer puts
    its events (the runner follows them into metrics.jsonl), precision recipe, user extras."""
    b = cfg.backend
    run_dir = (run_dir or PLACEHOLDER_RUN_DIR).rstrip("/")
    env = {
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # Megatron asserts it for TP/CP > 1 before Blackwell
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{b.megatron_path}:{b.miles_root}",
        "NCCL_CUMEM_ENABLE": "0",
        "TENSORBOARD_DIR": f"{run_dir}/{TENSORBOARD_SUBDIR}",
    }
    env.update(cfg.precision.env)  # FP8 block scaling / INT4 QAT switches
    r = cfg.rollout
    if r.partial_rollout and r.mask_offpolicy_in_partial_rollout:
        # miles v0.1.0 masks resumed tokens only on its legacy rollout path (arguments.py)
        env["MILES_USE_LEGACY_ROLLOUT_V1"] = "1"
    env.update(b.env)
    return {k: str(v) for k, v in env.items()}


def secret_env(cmd: MilesCommand) -> dict[str, str]:
    """The secrets to hand to the job's processes, read from our environment at submit time."""
    return {k: os.environ[k] for k in cmd.secret_env_keys if os.environ.get(k)}


def plan_values(cfg: RunConfig) -> dict[str, Any]:
    """What miles must derive from our argv, computed from our config alone (mode=check and
    the oracle tests compare every key with miles' parsed args)."""
    p, r, s = cfg.parallelism, cfg.rollout, cfg.speculative
    values = {
        "rollout_num_gpus": rollout_gpus(cfg),  # colocated: the trained GPUs
        "world_size": p.actor_world_size,
        "data_parallel_size": p.data_parallel_size,
        "global_batch_size": r.effective_global_batch_size,
        "num_steps_per_rollout": r.num_steps_per_rollout,
        "rollout_batch_size": r.rollout_batch_size,
        "n_samples_per_prompt": r.n_samples_per_prompt,
        "num_rollout": r.num_rollout,
        "eval_interval": r.eval_interval,
        "partial_rollout": r.partial_rollout,
        "mask_offpolicy_in_partial_rollout": r.mask_offpolicy_in_partial_rollout,
        "over_sampling_batch_size": r.effective_over_sampling_batch_size,
        "dynamic_sampling_filter_path": r.dynamic_filter_path,
        "max_weight_staleness": r.max_weight_staleness,
        "sglang_tp_size": p.rollout_num_gpus_per_engine,
        "rollout_num_gpus_per_engine": p.rollout_num_gpus_per_engine,
        "offload_train": p.colocate,
        "offload_rollout": p.colocate,
        "colocate": p.colocate,
        "tensor_model_parallel_size": p.tensor_model_parallel_size,
        "pipeline_model_parallel_size": p.pipeline_model_parallel_size,
        "decoder_first_pipeline_num_layers": p.decoder_first_pipeline_num_layers,
        "decoder_last_pipeline_num_layers": p.decoder_last_pipeline_num_layers,
        "context_parallel_size": p.context_parallel_size,
        "expert_model_parallel_size": p.expert_model_parallel_size,
        "expert_tensor_parallel_size": p.etp,
        "sequence_parallel": p.sequence_parallel,
        "use_dynamic_batch_size": p.use_dynamic_batch_size,
        **_algorithm_values(cfg),
        "enable_mtp_training": s.mode is SpecMode.mtp_online,
        "mtp_num_layers": s.mtp_num_layers if s.mode is SpecMode.mtp_online else None,
        "sglang_speculative_algorithm": s.algorithm if s.enabled else None,
        "bf16": True,
        "fp8": cfg.precision.fp8_format if cfg.precision.mode is PrecisionMode.fp8 else None,
        "use_wandb": cfg.logging.uses(Tracker.wandb),
        "use_tensorboard": True,  # always: the runner follows its events (sections.logging_args)
        "use_mlflow": cfg.logging.uses(Tracker.mlflow),
    }
    if p.use_dynamic_batch_size:
        values["max_tokens_per_gpu"] = p.max_tokens_per_gpu
    else:
        values["micro_batch_size"] = p.micro_batch_size
    if s.enabled:
        values["sglang_speculative_num_steps"] = s.num_steps
        values["sglang_speculative_eagle_topk"] = s.eagle_topk
        values["sglang_speculative_num_draft_tokens"] = s.draft_tokens
    return values


def _algorithm_values(cfg: RunConfig) -> dict[str, Any]:
    a = cfg.algorithm
    values = {
        "advantage_estimator": a.advantage_estimator.value,
        "eps_clip": a.eps_clip,
        "eps_clip_high": a.clip_high,
        "use_critic": a.advantage_estimator is AdvantageEstimator.ppo,
        "use_kl_loss": a.use_kl_loss,
        "kl_loss_coef": a.kl_loss_coef,
        "kl_coef": a.kl_coef,
        "use_tis": a.correction.kind is not CorrectionKind.none,
        "use_rollout_logprobs": a.use_rollout_logprobs,
        "use_routing_replay": a.use_rollout_routing_replay,
        "use_rollout_routing_replay": a.use_rollout_routing_replay,
        "calculate_per_token_loss": a.loss_aggregation is LossAggregation.token_mean,
        "use_distributed_optimizer": a.optimizer is Optimizer.adam,
        "optimizer": a.optimizer.value,
        "lr": a.lr,
    }
    if a.correction.kind in (CorrectionKind.tis, CorrectionKind.icepop):
        values["tis_clip"] = a.correction.upper
        values["tis_clip_low"] = a.correction.lower_bound
    return values
