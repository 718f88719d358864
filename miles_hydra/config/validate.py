"""Rules that span several groups. Each raises ConfigError naming the key and the fix.

Group-local rules live in each group's ``validate()``; these run after all of them, when
``RunConfig`` is materialized (``OmegaConf.to_object``), before anything is submitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miles_hydra.config.algorithm import AdvantageEstimator, CorrectionKind
from miles_hydra.config.backend import BackendKind
from miles_hydra.config.cluster import ClusterKind
from miles_hydra.config.data import DataSource
from miles_hydra.config.layout import gpu_breakdown, total_gpus
from miles_hydra.config.miles_rules import validate_for_miles
from miles_hydra.config.model import ModelFamily, _divisors
from miles_hydra.config.precision import PrecisionMode
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig
from miles_hydra.errors import ConfigError

if TYPE_CHECKING:
    from miles_hydra.config.parallelism import ParallelismConfig
    from miles_hydra.config.run import RunConfig

LOCAL_FAMILIES = (ModelFamily.qwen3, ModelFamily.qwen3_moe, ModelFamily.llama)


def validate_run(cfg: RunConfig) -> None:
    _check_model_parallelism(cfg)
    _check_batches(cfg)
    _check_speculative(cfg)
    _check_algorithm(cfg)
    _check_precision(cfg)
    _check_resources(cfg)
    _check_rollout_modes(cfg)
    if cfg.backend.kind is BackendKind.local:
        _check_local_backend(cfg)
    else:
        _check_miles_backend(cfg)


def _check_model_parallelism(cfg: RunConfig) -> None:
    m, p = cfg.model, cfg.parallelism
    tp = p.tensor_model_parallel_size
    heads = m.num_attention_heads
    if heads % tp:
        raise ConfigError(
            "parallelism.tensor_model_parallel_size",
            tp,
            f"does not divide model.num_attention_heads={heads}",
            f"use one of {_divisors(heads)}",
        )
    if not m.multi_latent_attention and m.query_groups % tp:
        raise ConfigError(
            "parallelism.tensor_model_parallel_size",
            tp,
            f"does not divide model.num_query_groups={m.query_groups}",
            f"use one of {_divisors(m.query_groups)}",
        )
    _check_pipeline_stages(m.num_layers, p)
    ep = p.expert_model_parallel_size
    if ep > 1 and not m.is_moe:
        raise ConfigError(
            "parallelism.expert_model_parallel_size",
            ep,
            f"needs an MoE model; model={m.name} is dense",
            "set parallelism.expert_model_parallel_size=1 or pick an MoE model",
        )
    if m.is_moe and m.num_experts % ep:
        raise ConfigError(
            "parallelism.expert_model_parallel_size",
            ep,
            f"does not divide model.num_experts={m.num_experts}",
            f"use one of {_divisors(m.num_experts)}",
        )
    engine_tp = p.rollout_num_gpus_per_engine
    if heads % engine_tp:
        raise ConfigError(
            "parallelism.rollout_num_gpus_per_engine",
            engine_tp,
            f"(the SGLang engine TP) does not divide model.num_attention_heads={heads}",
            f"use one of {_divisors(heads)}",
        )


def _check_batches(cfg: RunConfig) -> None:
    r, p = cfg.rollout, cfg.parallelism
    gbs = r.effective_global_batch_size
    dp = p.data_parallel_size
    if not p.use_dynamic_batch_size and gbs % (p.micro_batch_size * dp):
        raise ConfigError(
            "rollout.global_batch_size",
            gbs,
            f"is not divisible by parallelism.micro_batch_size x data-parallel size = "
            f"{p.micro_batch_size} x {dp}",
            "change rollout_batch_size/n_samples_per_prompt/num_steps_per_rollout so that "
            f"global_batch_size is a multiple of {p.micro_batch_size * dp}",
        )


def _check_speculative(cfg: RunConfig) -> None:
    s = cfg.speculative  # MTP drafts on miles need the checkpoint's MTP layers: miles_rules.py
    if s.mode is SpecMode.mtp_online and not s.algorithm:
        raise ConfigError(
            "speculative.algorithm",
            s.algorithm,
            "is required: online MTP training needs a speculative algorithm in rollout",
            "set speculative.algorithm=EAGLE",
        )


def _check_algorithm(cfg: RunConfig) -> None:
    a = cfg.algorithm
    if a.use_rollout_routing_replay and not cfg.model.is_moe:
        raise ConfigError(
            "algorithm.use_rollout_routing_replay",
            True,
            f"(R3) replays expert routing; model={cfg.model.name} is dense",
            "set algorithm.use_rollout_routing_replay=false or pick an MoE model",
        )
    if (
        cfg.rollout.n_samples_per_prompt == 1
        and a.advantage_estimator in (AdvantageEstimator.grpo, AdvantageEstimator.gspo)
        and a.rewards_normalization
    ):
        raise ConfigError(
            "rollout.n_samples_per_prompt",
            1,
            f"gives {a.advantage_estimator.value} groups of one sample: every advantage is 0",
            "sample several responses per prompt, e.g. rollout.n_samples_per_prompt=8",
        )


def _check_precision(cfg: RunConfig) -> None:
    pr = cfg.precision
    cc = cfg.cluster.gpu_compute_capability
    if pr.min_compute_capability and cc is not None and cc < pr.min_compute_capability:
        raise ConfigError(
            "precision",
            pr.mode.value,
            f"needs a GPU of compute capability >= {pr.min_compute_capability}; "
            f"cluster.gpu_compute_capability={cc}",
            "use precision=bf16 or a Hopper/Blackwell partition",
        )


def _check_resources(cfg: RunConfig) -> None:
    """GPUs must add up: the job's allocation must hold the training and rollout GPUs."""
    c, p = cfg.cluster, cfg.parallelism
    if cfg.backend.kind is not BackendKind.miles or c.kind is not ClusterKind.slurm:
        return
    if p.actor_num_nodes > c.nodes:
        raise ConfigError(
            "parallelism.actor_num_nodes",
            p.actor_num_nodes,
            f"exceeds cluster.nodes={c.nodes}",
            f"set cluster.nodes={p.actor_num_nodes} or more",
        )
    if p.actor_num_gpus_per_node > c.gpus_per_node:
        raise ConfigError(
            "parallelism.actor_num_gpus_per_node",
            p.actor_num_gpus_per_node,
            f"exceeds cluster.gpus_per_node={c.gpus_per_node}",
            f"set cluster.gpus_per_node={p.actor_num_gpus_per_node} or use more nodes",
        )
    have = c.nodes * c.gpus_per_node
    need = total_gpus(cfg)
    if need > have:
        raise ConfigError(
            "cluster.nodes",
            c.nodes,
            f"x cluster.gpus_per_node={c.gpus_per_node} = {have} GPUs, but the layout needs "
            f"{need} ({gpu_breakdown(cfg)})",
            f"set cluster.nodes={-(-need // max(c.gpus_per_node, 1))}",
        )


