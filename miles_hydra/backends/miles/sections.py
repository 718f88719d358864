"""The sections of the miles argv after the model: one pure function per concern.

Emission rules (../shared/reference/miles.md section 9.2): a store_true flag appears only when
true; a store_false flag (``--disable-*``) only to turn its feature off; BooleanOptionalAction
flags (``--offload-train``) are left unset so miles derives them; list flags take space-separated
values; JSON values are compact JSON strings (the argv is a list, so no shell quoting here).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from miles_hydra.backends.miles.convert import torch_dist_dir
from miles_hydra.backends.miles.dataset import prompt_files
from miles_hydra.backends.miles.model_args import num
from miles_hydra.backends.miles.rewards import CUSTOM_RM_KEY
from miles_hydra.config.algorithm import AdvantageEstimator, CorrectionKind, LossAggregation
from miles_hydra.config.logging import Tracker
from miles_hydra.config.miles_rules import OUR_RM_TYPES
from miles_hydra.config.precision import PrecisionMode
from miles_hydra.config.reward import RewardType
from miles_hydra.config.run import RunConfig
from miles_hydra.config.speculative import SpecMode

Argv = list[str]

MIS_FUNCTION = "examples.infra_features.train_infer_mismatch_helper.mis.compute_mis_weights_with_cp"
REWARDS_MODULE = (
    "miles_hydra.backends.miles.rewards"  # task_reward / custom_reward, our RMs inside miles
)
ICEPOP_FUNCTION = "miles.backends.training_utils.loss_hub.corrections.icepop_function"


def _switch(flag: str, on: bool) -> Argv:
    return [flag] if on else []


def _opt(flag: str, value: Any) -> Argv:
    if value is None:
        return []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [flag, num(value)]
    return [flag, str(value)]


def checkpoint_args(cfg: RunConfig, run_dir: str) -> Argv:
    """Weights in (HF for SGLang, in the rollout precision's format; torch_dist ref for
    Megatron), checkpoints out."""
    ck, m = cfg.checkpoint, cfg.model
    save = ck.save or f"{run_dir}/checkpoints"
    args = [
        "--hf-checkpoint",
        str(cfg.precision.rollout_checkpoint or m.hf_checkpoint),
        "--ref-load",
        str(ck.ref_load or torch_dist_dir(cfg)),  # the managed conversion's dir (convert.py)
    ]
    if ck.resume:  # a dir without latest_checkpointed_iteration.txt makes miles load --ref-load
        args += ["--load", ck.load or save]
    # Megatron asserts an interval whenever --save is set: null = only the final checkpoint
    interval = ck.save_interval or cfg.rollout.num_rollout
    args += ["--save", save, "--save-interval", num(interval)]
    return args


def data_args(cfg: RunConfig, run_dir: str) -> Argv:
    """Prompts (a synthetic task's files under <run_dir>/data, or the user's) and reward."""
    d, rw = cfg.data, cfg.reward
    files = prompt_files(cfg, run_dir)
    args = [
        "--prompt-data",
        files.train,
        "--input-key",
        files.input_key,
        "--label-key",
        files.label_key,
        *_switch("--apply-chat-template", d.apply_chat_template),
        *_switch("--rollout-shuffle", d.rollout_shuffle),
    ]
    if rw.rm_type in OUR_RM_TYPES:  # ours, run inside miles (rewards.py); miles ignores rm-type
        args += ["--custom-rm-path", f"{REWARDS_MODULE}.{rw.rm_type.value}_reward"]
    else:
        args += ["--rm-type", rw.rm_type.value]
    return args


def rollout_args(cfg: RunConfig) -> Argv:
    """The batch invariant (miles re-checks it), sampling, and partial rollout, over-sampling,
    dynamic sampling and weight staleness (each flag only when it is not miles' default)."""
    r = cfg.rollout
    modes = [
        *_switch("--partial-rollout", r.partial_rollout),
        *_switch("--mask-offpolicy-in-partial-rollout", r.mask_offpolicy_in_partial_rollout),
        *_opt("--over-sampling-batch-size", r.over_sampling_batch_size),
        *_opt("--dynamic-sampling-filter-path", r.dynamic_filter_path),
        *_opt("--max-weight-staleness", r.max_weight_staleness),
    ]
    return [
        "--num-rollout",
        num(r.num_rollout),
        "--rollout-batch-size",
        num(r.rollout_batch_size),
        "--n-samples-per-prompt",
        num(r.n_samples_per_prompt),
        "--num-steps-per-rollout",
        num(r.num_steps_per_rollout),
        "--global-batch-size",
        num(r.effective_global_batch_size),
        "--rollout-max-prompt-len",
        num(r.rollout_max_prompt_len),
        "--rollout-max-response-len",
        num(r.rollout_max_response_len),
        "--rollout-temperature",
        num(r.rollout_temperature),
        "--rollout-top-p",
        num(r.rollout_top_p),
        "--rollout-top-k",
        num(r.rollout_top_k),
        *modes,
    ]


def eval_args(cfg: RunConfig, run_dir: str) -> Argv:
    """Periodic evaluation on the eval prompts (named "eval" in miles' metrics)."""
    r = cfg.rollout
    eval_file = prompt_files(cfg, run_dir).eval
    if r.eval_interval is None:
        return []
    assert eval_file is not None, "rules.validate_for_miles requires eval prompts"
    return [
        "--eval-interval",
        num(r.eval_interval),
        "--eval-prompt-data",
        "eval",
        eval_file,
        "--n-samples-per-eval-prompt",
        num(r.n_samples_per_eval_prompt),
        "--eval-temperature",
        num(r.eval_temperature),
        "--eval-max-response-len",
        num(r.rollout_max_response_len),
    ]


def algorithm_args(cfg: RunConfig) -> Argv:
    """Advantage estimator, clipping, KL, entropy, OPSM, loss reduction, R3."""
    a = cfg.algorithm
    est = a.advantage_estimator
    args = ["--advantage-estimator", est.value]
    args += _switch("--disable-rewards-normalization", not a.rewards_normalization)
    args += _switch("--disable-grpo-std-normalization", not a.grpo_std_normalization)
    args += _switch("--normalize-advantages", a.normalize_advantages)
    args += ["--eps-clip", num(a.eps_clip), *_opt("--eps-clip-high", a.eps_clip_high)]
    args += _opt("--eps-clip-c", a.eps_clip_c)
    if est is AdvantageEstimator.ppo:
        args += [
            "--value-clip",
            num(a.value_clip),
            "--gamma",
            num(a.gamma),
            "--lambd",
            num(a.lambd),
        ]
    elif est is AdvantageEstimator.reinforce_plus_plus:
        args += ["--gamma", num(a.gamma)]
    if a.use_kl_loss:
        args += ["--use-kl-loss", "--kl-loss-coef", num(a.kl_loss_coef)]
    if a.kl_coef != 0.0:
        args += ["--kl-coef", num(a.kl_coef)]
    if a.uses_reference:
        args += ["--kl-loss-type", a.kl_loss_type.value]
    args += _switch("--use-unbiased-kl", a.use_unbiased_kl)
    args += ["--entropy-coef", num(a.entropy_coef)]
    if a.use_opsm:
        args += ["--use-opsm", "--opsm-delta", num(a.opsm_delta)]
    args += _switch("--calculate-per-token-loss", a.loss_aggregation is LossAggregation.token_mean)
    args += _switch("--use-rollout-logprobs", a.use_rollout_logprobs)
    args += _switch("--use-rollout-routing-replay", a.use_rollout_routing_replay)
    return args + correction_args(cfg)


def correction_args(cfg: RunConfig) -> Argv:
    """TIS (--use-tis), IcePop (built-in function), MIS (mis.py + inline YAML)."""
    c = cfg.algorithm.correction
    if c.kind is CorrectionKind.none:
        return []
    if c.kind is CorrectionKind.tis:
        return ["--use-tis", "--tis-clip", num(c.upper), "--tis-clip-low", num(c.lower_bound)]
    if c.kind is CorrectionKind.icepop:
        return [
            "--use-tis",
            "--custom-tis-function-path",
            ICEPOP_FUNCTION,
            "--tis-clip",
            num(c.upper),
            "--tis-clip-low",
            num(c.lower_bound),
        ]
    return ["--use-tis", "--custom-tis-function-path", MIS_FUNCTION]  # + custom_config_args


def custom_config(cfg: RunConfig) -> dict[str, Any]:
    """Keys miles sets on its args from --custom-config-path: MIS settings, our custom reward."""
    config: dict[str, Any] = {}
    if cfg.algorithm.correction.kind is CorrectionKind.mis:
        config.update(cfg.algorithm.correction.mis_settings())
    if cfg.reward.rm_type is RewardType.custom:
        config[CUSTOM_RM_KEY] = cfg.reward.custom_rm_path
    return config


def custom_config_args(cfg: RunConfig) -> Argv:
    """One inline YAML (``base64:...``) for everything in custom_config; nothing if empty."""
    config = custom_config(cfg)
    if not config:
        return []
    text = yaml.safe_dump(config, sort_keys=False)
    return ["--custom-config-path", "base64:" + base64.b64encode(text.encode()).decode()]


def optimizer_args(cfg: RunConfig) -> Argv:
    a = cfg.algorithm
    return [
        "--optimizer",
        a.optimizer.value,
        "--lr",
        num(a.lr),
        "--min-lr",
        num(a.min_lr),
        "--lr-decay-style",
        a.lr_decay_style.value,
        "--lr-warmup-iters",
        num(a.lr_warmup_iters),
        "--weight-decay",
        num(a.weight_decay),
        "--adam-beta1",
        num(a.adam_beta1),
        "--adam-beta2",
        num(a.adam_beta2),
        "--adam-eps",
        num(a.adam_eps),
        "--clip-grad",
        num(a.clip_grad),
        "--seed",
        num(cfg.seed),
    ]


def parallelism_args(cfg: RunConfig) -> Argv:
    """Megatron layout, Ray placement (actor GPUs, rollout GPUs, colocation) and micro-batches."""
    p = cfg.parallelism
    args = [
        "--tensor-model-parallel-size",
        num(p.tensor_model_parallel_size),
        *_switch("--sequence-parallel", p.sequence_parallel),
        "--pipeline-model-parallel-size",
        num(p.pipeline_model_parallel_size),
        *_opt("--decoder-first-pipeline-num-layers", p.decoder_first_pipeline_num_layers),
        *_opt("--decoder-last-pipeline-num-layers", p.decoder_last_pipeline_num_layers),
        "--context-parallel-size",
        num(p.context_parallel_size),
        "--expert-model-parallel-size",
        num(p.expert_model_parallel_size),
        *_opt("--expert-tensor-parallel-size", p.expert_tensor_parallel_size),
        "--actor-num-nodes",
        num(p.actor_num_nodes),
        "--actor-num-gpus-per-node",
        num(p.actor_num_gpus_per_node),
        "--num-gpus-per-node",
        num(cfg.cluster.gpus_per_node or p.actor_num_gpus_per_node),
    ]
    args += ["--colocate"] if p.colocate else ["--rollout-num-gpus", num(p.total_rollout_gpus)]
    args += ["--rollout-num-gpus-per-engine", num(p.rollout_num_gpus_per_engine)]
    if p.use_dynamic_batch_size:
        args += ["--use-dynamic-batch-size", "--max-tokens-per-gpu", num(p.max_tokens_per_gpu)]
    else:
        args += ["--micro-batch-size", num(p.micro_batch_size)]
    return args


def recipe_args(cfg: RunConfig) -> Argv:
    """Settings every miles recipe pairs with the model args (section 5 of the reference)."""
    args = [
        "--attention-dropout",
        "0.0",
        "--hidden-dropout",
        "0.0",
        "--accumulate-allreduce-grads-in-fp32",
    ]
    if (
        not cfg.model.multi_latent_attention
    ):  # MLA model args carry softmax-in-fp32; no flash for MLA
        args += ["--attention-softmax-in-fp32", "--attention-backend", "flash"]
    return args


def precision_args(cfg: RunConfig) -> Argv:
    """bf16 everywhere; FP8 adds Transformer Engine blockwise FP8; INT4 QAT is env-only."""
    pr = cfg.precision
    args = ["--bf16"]
    if pr.mode is PrecisionMode.fp8:
        args += [
            "--transformer-impl",
            "transformer_engine",
            "--fp8-format",
            pr.fp8_format,
            "--fp8-recipe",
            pr.fp8_recipe,
        ]
    return args


def speculative_args(cfg: RunConfig) -> Argv:
    """SGLang speculative decoding in rollout; online MTP training of the draft heads."""
    s = cfg.speculative
    if not s.enabled:
        return []
    args = [
        "--sglang-speculative-algorithm",
        s.algorithm,
        "--sglang-speculative-num-steps",
        num(s.num_steps),
        "--sglang-speculative-eagle-topk",
        num(s.eagle_topk),
        "--sglang-speculative-num-draft-tokens",
        num(s.draft_tokens),
    ]
    if s.mode is SpecMode.eagle:
        args += ["--sglang-speculative-draft-model-path", str(s.draft_model_path)]
    if s.mode is SpecMode.mtp_online:
        args += [
            "--mtp-num-layers",
            num(s.mtp_num_layers),
            "--enable-mtp-training",
            "--mtp-loss-scaling-factor",
            num(s.mtp_loss_scaling_factor),
        ]
    return args


def sglang_args(cfg: RunConfig) -> Argv:
    """rollout.sglang_mem_fraction_static plus the free `rollout.sglang` map -> --sglang-<key>."""
    r = cfg.rollout
    args = _opt("--sglang-mem-fraction-static", r.sglang_mem_fraction_static)
    for key, value in sorted(r.sglang.items()):
        flag = f"--sglang-{key}"
        if isinstance(value, bool):
            args += _switch(flag, value)
        elif isinstance(value, (list, tuple)):
            args += [flag, *(num(v) if isinstance(v, (int, float)) else str(v) for v in value)]
        elif isinstance(value, dict):
            args += [flag, json.dumps(value, separators=(",", ":"), sort_keys=True)]
        elif value is not None:
            args += _opt(flag, value)
    return args


def logging_args(cfg: RunConfig, run_dir: str) -> Argv:
    """Trackers: TensorBoard always (its events in TENSORBOARD_DIR=<run_dir>/tensorboard are what
    the runner follows into metrics.jsonl), wandb and MLflow when selected. Secrets (the W&B key,
    MLflow credentials) never appear here: they travel in the job's environment."""
    lg = cfg.logging
    args = ["--use-tensorboard"]
    if lg.uses(Tracker.wandb):
        args += [
            "--use-wandb",
            "--wandb-project",
            str(lg.wandb_project),
            "--wandb-group",
            lg.wandb_group or cfg.experiment_name,
            *_opt("--wandb-team", lg.wandb_entity),
            "--wandb-mode",
            lg.wandb_mode.value,
        ]
    if lg.uses(Tracker.mlflow):
        args += [
            "--use-mlflow",
            "--mlflow-tracking-uri",
            lg.mlflow_uri(run_dir),
            "--mlflow-experiment-name",
            lg.mlflow_experiment_name or cfg.experiment_name,
            "--mlflow-run-name",
            run_dir.rstrip("/").rsplit("/", 1)[-1],  # the job's run directory, as the local engine
        ]
    return args
