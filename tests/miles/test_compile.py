"""The miles compiler: golden files, flag-table check, emission rules, refusals, model args."""

from __future__ import annotations

import base64
import difflib
import re

import pytest
import yaml
from support.combos import (
    ALGORITHMS,
    GOLDEN_DIR,
    MODELS,
    PARALLELISMS,
    PRECISIONS,
    REGEN_COMMAND,
    SPECULATIVE,
    SYNTHETIC_COMBOS,
    all_combos,
    compose_run,
    golden_text,
    grid_combos,
)

from miles_hydra.backends.miles.check.flags import check_argv
from miles_hydra.backends.miles.compile import compile_miles, plan_values
from miles_hydra.backends.miles.model_args import model_args
from miles_hydra.errors import ConfigError

COMBO_NAMES = [c.name for c in all_combos()]


@pytest.mark.parametrize("name", COMBO_NAMES)
def test_golden_argv_and_env(miles_combos, name: str) -> None:
    """Each valid combo's compiled argv + env equals its golden file; refused ones have none."""
    path = GOLDEN_DIR / f"{name}.txt"
    if name in miles_combos.refused:
        assert not path.exists(), f"{path.name} is stale: run {REGEN_COMMAND}"
        return
    combo = next(c for c in miles_combos.combos if c.name == name)
    cmd = miles_combos.commands[name]
    actual = golden_text(combo, cmd.entry, cmd.argv, cmd.env)
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True),
                actual.splitlines(True),
                f"golden/{path.name}",
                "compiled",
            )
        )
        pytest.fail(
            f"compiled miles command differs from the golden file:\n{diff}\n"
            f"If the change is intended, regenerate with: {REGEN_COMMAND}"
        )