def _check_rollout_modes(cfg: RunConfig) -> None:
    """Off-policy data (resumed partial samples, the one-step-off pipeline) needs a correction."""
    r, a = cfg.rollout, cfg.algorithm
    corrected = a.use_rollout_logprobs or a.correction.kind is not CorrectionKind.none
    if r.partial_rollout and not (r.mask_offpolicy_in_partial_rollout or corrected):
        raise ConfigError(
            "rollout.partial_rollout",
            True,
            "resumes samples under newer weights, so their earlier tokens are off-policy; "
            "that needs an off-policy correction or masking those tokens",
            "set algorithm.correction=tis (or mis), or "
            "rollout.mask_offpolicy_in_partial_rollout=true",
        )
    if r.async_training and not corrected:
        raise ConfigError(
            "rollout.async_training",
            True,
            "trains on rollouts one weight update old (one-step-off pipeline); that needs an "
            "off-policy correction",
            "set algorithm.correction=tis (or mis, or algorithm.use_rollout_logprobs=true)",
        )


def _check_local_backend(cfg: RunConfig) -> None:
    m, p, pr = cfg.model, cfg.parallelism, cfg.precision
    if m.family not in LOCAL_FAMILIES:
        raise ConfigError(
            "backend",
            "local",
            f"builds {', '.join(f.value for f in LOCAL_FAMILIES)} models; model={m.name} is "
            f"{m.family.value}",
            "add backend=miles to run it on miles",
        )
    if p.actor_world_size != 1 or p.model_parallel_size != 1 or p.expert_model_parallel_size != 1:
        raise ConfigError(
            "parallelism",
            f"tp{p.tensor_model_parallel_size}/pp{p.pipeline_model_parallel_size}/"
            f"cp{p.context_parallel_size}/ep{p.expert_model_parallel_size}",
            f"asks for {p.actor_world_size} training GPUs with TP/PP/CP/EP; backend=local trains "
            "on one device",
            "use parallelism=single, or add backend=miles",
        )
    if pr.mode in (PrecisionMode.fp8, PrecisionMode.int4_qat):
        raise ConfigError(
            "precision",
            pr.mode.value,
            "is a miles (Transformer Engine / SGLang) recipe",
            "use precision=fp32 or bf16 with backend=local, or add backend=miles",
        )
    if cfg.speculative.mode is SpecMode.eagle:
        raise ConfigError(
            "speculative",
            "eagle",
            "needs an external EAGLE draft; backend=local trains its own",
            "use speculative=mtp or mtp_online with backend=local",
        )
    _check_local_drafts(cfg.speculative)


