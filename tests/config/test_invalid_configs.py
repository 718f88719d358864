"""A corpus of invalid configs: each is refused before anything runs, naming the right key.

Most go through compose + materialize in-process (fast); a handful through the real
``python launch.py ... mode=plan`` CLI, which must exit non-zero and create nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, compose_fast, materialize
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from miles_hydra.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
QWEN4B = ["model=qwen3_4b", "precision=bf16"]
QWEN30B = ["model=qwen3_30b_a3b", "precision=bf16"]

# (id, overrides, the key ConfigError.key must be, text the message must contain)
INVALID: list[tuple[str, list[str], str, str]] = [
    (
        "tp_not_dividing_heads",
        [
            *QWEN4B,
            "parallelism.tensor_model_parallel_size=3",
            "parallelism.actor_num_gpus_per_node=3",
        ],
        "parallelism.tensor_model_parallel_size",
        "num_attention_heads=32",
    ),
    (
        "tp_not_dividing_query_groups",
        [*QWEN30B, "parallelism=tp8"],
        "parallelism.tensor_model_parallel_size",
        "num_query_groups=4",
    ),
    (
        "pp_not_dividing_layers",
        ["model=deepseek_v3", "precision=bf16", "parallelism=disagg_tp4_pp4_ep8_8node"],
        "parallelism.pipeline_model_parallel_size",
        "decoder_last_pipeline_num_layers=16",  # the fix: keep PP=4 with an uneven last stage
    ),
    (
        "uneven_pipeline_middle_not_even",
        [
            "model=deepseek_v3",
            "precision=bf16",
            "parallelism=disagg_tp4_pp4_ep8_8node",
            "parallelism.decoder_last_pipeline_num_layers=17",
        ],
        "parallelism.decoder_last_pipeline_num_layers",
        "leaves 44 of model.num_layers=61 for 3 middle stage(s)",
    ),
    (
        "uneven_pipeline_without_pp",
        [*QWEN4B, "parallelism.decoder_first_pipeline_num_layers=4"],
        "parallelism.decoder_first_pipeline_num_layers",
        "pipeline_model_parallel_size >= 2",
    ),
    (
        "uneven_pipeline_both_ends_leave_nothing",
        [
            *QWEN4B,
            "parallelism=tp8_pp2",
            "parallelism.decoder_first_pipeline_num_layers=20",
            "parallelism.decoder_last_pipeline_num_layers=20",
        ],
        "parallelism.decoder_last_pipeline_num_layers",
        "for no layers",
    ),
    (
        "ep_on_dense_model",
        [*QWEN4B, "parallelism=tp4_ep8"],
        "parallelism.expert_model_parallel_size",
        "dense",
    ),
    (
        "experts_not_divisible_by_ep",
        [
            "model=glm4.5",
            "precision=bf16",
            "parallelism=tp4_ep8",
            "parallelism.actor_num_nodes=8",
            "parallelism.expert_model_parallel_size=64",
        ],
        "parallelism.expert_model_parallel_size",
        "num_experts=160",
    ),
    (
        "ep_etp_pp_not_dividing_gpus",
        [*QWEN30B, "parallelism=tp4_ep8", "parallelism.expert_model_parallel_size=16"],
        "parallelism.expert_model_parallel_size",
        "EP*ETP*PP=16",
    ),
    (
        "etp_not_fitting_beside_ep",
        [*QWEN30B, "parallelism=tp4_ep8", "parallelism.expert_tensor_parallel_size=2"],
        "parallelism.expert_tensor_parallel_size",
        "EP*ETP*PP=8*2*1=16 does not divide the 8 actor GPUs; use ETP in [1]",
    ),
    (
        "tp_pp_cp_not_dividing_gpus",
        [*QWEN4B, "parallelism=tp8", "parallelism.actor_num_gpus_per_node=4"],
        "parallelism.tensor_model_parallel_size",
        "TP*PP*CP=8",
    ),
    (
        "batch_invariant_broken",
        ["rollout.global_batch_size=30"],
        "rollout.global_batch_size",
        "batch invariant",
    ),
    (
        "steps_not_dividing_samples",
        ["rollout.num_steps_per_rollout=5"],
        "rollout.num_steps_per_rollout",
        "8 x 4 = 32",
    ),
    (
        "gbs_not_divisible_by_micro_x_dp",
        ["parallelism.micro_batch_size=5"],
        "rollout.global_batch_size",
        "micro_batch_size x data-parallel size",
    ),
    (
        "rollout_gpus_not_divisible_by_engine",
        ["parallelism.rollout_num_gpus_per_engine=3"],
        "parallelism.rollout_num_gpus_per_engine",
        "does not divide the 1 rollout GPUs",
    ),
    (
        "engine_tp_not_dividing_heads",
        [
            *QWEN4B,
            "parallelism=tp2",
            "parallelism.colocate=false",
            "parallelism.rollout_num_gpus=6",
            "parallelism.rollout_num_gpus_per_engine=6",
        ],
        "parallelism.rollout_num_gpus_per_engine",
        "num_attention_heads=32",
    ),
    (
        "slurm_too_few_nodes",
        [
            *QWEN4B,
            "parallelism=tp8_pp2",
            "cluster=slurm",
            "cluster.gpus_per_node=8",
            "cluster.nodes=1",
        ],
        "parallelism.actor_num_nodes",
        "cluster.nodes=1",
    ),
    (
        "slurm_too_few_gpus_per_node",
        [*QWEN4B, "parallelism=tp8", "cluster=slurm", "cluster.gpus_per_node=4"],
        "parallelism.actor_num_gpus_per_node",
        "cluster.gpus_per_node=4",
    ),
    (
        "slurm_gpus_do_not_add_up",
        [
            *QWEN30B,
            "parallelism=disagg_tp4_pp4_ep8_8node",
            "cluster=slurm",
            "cluster.nodes=4",
            "cluster.gpus_per_node=8",
        ],
        "cluster.nodes",
        "needs 64",
    ),
    (
        "miles_synthetic_task_with_miles_rm",
        [*QWEN4B, "reward=math"],
        "reward.rm_type",
        "cannot score the synthetic task arithmetic",
    ),
    (
        "miles_task_reward_on_prompt_file",
        [*QWEN4B, "data=jsonl", "data.prompt_data=/data/p.jsonl"],
        "reward.rm_type",
        "needs a synthetic task",
    ),
    (
        "miles_rm_type_without_equivalent",
        [*QWEN4B, "reward.rm_type=exact_match"],
        "reward.rm_type",
        "no miles equivalent",
    ),
    (
        "miles_eval_without_eval_prompt_data",
        [*QWEN4B, "data=jsonl", "data.prompt_data=/data/p.jsonl", "reward=math"],
        "rollout.eval_interval",
        "data.eval_prompt_data",
    ),
    (
        "miles_async_without_correction",
        [*QWEN30B, "parallelism=disagg_tp4_pp4_ep8_8node", "rollout.async_training=true"],
        "rollout.async_training",
        "off-policy correction",
    ),
    (
        "miles_secret_in_backend_env",
        [*QWEN4B, "+backend.env.WANDB_API_KEY=x"],
        "backend.env.WANDB_API_KEY",
        "must not be in the config",
    ),
    (
        "miles_unknown_task_knob",
        [*QWEN4B, "+data.task_kwargs.width=3"],
        "data.task_kwargs",
        "does not know",
    ),
    ("mtp_without_mtp_heads", [*QWEN4B, "speculative=mtp"], "speculative", "mtp_num_layers=0"),
    (
        "mtp_online_without_mtp_heads",
        [*QWEN4B, "speculative=mtp_online"],
        "speculative",
        "model=deepseek_v3, model=glm4.5, model=mimo_7b",
    ),
    (
        "mtp_online_without_algorithm",
        ["speculative=mtp_online", "speculative.algorithm=''"],
        "speculative.algorithm",
        "online MTP",
    ),
    (
        "eagle_without_draft",
        [*QWEN4B, "speculative=eagle"],
        "speculative.draft_model_path",
        "eagle",
    ),
    (
        "chain_draft_tokens",
        ["speculative=mtp_online", "speculative.num_draft_tokens=5"],
        "speculative.num_draft_tokens",
        "num_steps + 1",
    ),
    (
        "kl_loss_coef_without_use_kl_loss",
        ["algorithm.kl_loss_coef=0.01"],
        "algorithm.kl_loss_coef",
        "use_kl_loss",
    ),
    (
        "kl_coef_with_kl_loss_coef",
        ["algorithm=reinforce_pp", "algorithm.use_kl_loss=true", "algorithm.kl_loss_coef=0.01"],
        "algorithm.kl_coef",
        "mutually exclusive",
    ),
    (
        "ppo_with_kl_coef",
        [
            "algorithm=ppo",
            "algorithm.kl_loss_coef=0.0",
            "algorithm.use_kl_loss=false",
            "algorithm.kl_coef=0.1",
        ],
        "algorithm.kl_coef",
        "ppo",
    ),
    (
        "reinforce_pp_without_normalization",
        ["algorithm=reinforce_pp", "algorithm.normalize_advantages=false"],
        "algorithm.normalize_advantages",
        "reinforce_plus_plus",
    ),
    (
        "tis_with_rollout_logprobs",
        ["algorithm=grpo_tis", "algorithm.use_rollout_logprobs=true"],
        "algorithm.use_rollout_logprobs",
        "correction.kind=tis",
    ),
    (
        "r3_on_dense_model",
        ["algorithm.use_rollout_routing_replay=true"],
        "algorithm.use_rollout_routing_replay",
        "dense",
    ),
    (
        "miles_colocate_with_async",
        [*QWEN4B, "algorithm=grpo_tis", "rollout.async_training=true"],
        "rollout.async_training",
        "colocate",
    ),
    (
        "fp8_pre_hopper",
        ["model=qwen3_4b", "precision=fp8", "cluster.gpu_compute_capability=8.0"],
        "precision",
        "compute capability >= 9.0",
    ),
    ("local_with_fp8", ["precision=fp8"], "precision", "backend=local"),
    (
        "local_with_tp8",
        [*QWEN4B, "parallelism=tp8", "backend=local"],
        "parallelism",
        "backend=local",
    ),
    (
        "local_with_deepseek_v3",
        ["model=deepseek_v3", "precision=bf16", "backend=local"],
        "backend",
        "deepseek_v3",
    ),
    (
        "local_with_eagle",
        ["speculative=eagle", "speculative.draft_model_path=/d"],
        "speculative",
        "backend=local",
    ),
    (
        "miles_without_hf_checkpoint",
        [*QWEN4B, "model.hf_checkpoint=null"],
        "model.hf_checkpoint",
        "backend=miles",
    ),
    (
        "miles_without_ref_load",
        [*QWEN4B, "model.torch_dist_checkpoint=null", "model.convert=never"],
        "checkpoint.ref_load",
        "torch_dist",
    ),
    ("miles_with_fp32", ["model=qwen3_4b"], "precision", "miles"),
    (
        "warm_start_without_its_lr",
        ["data=sorting", "data.warmup_sft_steps=10"],
        "data.warmup_sft_lr",
        "is required",
    ),
    ("lr_zero", ["algorithm.lr=0"], "algorithm.lr", "must be > 0"),
    ("lr_negative", ["algorithm.lr=-0.001"], "algorithm.lr", "must be > 0"),
    (
        "lr_decay_style",
        ["algorithm.lr_decay_style=exponential"],
        "algorithm.lr_decay_style",
        "cosine",
    ),
    ("eps_clip_above_one", ["algorithm.eps_clip=1.5"], "algorithm.eps_clip", "(0, 1)"),
    ("eps_clip_high_negative", ["algorithm.eps_clip_high=-0.1"], "algorithm.eps_clip_high", "> 0"),
    ("dual_clip_below_one", ["algorithm.eps_clip_c=0.5"], "algorithm.eps_clip_c", "> 1"),
    (
        "tis_upper_below_one",
        ["algorithm=grpo_tis", "algorithm.correction.upper=0.5"],
        "algorithm.correction.upper",
        "below 1",
    ),
    (
        "correction_lower_above_upper",
        ["algorithm=grpo_mis", "algorithm.correction.lower=3.0"],
        "algorithm.correction.lower",
        "[0, algorithm.correction.upper=2.0]",
    ),
    (
        "correction_upper_zero",
        ["algorithm=grpo_mis", "algorithm.correction.upper=0"],
        "algorithm.correction.upper",
        "> 0",
    ),
    (
        "mis_only_use_rs_with_tis",
        ["algorithm=grpo_tis", "algorithm.correction.use_rs=true"],
        "algorithm.correction.use_rs",
        "kind=mis",
    ),
    (
        "mis_only_batch_normalize_with_icepop",
        ["algorithm/correction=icepop", "algorithm.correction.batch_normalize=true"],
        "algorithm.correction.batch_normalize",
        "kind=mis",
    ),
    (
        "sglang_key_with_underscores",
        ["+rollout.sglang.cuda_graph_max_bs=8"],
        "rollout.sglang.cuda_graph_max_bs",
        "cuda-graph-max-bs",
    ),
    (
        "sglang_mem_fraction_above_one",
        ["rollout.sglang_mem_fraction_static=1.5"],
        "rollout.sglang_mem_fraction_static",
        "(0, 1)",
    ),
    ("top_p_zero", ["rollout.rollout_top_p=0"], "rollout.rollout_top_p", "(0, 1]"),
    (
        "grpo_group_of_one",
        ["rollout.n_samples_per_prompt=1"],
        "rollout.n_samples_per_prompt",
        "groups of one",
    ),
    (
        "sequence_parallel_without_tp",
        ["parallelism.sequence_parallel=true"],
        "parallelism.sequence_parallel",
        "tensor_model_parallel_size > 1",
    ),
    (
        "disagg_without_rollout_gpus",
        ["parallelism.colocate=false"],
        "parallelism.rollout_num_gpus",
        "colocate=false",
    ),
    (
        "dynamic_batch_without_token_budget",
        ["parallelism.use_dynamic_batch_size=true"],
        "parallelism.max_tokens_per_gpu",
        "use_dynamic_batch_size",
    ),
    (
        "query_groups_not_dividing_heads",
        ["model.num_query_groups=3"],
        "model.num_query_groups",
        "num_attention_heads=4",
    ),
    (
        "moe_topk_above_experts",
        ["model=tiny_moe", "model.moe_router_topk=9"],
        "model.moe_router_topk",
        "num_experts=8",
    ),
    ("jsonl_without_prompt_data", ["data=jsonl"], "data.prompt_data", ""),
    (
        "prompt_data_not_jsonl",
        ["data=jsonl", "data.prompt_data=/data/p.csv"],
        "data.prompt_data",
        "parquet",
    ),
    (
        "custom_reward_without_path",
        ["reward=custom", "reward.custom_rm_path=null"],
        "reward.custom_rm_path",
        "rm_type=custom",
    ),
    (
        "custom_reward_not_module_function",
        ["reward.custom_rm_path=my_pkg.score"],
        "reward.custom_rm_path",
        "module:function",
    ),
    (
        "wandb_without_project",
        ["logging=wandb", "logging.wandb_project=null"],
        "logging.wandb_project",
        "logging=wandb",
    ),
    ("wandb_mode", ["logging.wandb_mode=sometimes"], "logging.wandb_mode", "offline"),
    ("reward_type", ["reward.rm_type=bleu"], "reward.rm_type", "exact_match"),
    (
        "router_load_balancing_type",
        ["model=tiny_moe", "model.moe_router_load_balancing_type=aux"],
        "model.moe_router_load_balancing_type",
        "seq_aux_loss",
    ),
    (
        "fp8_recipe",
        ["model=qwen3_4b", "precision=fp8", "precision.fp8_recipe=fancy"],
        "precision.fp8_recipe",
        "blockwise",
    ),
    ("keep_last_zero", ["checkpoint.keep_last=0"], "checkpoint.keep_last", ">= 1"),
    ("cluster_nodes_zero", ["cluster.nodes=0"], "cluster.nodes", ">= 1"),
    (
        "wrong_type_int",
        ["rollout.rollout_batch_size=eight"],
        "rollout.rollout_batch_size",
        "Integer",
    ),
    ("wrong_type_bool", ["parallelism.colocate=maybe"], "parallelism.colocate", "not a valid bool"),
    ("wrong_enum_value", ["algorithm.kl_loss_type=k4"], "algorithm.kl_loss_type", "low_var_kl"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_names_key(overrides: list[str], key: str, text: str) -> None:
    with pytest.raises((ConfigError, OmegaConfBaseException)) as info:
        materialize(compose_fast(overrides))
    exc = info.value
    named = exc.key if isinstance(exc, ConfigError) else getattr(exc, "full_key", "")
    assert named == key, str(exc)
    assert text in str(exc), str(exc)


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) + len(COMPOSE_TIME) >= 30


# Typos Hydra refuses at compose time: (id, overrides, text the error must contain)
COMPOSE_TIME: list[tuple[str, list[str], list[str]]] = [
    ("typo_in_key", ["model.num_layerz=3"], ["model.num_layerz", "ModelConfig"]),
    ("typo_in_option", ["model=qwen3_4bb"], ["model/qwen3_4bb", "qwen3_4b"]),
    ("typo_in_group", ["modle=qwen3_4b"], ["modle"]),
    ("typo_in_nested_option", ["algorithm/correction=tiss"], ["algorithm/correction/tiss", "tis"]),
    (
        "wrong_type_at_compose",
        ["rollout.rollout_batch_size=abc"],
        ["rollout.rollout_batch_size", "Integer"],
    ),
    (
        "unknown_enum_at_compose",
        ["algorithm.advantage_estimator=grpoo"],
        ["algorithm.advantage_estimator", "reinforce_plus_plus"],
    ),
    ("unknown_reward_type_at_compose", ["reward.rm_type=bleu"], ["reward.rm_type", "dapo"]),
]


@pytest.mark.parametrize(
    ("overrides", "texts"), [c[1:] for c in COMPOSE_TIME], ids=[c[0] for c in COMPOSE_TIME]
)
def test_compose_time_typo_names_key(overrides: list[str], texts: list[str]) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_config(overrides)
    message = str(info.value) + str(info.value.__cause__ or "")
    for text in texts:
        assert text in message, message


# Exclusive choices are Enums: a config that skipped Hydra (a plain dict, a saved YAML) still gets
# the key and the valid options from materialize. (key, bad value, an option the message lists)
ENUM_FIELDS = [
    ("logging.wandb_mode", "sometimes", "disabled"),
    ("reward.rm_type", "bleu", "exact_match"),
    ("model.moe_router_load_balancing_type", "aux", "seq_aux_loss"),
]


@pytest.mark.parametrize(("key", "value", "option"), ENUM_FIELDS, ids=[f[0] for f in ENUM_FIELDS])
def test_materialize_names_enum_options(key: str, value: str, option: str) -> None:
    group, field = key.split(".")
    with pytest.raises(ConfigError) as info:
        materialize({group: {field: value}})
    assert info.value.key == key, str(info.value)
    assert f"{key}={value!r}" in str(info.value) and option in str(info.value), str(info.value)


CLI_CASES = [
    (["model.num_layerz=3"], "model.num_layerz"),
    (["model=qwen3_4bb"], "model=qwen3_4bb: no such option; did you mean model=qwen3_4b?"),
    (["rollout.global_batch_size=30"], "rollout.global_batch_size"),
    (["model=qwen3_4b", "precision=fp8", "cluster.gpu_compute_capability=8.0"], "precision"),
    (
        ["model=qwen3_30b_a3b", "precision=bf16", "parallelism=tp8"],
        "parallelism.tensor_model_parallel_size",
    ),
]


@pytest.mark.parametrize(("overrides", "key"), CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_cli_refuses_before_anything_runs(tmp_path: Path, overrides: list[str], key: str) -> None:
    """The real entry point: non-zero exit, the key on stderr, no job started or submitted."""
    out = tmp_path / "runs"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "launch.py", *overrides, "mode=plan", f"output_root={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode != 0, proc.stdout
    assert key in proc.stderr, proc.stderr
    assert "---- plan ----" not in proc.stdout
    # Hydra makes its run dir (config snapshot, log) before calling the task; nothing else may exist.
    made = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert all(".hydra" in p.parts or p.suffix == ".log" for p in made), made
    assert not list(out.rglob(".submitit")) if out.exists() else True


# Partial rollout, over-sampling, dynamic sampling, staleness (issue 16): key and message text.
ROLLOUT_MODE_INVALID: list[tuple[str, list[str], str, str]] = [
    (
        "over_sampling_below_batch",
        ["rollout.over_sampling_batch_size=4"],
        "rollout.over_sampling_batch_size",
        ">= rollout.rollout_batch_size=8",
    ),
    (
        "mask_offpolicy_without_partial",
        ["rollout.mask_offpolicy_in_partial_rollout=true"],
        "rollout.mask_offpolicy_in_partial_rollout",
        "rollout.partial_rollout=true",
    ),
    (
        "partial_without_correction_or_mask",
        ["rollout.partial_rollout=true"],
        "rollout.partial_rollout",
        "off-policy correction",
    ),
    (
        "custom_filter_without_path",
        ["rollout.dynamic_sampling=custom"],
        "rollout.dynamic_sampling_filter_path",
        "required",
    ),
    (
        "filter_path_without_custom",
        ["rollout.dynamic_sampling_filter_path=a.b:c"],
        "rollout.dynamic_sampling_filter_path",
        "dynamic_sampling=custom",
    ),
    (
        "filter_path_not_a_function",
        ["rollout.dynamic_sampling=custom", "rollout.dynamic_sampling_filter_path=filters"],
        "rollout.dynamic_sampling_filter_path",
        "package.module:function",
    ),
    (
        "unknown_dynamic_sampling",
        ["rollout.dynamic_sampling=all_std"],
        "rollout.dynamic_sampling",
        "nonzero_std",
    ),
    (
        "staleness_zero",
        ["rollout.partial_rollout=true", "algorithm=grpo_tis", "rollout.max_weight_staleness=0"],
        "rollout.max_weight_staleness",
        ">= 1",
    ),
    (
        "staleness_without_off_policy_data",
        ["rollout.max_weight_staleness=2"],
        "rollout.max_weight_staleness",
        "every sample is on-policy",
    ),
    (
        "local_async_without_correction",
        [
            "rollout.async_training=true",
            "parallelism.colocate=false",
            "parallelism.rollout_num_gpus=1",
        ],
        "rollout.async_training",
        "off-policy correction",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [c[1:] for c in ROLLOUT_MODE_INVALID],
    ids=[c[0] for c in ROLLOUT_MODE_INVALID],
)
def test_rollout_mode_configs_name_key(overrides: list[str], key: str, text: str) -> None:
    with pytest.raises((ConfigError, OmegaConfBaseException)) as info:
        materialize(compose_fast(overrides))
    exc = info.value
    named = exc.key if isinstance(exc, ConfigError) else getattr(exc, "full_key", "")
    assert named == key, str(exc)
    assert text in str(exc), str(exc)
