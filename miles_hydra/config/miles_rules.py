"""Rules only backend=miles has, run when the RunConfig is materialized (before any submission).

``miles_hydra.config.validate._check_miles_backend`` calls ``validate_for_miles``; the compiler
calls it again, so a config built without validation still cannot compile into a bad command.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from miles_hydra.config.algorithm import (
    AdvantageEstimator,
    AlgorithmConfig,
    CorrectionConfig,
    CorrectionKind,
)
from miles_hydra.config.data import DataSource
from miles_hydra.config.precision import PrecisionMode
from miles_hydra.config.reward import RewardType
from miles_hydra.config.speculative import SpecMode
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
# Model presets whose HF checkpoints ship MTP (NextN) layers (model.mtp_num_layers > 0); miles'
# Qwen3/Qwen2/Llama converters have no MTP mapping (tests/miles/test_rules.py keeps this in sync).
MTP_MODEL_PRESETS = ("deepseek_v3", "glm4.5", "mimo_7b", "qwen3_5_35b_a3b")
# What a precision mode's rollout checkpoint must hold (miles quantizes weight updates by its
# config.json quantization_config; tools/convert_hf_to_fp8.py / convert_hf_to_int4_direct.py).
ROLLOUT_FORMATS = {
    PrecisionMode.fp8: "block-wise FP8 (e.g. Qwen/Qwen3-30B-A3B-FP8, or tools/convert_hf_to_fp8.py)",
    PrecisionMode.int4_qat: "W4A16 compressed-tensors (tools/convert_hf_to_int4_direct.py)",
}


def validate_for_miles(cfg: RunConfig) -> None:
    """Raise ConfigError for what the miles backend cannot run."""
    _check_reward(cfg)
    _check_mtp_checkpoint(cfg)
    _check_rollout_precision(cfg)
    _check_algorithm_fields(cfg.algorithm)
    r = cfg.rollout
    synthetic = cfg.data.source is DataSource.synthetic
    if r.eval_interval is not None and not synthetic and not cfg.data.eval_prompt_data:
        raise ConfigError(
            "rollout.eval_interval",
            r.eval_interval,
            "needs data.eval_prompt_data with backend=miles (miles evaluates prompt files)",
            "set data.eval_prompt_data=<file.jsonl> or rollout.eval_interval=null",
        )
    if r.async_training and cfg.parallelism.colocate:
        # The local engine overlaps on one device; miles offloads in turns and cannot.
        raise ConfigError(
            "rollout.async_training",
            True,
            "cannot run with parallelism.colocate=true on backend=miles (train_async.py forbids "
            "it)",
            "set rollout.async_training=false or use a disaggregated parallelism preset",
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


def _check_mtp_checkpoint(cfg: RunConfig) -> None:
    """MTP drafts use the checkpoint's own MTP layers (docs/advanced/speculative-decoding.md:
    "Checkpoint must contain MTP weights"; training an external draft online is unsupported)."""
    s, m = cfg.speculative, cfg.model
    if s.mode not in (SpecMode.mtp, SpecMode.mtp_online):
        return
    if m.mtp_num_layers < 1:
        raise ConfigError(
            "speculative",
            s.mode.value,
            f"drafts with the checkpoint's MTP layers, but model={m.name} has none "
            "(model.mtp_num_layers=0); miles cannot train new MTP layers from scratch",
            "use speculative=eagle speculative.draft_model_path=<EAGLE draft checkpoint>, or a "
            f"model with MTP layers: {', '.join(f'model={p}' for p in MTP_MODEL_PRESETS)}",
        )
    if s.mtp_num_layers > m.mtp_num_layers:
        raise ConfigError(
            "speculative.mtp_num_layers",
            s.mtp_num_layers,
            f"exceeds the {m.mtp_num_layers} MTP layer(s) in model={m.name}'s checkpoint",
            f"set speculative.mtp_num_layers={m.mtp_num_layers}",
        )


def _check_rollout_precision(cfg: RunConfig) -> None:
    """FP8 and INT4 QAT are end to end in miles: SGLang serves a checkpoint in that format
    (docs/advanced/low-precision.md, int4-qat.md; scripts/run_qwen3_30b_a3b.py --rollout-fp8)."""
    pr, m = cfg.precision, cfg.model
    if pr.mode is PrecisionMode.int4_qat and not m.is_moe:
        raise ConfigError(
            "precision",
            "int4_qat",
            f"fake-quantizes routed MoE experts (Transformer Engine GroupedLinear); model={m.name} "
            "is dense, so nothing would be quantized",
            "use precision=bf16 or fp8, or an MoE model (e.g. model=qwen3_30b_a3b)",
        )
    fmt = ROLLOUT_FORMATS.get(pr.mode)
    if fmt and not pr.rollout_checkpoint:
        raise ConfigError(
            "precision.rollout_checkpoint",
            None,
            f"is required by precision={pr.mode.value} with backend=miles: miles runs it end to "
            f"end, but without it SGLang serves model.hf_checkpoint={m.hf_checkpoint} unquantized",
            f"set precision.rollout_checkpoint=<HF checkpoint in {fmt}>",
        )


def _check_algorithm_fields(a: AlgorithmConfig) -> None:
    """Every algorithm field reaches miles (sections.algorithm_args) or is refused here."""
    est = a.advantage_estimator
    default = AlgorithmConfig()
    discounted = (AdvantageEstimator.ppo, AdvantageEstimator.reinforce_plus_plus)
    unused = [
        ("gamma", est not in discounted, "only ppo and reinforce_plus_plus discount in miles"),
        ("lambd", est is not AdvantageEstimator.ppo, "is the GAE lambda of ppo"),
        ("value_clip", est is not AdvantageEstimator.ppo, "clips the critic of ppo"),
        ("kl_loss_type", not a.uses_reference, "has no KL term to estimate"),
        ("opsm_delta", not a.use_opsm, "is the threshold of algorithm.use_opsm=true"),
    ]
    for key, ignored, why in unused:
        if ignored and getattr(a, key) != getattr(default, key):
            value = getattr(a, key)
            raise ConfigError(
                f"algorithm.{key}",
                getattr(value, "value", value),
                f"{why}; with advantage_estimator={est.value} miles ignores it",
                f"drop the key (default {getattr(default, key)!s}) or change the algorithm",
            )
    if a.use_unbiased_kl and not a.use_kl_loss:
        raise ConfigError(
            "algorithm.use_unbiased_kl",
            True,
            "weights the KL loss; miles ignores it without algorithm.use_kl_loss=true",
            "set algorithm.use_kl_loss=true (and kl_loss_coef) or drop the key",
        )
    _check_correction_fields(a.correction)


def _check_correction_fields(c: CorrectionConfig) -> None:
    """--use-tis and IcePop are token-level with [tis_clip_low, tis_clip]; only MIS (mis.py)
    reads the level, mode and rejection-sampling bounds; kind=none reads nothing."""
    if c.kind is CorrectionKind.mis:
        return
    default = CorrectionConfig(kind=c.kind)
    keys = ("level", "mode", "rs_lower", "rs_upper")  # the schema refuses the other MIS keys
    if c.kind is CorrectionKind.none:
        keys = tuple(f.name for f in dataclasses.fields(c) if f.name != "kind")
    for key in keys:
        value = getattr(c, key)
        if value != getattr(default, key):
            raise ConfigError(
                f"algorithm.correction.{key}",
                getattr(value, "value", value),
                f"has no effect with algorithm.correction.kind={c.kind.value} on backend=miles",
                "set algorithm.correction=mis to use it, or drop the key",
            )