def test_every_compiled_argv_passes_the_flag_table(miles_combos) -> None:
    """No unknown flag, missing value, valued switch, bad type or bad choice (miles-rl 0.0.2)."""
    problems = {name: check_argv(cmd.argv) for name, cmd in miles_combos.commands.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_combinations_cover_every_preset(miles_combos) -> None:
    """Every option of each group reaches miles in at least one valid combination."""
    grid = {c.name for c in grid_combos()}
    parts = [name.split("__") for name in miles_combos.valid if name in grid]
    for position, options in enumerate((MODELS, PARALLELISMS, ALGORITHMS, SPECULATIVE, PRECISIONS)):
        seen = {p[position] for p in parts}
        wanted = {o.replace(".", "_").replace("+", "_") for o in options}
        assert wanted <= seen, f"never valid: {sorted(wanted - seen)}"
    assert len(miles_combos.valid) >= 30 and len(grid) == 63
    assert {n for n in miles_combos.valid if n.startswith("synthetic__")} == set(SYNTHETIC_COMBOS)


REFUSAL_REASONS = {  # substring of each refusal's message, by (model, parallelism, spec)
    "needs an MoE model": lambda n: "ep8" in n,
    "does not divide model.num_query_groups": lambda n: "__tp8" in n,
    "does not divide model.num_layers": lambda n: "pp" in n,
}


def test_invalid_combos_are_refused_by_our_validation(miles_combos) -> None:
    """Refused before miles sees them, each with a key, a reason and a fix."""
    assert miles_combos.refused
    for name, error in miles_combos.refused.items():
        assert error.key and error.fix, name
        reasons = [why for why, applies in REFUSAL_REASONS.items() if why in str(error)]
        assert reasons and REFUSAL_REASONS[reasons[0]](name), f"{name}: {error}"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data=arithmetic"], "reward.rm_type"),  # miles' math RM cannot read task labels
        (["reward=task"], "reward.rm_type"),  # task verifier on a prompt file
        (["reward.rm_type=exact_match"], "reward.rm_type"),
        (["data.eval_prompt_data=null"], "rollout.eval_interval"),
        (["data=sorting", "reward=task", "+data.task_kwargs.width=3"], "data.task_kwargs"),
        (["+backend.env.WANDB_API_KEY=x"], "backend.env.WANDB_API_KEY"),
        (
            [
                "parallelism=disagg_tp4_pp4_ep8_8node",
                "model=qwen3_30b_a3b",
                "rollout.async_training=true",
            ],
            "rollout.async_training",
        ),
    ],
)
def test_miles_only_rules_refuse_when_materialized(overrides: list[str], key: str) -> None:
    """rules.validate_for_miles runs in validation: refused before anything compiles or queues."""
    with pytest.raises(ConfigError) as info:
        compose_run(["model=qwen3_4b", "parallelism=tp2", "precision=bf16", *overrides])
    assert info.value.key == key and info.value.fix


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["precision=fp32"], "precision"),
        (["speculative=eagle"], "speculative.draft_model_path"),
        (["rollout.async_training=true"], "rollout.async_training"),
        (
            ["model=qwen3_4b", "algorithm.use_rollout_routing_replay=true"],
            "algorithm.use_rollout_routing_replay",
        ),
    ],
)
def test_schema_validation_refuses_miles_mistakes(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_run(["model=qwen3_4b", "parallelism=tp2", "precision=bf16", *overrides])
    assert info.value.key == key


def _flags(argv: list[str]) -> set[str]:
    return {t for t in argv if t.startswith("--")}


def test_emission_rules(miles_combos) -> None:
    for name, cmd in miles_combos.commands.items():
        run = miles_combos.valid[name]
        flags = _flags(cmd.argv)
        assert len([t for t in cmd.argv if t.startswith("--")]) == len(flags), f"{name}: duplicate"
        # BooleanOptionalAction offloads stay unset: miles derives them from --colocate.
        assert not flags & {"--offload-train", "--no-offload-train", "--offload-rollout"}
        assert ("--colocate" in flags) == run.parallelism.colocate
        assert ("--rollout-num-gpus" in flags) != run.parallelism.colocate
        assert ("--use-kl-loss" in flags) == run.algorithm.use_kl_loss
        assert ("--sequence-parallel" in flags) == run.parallelism.sequence_parallel
        assert ("--enable-mtp-training" in flags) == (run.speculative.mode.value == "mtp_online")
        assert cmd.entry.endswith("/train.py")


def test_secrets_only_travel_in_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "sekrit-123")
    run = compose_run(
        [
            "model=qwen3_4b",
            "parallelism=tp2",
            "precision=bf16",
            "logging=wandb",
            "logging.wandb_mode=online",
        ]
    )
    cmd = compile_miles(run)
    assert "--use-wandb" in cmd.argv and "--wandb-key" not in cmd.argv
    assert "sekrit" not in " ".join(cmd.argv) + repr(cmd.env)
    assert cmd.secret_env_keys == ("WANDB_API_KEY",)
    assert all("sekrit" not in p.read_text() for p in GOLDEN_DIR.glob("*.txt"))


def test_mis_config_is_inline_base64_yaml() -> None:
    run = compose_run(["model=qwen3_4b", "parallelism=tp2", "precision=bf16", "algorithm=grpo_mis"])
    argv = compile_miles(run).argv
    value = argv[argv.index("--custom-config-path") + 1]
    decoded = yaml.safe_load(base64.b64decode(value.removeprefix("base64:")))
    assert decoded == {
        "use_tis": True,
        "use_rs": True,
        "tis_level": "token",
        "rs_level": "token",
        "tis_mode": "mask",
        "tis_lower_bound": 0.5,
        "tis_upper_bound": 2.0,
        "rs_lower_bound": None,
        "rs_upper_bound": None,
        "rs_veto_threshold": 1e-4,
        "tis_batch_normalize": True,
    }
    assert argv[argv.index("--custom-tis-function-path") + 1].endswith(
        "mis.compute_mis_weights_with_cp"
    )


