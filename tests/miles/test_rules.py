"""miles v0.1.0's semantic rules (issue 14, item 2), refused before anything is submitted.

MTP drafts need a checkpoint with MTP layers (docs/advanced/speculative-decoding.md), FP8 and
INT4 QAT run end to end with a rollout checkpoint in that format (docs/advanced/low-precision.md,
int4-qat.md; INT4 only on MoE), and every algorithm field reaches miles or is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf
from support.combos import CONF_DIR, MODELS, SYNTHETIC_BASE, compose_many, compose_run

from miles_hydra.backends.miles.check.flags import check_argv
from miles_hydra.backends.miles.compile import compile_miles
from miles_hydra.config.algorithm import AlgorithmConfig, CorrectionConfig
from miles_hydra.config.miles_rules import MTP_MODEL_PRESETS
from miles_hydra.errors import ConfigError

MILES_V010_ARGUMENTS = (
    Path(__file__).resolve().parents[3] / "shared/reference/miles-v0.1.0/miles/utils/arguments.py"
)
DENSE = ["model=qwen3_4b", "parallelism=tp2", "precision=bf16"]
MOE = ["model=qwen3_30b_a3b", "parallelism=tp4_ep8", "precision=bf16"]


def _refused(overrides: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compose_run(overrides)
    assert info.value.fix, info.value
    return info.value


def _decoded_custom_config(argv: list[str]) -> dict[str, Any]:
    value = argv[argv.index("--custom-config-path") + 1].removeprefix("base64:")
    return yaml.safe_load(base64.b64decode(value))


# --- 1. MTP drafts only on checkpoints with MTP layers ------------------------------------------


def test_mtp_presets_are_the_models_with_mtp_layers() -> None:
    """The message names the presets whose checkpoints ship MTP layers: keep the list true."""
    with_mtp = {
        path.stem
        for path in CONF_DIR.glob("model/*.yaml")
        if OmegaConf.load(path).get("mtp_num_layers", 0) > 0
    }
    assert with_mtp == set(MTP_MODEL_PRESETS)


def test_mtp_drafts_refused_on_models_without_mtp_layers() -> None:
    """Every miles model x {mtp, mtp_online}: refused exactly where the checkpoint has no MTP
    layers, with the presets that have them and the EAGLE alternative in the fix."""
    named = {
        f"{model}__{spec}": (f"model={model}", "precision=bf16", f"speculative={spec}")
        for model in MODELS
        for spec in ("mtp", "mtp_online")
    }
    composed = compose_many(named)
    refused = {name: c.error for name, c in composed.items() if c.error is not None}
    without_mtp = [m for m in MODELS if m not in MTP_MODEL_PRESETS]
    assert set(refused) == {f"{m}__{s}" for m in without_mtp for s in ("mtp", "mtp_online")}
    assert len(refused) == 12  # 6 models without MTP layers x 2 MTP modes
    for error in refused.values():
        assert error.key == "speculative"
        assert "speculative=eagle speculative.draft_model_path=" in error.fix
        assert "model=deepseek_v3, model=glm4.5, model=mimo_7b" in error.fix


def test_mtp_layers_beyond_the_checkpoint_are_refused() -> None:
    error = _refused(
        [
            "model=deepseek_v3",
            "precision=bf16",
            "speculative=mtp_online",
            "speculative.mtp_num_layers=2",
        ]
    )
    assert error.key == "speculative.mtp_num_layers" and "speculative.mtp_num_layers=1" in error.fix


def test_online_mtp_on_a_model_with_mtp_layers_compiles() -> None:
    argv = compile_miles(
        compose_run(["model=mimo_7b", "precision=bf16", "speculative=mtp_online"])
    ).argv
    assert argv[argv.index("--mtp-num-layers") + 1] == "1" and "--enable-mtp-training" in argv


# --- 2. FP8 end to end ---------------------------------------------------------------------------


def test_fp8_without_an_fp8_rollout_checkpoint_is_refused() -> None:
    error = _refused([*DENSE, "precision=fp8"])
    assert error.key == "precision.rollout_checkpoint"
    assert "set precision.rollout_checkpoint=" in error.fix and "FP8" in error.fix


def test_fp8_rollout_checkpoint_is_what_sglang_serves() -> None:
    """As scripts/run_qwen3_30b_a3b.py --rollout-fp8: --hf-checkpoint is the FP8 checkpoint,
    Megatron still loads the BF16 torch_dist weights."""
    run = compose_run([*DENSE, "precision=fp8", "precision.rollout_checkpoint=/m/Qwen3-4B-FP8"])
    argv = compile_miles(run).argv
    assert argv[argv.index("--hf-checkpoint") + 1] == "/m/Qwen3-4B-FP8"
    assert argv[argv.index("--ref-load") + 1] == run.model.torch_dist_checkpoint
    assert argv[argv.index("--fp8-recipe") + 1] == "blockwise" and check_argv(argv) == []


def test_rollout_checkpoint_only_for_quantized_precisions() -> None:
    error = _refused([*DENSE, "precision.rollout_checkpoint=/m/Qwen3-4B-FP8"])
    assert error.key == "precision.rollout_checkpoint"


# --- 3. INT4 QAT: MoE only, INT4 rollout checkpoint ------------------------------------------


@pytest.mark.parametrize("model", ["qwen3_4b", "qwen3_8b", "llama3.1_8b", "mimo_7b"])
def test_int4_qat_on_a_dense_model_is_refused(model: str) -> None:
    error = _refused([f"model={model}", "precision=int4_qat", "precision.rollout_checkpoint=/x"])
    assert error.key == "precision" and "MoE" in error.fix


def test_int4_qat_needs_an_int4_rollout_checkpoint() -> None:
    error = _refused([*MOE, "precision=int4_qat"])
    assert error.key == "precision.rollout_checkpoint" and "W4A16" in error.fix
    run = compose_run([*MOE, "precision=int4_qat", "precision.rollout_checkpoint=/m/30B-INT4"])
    cmd = compile_miles(run)
    assert cmd.argv[cmd.argv.index("--hf-checkpoint") + 1] == "/m/30B-INT4"
    assert cmd.env["OPEN_TRAINING_INT4_FAKE_QAT_FLAG"] == "1"


# --- 4. Every algorithm field emitted or refused ---------------------------------------------

ALTERNATIVES: dict[str, Any] = {  # non-default values for fields whose default is None
    "eps_clip_high": 0.3,
    "eps_clip_c": 3.0,
    "lower": 0.1,
    "rs_level": "sequence",
    "rs_lower": 0.1,
    "rs_upper": 3.0,
    "rs_veto_threshold": 1e-3,
}


def _alternative(name: str, default: Any) -> str:
    if name in ALTERNATIVES:
        return str(ALTERNATIVES[name])
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, enum.Enum):
        return next(m.value for m in type(default) if m is not default)
    return str(default * 2 + 0.5 if isinstance(default, float) else default + 1)


def _field_overrides(prefix: str, cls: type) -> dict[str, str]:
    default = cls()
    return {
        f.name: f"{prefix}.{f.name}={_alternative(f.name, getattr(default, f.name))}"
        for f in dataclasses.fields(cls)
        if f.name not in ("correction", "kind")
    }


@pytest.mark.parametrize(
    ("base", "prefix", "cls"),
    [
        (["algorithm=grpo"], "algorithm", AlgorithmConfig),
        (["algorithm=grpo_tis"], "algorithm.correction", CorrectionConfig),
        (
            [  # the preset's switches off, so that turning each on is a change
                "algorithm=grpo_mis",
                "algorithm.correction.use_rs=false",
                "algorithm.correction.batch_normalize=false",
            ],
            "algorithm.correction",
            CorrectionConfig,
        ),
        (["algorithm=grpo"], "algorithm.correction", CorrectionConfig),
    ],
    ids=["algorithm", "correction_tis", "correction_mis", "correction_none"],
)
def test_every_algorithm_field_is_emitted_or_refused(base: list[str], prefix: str, cls) -> None:
    """A field at a non-default value changes the miles command or is refused: none is
    silently dropped."""
    overrides = _field_overrides(prefix, cls)
    named = {"base": (*DENSE, *base), **{k: (*DENSE, *base, o) for k, o in overrides.items()}}
    composed = compose_many(named)
    base_argv = compile_miles(composed["base"].unwrap()).argv
    ignored = []
    for name, override in overrides.items():
        c = composed[name]
        if c.error is not None:
            assert c.error.key and c.error.key.startswith(("algorithm", "rollout")), c.error
            continue
        if compile_miles(c.run).argv == base_argv:
            ignored.append(override)
    assert ignored == []


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["algorithm.gamma=0.99"], "algorithm.gamma"),
        (["algorithm.lambd=0.9"], "algorithm.lambd"),
        (["algorithm.value_clip=0.3"], "algorithm.value_clip"),
        (["algorithm.kl_loss_type=k1"], "algorithm.kl_loss_type"),
        (["algorithm.opsm_delta=0.01"], "algorithm.opsm_delta"),
        (["algorithm.use_unbiased_kl=true"], "algorithm.use_unbiased_kl"),
        (
            ["algorithm/correction=tis", "algorithm.correction.level=sequence"],
            "algorithm.correction.level",
        ),
        (
            ["algorithm/correction=icepop", "algorithm.correction.mode=mask"],
            "algorithm.correction.mode",
        ),
        (["algorithm.correction.upper=3.0"], "algorithm.correction.upper"),
    ],
)
def test_algorithm_fields_miles_ignores_are_refused(overrides: list[str], key: str) -> None:
    error = _refused([*DENSE, "algorithm=grpo", *overrides])
    assert error.key == key


def test_opsm_unbiased_kl_and_rs_level_reach_miles() -> None:
    """The flags exist in miles v0.1.0's parser (and the pinned flag table); rs_level reaches
    mis.py through the inline config."""
    run = compose_run(
        [
            *DENSE,
            "algorithm=grpo_mis",
            "algorithm.use_opsm=true",
            "algorithm.opsm_delta=0.001",
            "algorithm.use_kl_loss=true",
            "algorithm.kl_loss_coef=0.01",
            "algorithm.use_unbiased_kl=true",
            "algorithm.correction.rs_level=sequence",
        ]
    )
    argv = compile_miles(run).argv
    assert argv[argv.index("--opsm-delta") + 1] == "0.001"
    assert {"--use-opsm", "--use-unbiased-kl"} <= set(argv) and check_argv(argv) == []
    assert _decoded_custom_config(argv)["rs_level"] == "sequence"
    if MILES_V010_ARGUMENTS.exists():
        source = MILES_V010_ARGUMENTS.read_text()
        for flag in ("--use-opsm", "--opsm-delta", "--use-unbiased-kl"):
            assert re.search(rf'"{flag}"', source), flag


# --- The fixed experiment ----------------------------------------------------------------------


def test_fp8_speculative_experiment_validates_and_compiles() -> None:
    """FP8 both sides, an EAGLE draft (Qwen3 has no MTP layers), GRPO + TIS, on miles."""
    run = compose_run([*SYNTHETIC_BASE, "experiment=qwen3_30b_a3b_fp8_eagle"], base=False)
    argv = compile_miles(run).argv
    assert argv[argv.index("--hf-checkpoint") + 1] == "/root/models/Qwen3-30B-A3B-FP8"
    assert argv[argv.index("--sglang-speculative-draft-model-path") + 1].endswith("EAGLE3")
    assert argv[argv.index("--fp8-recipe") + 1] == "blockwise" and "--use-tis" in argv
    assert "--enable-mtp-training" not in argv and check_argv(argv) == []