def _check_local_drafts(s: SpeculativeConfig) -> None:
    """The local engine drafts a greedy chain of ``num_steps`` tokens with its MTP head and
    verifies ``num_steps + 1``; the SGLang draft knobs have nothing to act on there."""
    if not s.enabled:
        return
    default = SpeculativeConfig()
    if s.algorithm != default.algorithm:
        raise ConfigError(
            "speculative.algorithm",
            s.algorithm,
            "picks SGLang's speculative algorithm; backend=local has one: its MTP head drafts "
            "a greedy chain",
            f"leave speculative.algorithm={default.algorithm}, or add backend=miles",
        )
    if s.eagle_topk != default.eagle_topk:
        raise ConfigError(
            "speculative.eagle_topk",
            s.eagle_topk,
            "asks for tree drafts; backend=local drafts a chain: eagle_topk must be 1",
            "set speculative.eagle_topk=1, or use backend=miles for tree drafts",
        )
    if s.num_draft_tokens is not None:
        raise ConfigError(
            "speculative.num_draft_tokens",
            s.num_draft_tokens,
            f"is SGLang's tree size; backend=local verifies a chain of speculative.num_steps + 1 "
            f"= {s.num_steps + 1} tokens per step",
            "leave speculative.num_draft_tokens null (set speculative.num_steps), or add "
            "backend=miles",
        )


def _check_miles_backend(cfg: RunConfig) -> None:
    m = cfg.model
    if not m.hf_checkpoint:
        raise ConfigError(
            "model.hf_checkpoint",
            None,
            "is required by backend=miles (SGLang loads it)",
            "set model.hf_checkpoint=/path/to/hf/model",
        )
    if not (cfg.checkpoint.ref_load or m.torch_dist_checkpoint) and m.convert.value == "never":
        raise ConfigError(
            "checkpoint.ref_load",
            None,
            "is required by backend=miles with model.convert=never: Megatron loads torch_dist "
            "weights",
            "set model.convert=auto (the job converts model.hf_checkpoint once, then reuses it) "
            "or checkpoint.ref_load=<dir>",
        )
    if cfg.data.source is DataSource.file and not cfg.data.prompt_data:
        raise ConfigError("data.prompt_data", None, "is required", "set data.prompt_data=<file>")
    if cfg.precision.mode is PrecisionMode.fp32:
        raise ConfigError(
            "precision",
            "fp32",
            "is not a miles training recipe (Megatron trains in bf16/fp8)",
            "use precision=bf16, fp8 or int4_qat with backend=miles",
        )
    validate_for_miles(cfg)


def _check_pipeline_stages(num_layers: int, p: ParallelismConfig) -> None:
    """PP divides the layers, or the uneven first/last stages leave the middle stages an even
    share (Megatron's --decoder-first/last-pipeline-num-layers rule)."""
    pp = p.pipeline_model_parallel_size
    first, last = p.decoder_first_pipeline_num_layers, p.decoder_last_pipeline_num_layers
    if first is None and last is None:
        if num_layers % pp:
            uneven = num_layers - (pp - 1) * (num_layers // pp)
            raise ConfigError(
                "parallelism.pipeline_model_parallel_size",
                pp,
                f"does not divide model.num_layers={num_layers}",
                f"use one of {_divisors(num_layers)}, or keep PP={pp} with uneven stages: "
                f"parallelism.decoder_last_pipeline_num_layers={uneven}",
            )
        return
    for key, value in (("first", first), ("last", last)):
        if value is None:
            continue
        name = f"parallelism.decoder_{key}_pipeline_num_layers"
        if pp < 2:
            raise ConfigError(name, value, "needs pipeline_model_parallel_size >= 2",
                              f"set parallelism.pipeline_model_parallel_size or unset {name}")  # fmt: skip
        if value < 1:
            raise ConfigError(name, value, "must be >= 1")
    middle = pp - (first is not None) - (last is not None)
    rest = num_layers - (first or 0) - (last or 0)
    key = "last" if last is not None else "first"
    name = f"parallelism.decoder_{key}_pipeline_num_layers"
    value = last if last is not None else first
    if rest < 0 or (middle == 0 and rest) or (middle and (rest % middle or rest == 0)):
        share = "no layers" if middle == 0 else f"{middle} middle stage(s)"
        raise ConfigError(
            name,
            value,
            f"leaves {rest} of model.num_layers={num_layers} for {share} of PP={pp}",
            "pick first/last stage sizes so that the rest splits evenly over the middle stages "
            "(at least one layer each)",
        )