def test_sglang_free_mapping_and_fp8_env() -> None:
    run = compose_run(
        [
            "model=qwen3_4b",
            "parallelism=tp2",
            "precision=fp8",
            "precision.rollout_checkpoint=/root/models/Qwen3-4B-FP8",
            "+rollout.sglang.cuda-graph-bs=[1,2,4]",
            "+rollout.sglang.disable-radix-cache=true",
            "+rollout.sglang.enable-metrics=false",
            "+rollout.sglang.log-level=warning",
        ]
    )
    cmd = compile_miles(run)
    text = " ".join(cmd.argv)
    assert "--sglang-cuda-graph-bs 1 2 4" in text and "--sglang-disable-radix-cache" in text
    assert "--sglang-log-level warning" in text and "--sglang-enable-metrics" not in text
    assert "--fp8-recipe blockwise" in text and cmd.env["NVTE_FP8_BLOCK_SCALING_FP32_SCALES"] == "1"
    assert check_argv(cmd.argv) == []


def test_plan_values_follow_the_config(miles_combos) -> None:
    run = miles_combos.valid["qwen3_8b__tp8__ppo__eagle__bf16"]
    plan = plan_values(run)
    assert plan["world_size"] == 8 and plan["global_batch_size"] == 256
    assert plan["rollout_num_gpus"] == 8  # colocated ppo (v0.1.0): the critic shares the GPUs
    assert plan["sglang_tp_size"] == 2 and plan["use_critic"] is True


# --- model args against the upstream files (miles scripts/models, slime/vime for llama/mimo) ---

UPSTREAM = {
    "qwen3_0.6b": "--swiglu --num-layers 28 --hidden-size 1024 --ffn-hidden-size 3072 --num-attention-heads 16 --group-query-attention --num-query-groups 8 --use-rotary-position-embeddings --disable-bias-linear --normalization RMSNorm --norm-epsilon 1e-6 --rotary-base 1000000 --vocab-size 151936 --kv-channels 128 --qk-layernorm",  # noqa: E501
    "qwen3_4b": "--swiglu --num-layers 36 --hidden-size 2560 --ffn-hidden-size 9728 --num-attention-heads 32 --group-query-attention --num-query-groups 8 --use-rotary-position-embeddings --disable-bias-linear --normalization RMSNorm --norm-epsilon 1e-6 --rotary-base 1000000 --vocab-size 151936 --kv-channels 128 --qk-layernorm",  # noqa: E501
    "qwen3_30b_a3b": "--disable-bias-linear --qk-layernorm --group-query-attention --num-attention-heads 32 --num-query-groups 4 --kv-channels 128 --num-layers 48 --hidden-size 2048 --ffn-hidden-size 6144 --normalization RMSNorm --position-embedding-type rope --norm-epsilon 1e-6 --rotary-percent 1.0 --swiglu --untie-embeddings-and-output-weights --vocab-size 151936 --rotary-base 1000000 --moe-ffn-hidden-size 768 --moe-router-score-function softmax --moe-token-dispatcher-type alltoall --moe-router-topk 8 --moe-layer-freq [1]*48 --num-experts 128 --moe-grouped-gemm --moe-token-drop-policy probs --moe-router-dtype fp32 --moe-permute-fusion --moe-aux-loss-coeff 0",  # noqa: E501
    "deepseek_v3": "--disable-bias-linear --num-layers 61 --hidden-size 7168 --ffn-hidden-size 18432 --num-attention-heads 128 --kv-channels 128 --normalization RMSNorm --position-embedding-type rope --norm-epsilon 1e-6 --swiglu --untie-embeddings-and-output-weights --vocab-size 129280 --multi-latent-attention --q-lora-rank 1536 --kv-lora-rank 512 --qk-head-dim 128 --qk-pos-emb-head-dim 64 --v-head-dim 128 --qk-layernorm --rotary-scaling-factor 40 --rotary-base 10000 --mscale 1.0 --mscale-all-dim 1.0 --attention-softmax-in-fp32 --no-rope-fusion --num-experts 256 --moe-layer-freq [0]*3+[1]*58 --moe-ffn-hidden-size 2048 --moe-router-topk 8 --moe-shared-expert-intermediate-size 2048 --moe-router-pre-softmax --moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-load-balancing-type seq_aux_loss --moe-token-dispatcher-type alltoall --moe-aux-loss-coeff 0 --moe-router-bias-update-rate 0 --moe-router-group-topk 4 --moe-router-num-groups 8 --moe-grouped-gemm --moe-router-topk-scaling-factor 2.5 --moe-router-dtype fp32 --moe-permute-fusion",  # noqa: E501
    "glm4.5": "--disable-bias-linear --qk-layernorm --group-query-attention --num-attention-heads 96 --num-query-groups 8 --kv-channels 128 --num-layers 92 --hidden-size 5120 --ffn-hidden-size 12288 --add-qkv-bias --normalization RMSNorm --position-embedding-type rope --rotary-percent 0.5 --swiglu --untie-embeddings-and-output-weights --vocab-size 151552 --rotary-base 1000000 --moe-ffn-hidden-size 1536 --moe-shared-expert-intermediate-size 1536 --moe-router-pre-softmax --moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-bias-update-rate 0 --moe-router-load-balancing-type seq_aux_loss --moe-token-dispatcher-type alltoall --moe-router-topk 8 --moe-router-topk-scaling-factor 2.5 --moe-layer-freq [0]*3+[1]*89 --num-experts 160 --moe-grouped-gemm --moe-router-dtype fp32 --moe-permute-fusion --moe-aux-loss-coeff 0",  # noqa: E501
    "llama3.1_8b": "--swiglu --num-layers 32 --hidden-size 4096 --ffn-hidden-size 14336 --num-attention-heads 32 --group-query-attention --num-query-groups 8 --max-position-embeddings 131072 --use-rotary-position-embeddings --disable-bias-linear --normalization RMSNorm --norm-epsilon 1e-5 --rotary-base 500000 --vocab-size 128256 --kv-channels 128 --use-rope-scaling --rotary-scaling-factor 8.0 --untie-embeddings-and-output-weights",  # noqa: E501
}


def _normalize(tokens: list[str]) -> list[object]:
    """Numbers compared as numbers, Megatron layer-pattern expressions as the lists they mean."""
    out: list[object] = []
    for token in tokens:
        if re.fullmatch(r"[\[\]0-9*+(),]+", token) and "[" in token:
            out.append(eval(token, {"__builtins__": {}}))  # noqa: S307 - digits, [], *, + only
            continue
        try:
            out.append(float(token))
        except ValueError:
            out.append(token)
    return out


@pytest.mark.parametrize("model", sorted(UPSTREAM))
def test_model_args_match_upstream_files(model: str) -> None:
    run = compose_run([f"model={model}", "parallelism=single", "precision=bf16"])
    assert _normalize(model_args(run.model)) == _normalize(UPSTREAM[model].split())


# ---------------------------------------------------------------- rollout modes (issue 16)
QWEN4B_TP2 = ["model=qwen3_4b", "parallelism=tp2"]
ROLLOUT_MODES = {
    "partial_masked": [
        *QWEN4B_TP2,
        "rollout.partial_rollout=true",
        "rollout.mask_offpolicy_in_partial_rollout=true",
        "rollout.over_sampling_batch_size=96",
    ],
    "dynamic_nonzero_std": [
        *QWEN4B_TP2,
        "rollout.dynamic_sampling=nonzero_std",
        "rollout.over_sampling_batch_size=128",
    ],
    "dynamic_custom_async": [
        "parallelism=disagg_tp4_pp4_ep8_8node",
        "model=qwen3_30b_a3b",
        "algorithm=grpo_tis",
        "rollout.async_training=true",
        "rollout.partial_rollout=true",
        "rollout.dynamic_sampling=custom",
        "rollout.dynamic_sampling_filter_path=my_pkg.filters:keep_group",
        "rollout.max_weight_staleness=2",
    ],
}
MODES_BASE = ["precision=bf16", "rollout=large"]


def _mode_run(name: str):
    return compose_run([*MODES_BASE, *ROLLOUT_MODES[name]])


def test_rollout_modes_compile_to_miles_flags() -> None:
    argv = compile_miles(_mode_run("partial_masked")).argv
    assert "--partial-rollout" in argv and "--mask-offpolicy-in-partial-rollout" in argv
    assert argv[argv.index("--over-sampling-batch-size") + 1] == "96"
    assert "--dynamic-sampling-filter-path" not in argv
    cmd = compile_miles(_mode_run("partial_masked"))
    assert cmd.env["MILES_USE_LEGACY_ROLLOUT_V1"] == "1"  # v0.1.0 masks on its legacy path only
    argv = compile_miles(_mode_run("dynamic_nonzero_std")).argv
    path = argv[argv.index("--dynamic-sampling-filter-path") + 1]
    assert path == "miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std"
    custom = compile_miles(_mode_run("dynamic_custom_async"))
    assert custom.entry.endswith("/train_async.py")
    argv = custom.argv
    assert argv[argv.index("--dynamic-sampling-filter-path") + 1] == "my_pkg.filters.keep_group"
    assert argv[argv.index("--max-weight-staleness") + 1] == "2"
    assert "MILES_USE_LEGACY_ROLLOUT_V1" not in custom.env
    assert check_argv(argv) == []
    default = compile_miles(compose_run([*MODES_BASE, *QWEN4B_TP2])).argv
    for flag in ("--partial-rollout", "--over-sampling-batch-size", "--max-weight-staleness"):
        assert flag not in default  # miles' defaults are left implicit (goldens unchanged)
    plan = plan_values(_mode_run("dynamic_nonzero_std"))
    assert plan["over_sampling_batch_size"] == 128 and plan["partial_rollout"] is False
    assert plan_values(compose_run([*MODES_BASE, *QWEN4B_TP2]))["over_sampling_batch_size"] == 64


def test_nonzero_std_filter_exists_in_miles_v0_1_0() -> None:
    """The emitted function path names a real function of miles v0.1.0."""
    from pathlib import Path

    from miles_hydra.config.rollout import MILES_NONZERO_STD_FILTER

    module, _, fn = MILES_NONZERO_STD_FILTER.rpartition(".")
    ref = Path(__file__).resolve().parents[3] / "shared/reference/miles-v0.1.0"
    if not ref.is_dir():
        pytest.skip("no miles v0.1.0 reference source here")
    source = (ref / (module.replace(".", "/") + ".py")).read_text()
    assert f"def {fn}(" in source


@pytest.mark.oracle
def test_rollout_modes_parse_in_miles_and_match_the_plan(monkeypatch) -> None:
    from miles_hydra.backends.miles.check.compare import compare
    from miles_hydra.backends.miles.check.oracle import oracle_python, parse_many

    if oracle_python() is None:
        pytest.skip("no miles oracle venv")
    runs = {name: _mode_run(name) for name in ROLLOUT_MODES}
    # the job env compile_miles sets for the masked mode (v0.1.0 checks it while parsing)
    monkeypatch.setenv("MILES_USE_LEGACY_ROLLOUT_V1", "1")
    argvs = {name: compile_miles(run).argv for name, run in runs.items()}
    argvs["neg_over_sampling_below_batch"] = [
        *argvs["dynamic_nonzero_std"], "--over-sampling-batch-size", "8",
    ]  # fmt: skip
    results = {r.id: r for r in parse_many(argvs).results}
    for name, run in runs.items():
        assert results[name].ok, results[name].error
        assert compare(plan_values(run), results[name].derived) == {}
        assert results[name].derived["over_sampling_batch_size"] >= run.rollout.rollout_batch_size
    assert not results["neg_over_sampling_below_batch"].ok
