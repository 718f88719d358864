"""Preset combinations for backend=miles: the golden files and the oracle run over these.

Every model preset meets every parallelism preset once (9 x 7 pairs, on prompt files with a
miles reward); algorithm, speculative and precision presets rotate over the pairs so each
option meets many models and layouts. A few more combinations run synthetic tasks (our
prompt files under <run_dir>/data, our task and custom rewards).
Speculative and precision options follow what the checkpoint has (an EAGLE draft where a model
has no MTP layers, FP8 instead of INT4 QAT on dense models: ``fit_to_checkpoint``). Pairs our
validation refuses (EP on a dense model, TP over the KV heads, ...) stay in ``refused`` with the
reason; the rest are ``valid``. Composition is real Hydra.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from miles_hydra.config import RunConfig
from miles_hydra.config.miles_rules import MTP_MODEL_PRESETS
from miles_hydra.config.store import materialize, register_configs
from miles_hydra.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
GOLDEN_DIR = REPO_ROOT / "tests" / "miles" / "golden"
REGEN_COMMAND = "python scripts/regen_miles_golden.py"

MODELS = (
    "qwen3_0.6b",
    "qwen3_4b",
    "qwen3_8b",
    "llama3.1_8b",
    "mimo_7b",
    "qwen3_30b_a3b",
    "qwen3_235b_a22b",
    "deepseek_v3",
    "glm4.5",
)
PARALLELISMS = (
    "single",
    "tp2",
    "tp8",
    "tp8_pp2",
    "tp4_ep8",
    "tp4_ep8_2node",
    "disagg_tp4_pp4_ep8_8node",
)
ALGORITHMS = (
    "grpo",
    "grpo_tis",
    "grpo_mis",
    "gspo",
    "ppo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "grpo+icepop",
)
SPECULATIVE = ("none", "mtp_online", "eagle", "mtp")
PRECISIONS = ("bf16", "fp8", "int4_qat")
MOE_MODELS = ("qwen3_30b_a3b", "qwen3_235b_a22b", "deepseek_v3", "glm4.5")

# What every miles combination shares: prompt files, a miles reward, miles-scale batches.
BASE_OVERRIDES = (
    "backend=miles",
    "rollout=large",
    "data=jsonl",
    "data.prompt_data=/root/datasets/dapo-math-17k/dapo-math-17k.jsonl",
    "data.eval_prompt_data=/root/datasets/aime-2024/aime-2024.jsonl",
    "reward=math",
    "experiment_name=golden",
    "output_root=/runs",
)
# Synthetic tasks on miles (prompt files written into <run_dir>/data by the job, our rewards).
SYNTHETIC_BASE = ("backend=miles", "experiment_name=golden", "output_root=/runs")
SYNTHETIC_COMBOS = {  # name -> overrides after SYNTHETIC_BASE
    # the headline command: conf defaults data=arithmetic reward=task rollout=default
    "synthetic__qwen3_30b_a3b__tp4_ep8_2node__grpo__eagle__fp8": (
        "model=qwen3_30b_a3b",
        "parallelism=tp4_ep8_2node",
        "precision=fp8",
        "precision.rollout_checkpoint=/root/models/Qwen3-30B-A3B-FP8",
        "speculative=eagle",
        "speculative.draft_model_path=/root/models/Qwen3-30B-A3B-EAGLE3",
        "algorithm=grpo",
    ),
    # colocated PPO (rollout GPUs = actor + critic), sorting task, miles-scale rollouts
    "synthetic__qwen3_8b__tp2__ppo__none__bf16": (
        "model=qwen3_8b",
        "parallelism=tp2",
        "precision=bf16",
        "algorithm=ppo",
        "data=sorting",
        "rollout=large",
    ),
    # your reward on a synthetic task, merged into one inline YAML with the MIS settings
    "synthetic__qwen3_4b__tp2__grpo_mis__none__bf16": (
        "model=qwen3_4b",
        "parallelism=tp2",
        "precision=bf16",
        "algorithm=grpo_mis",
        "data=countdown",
        "reward=custom",
        "reward.custom_rm_path=my_pkg.rewards:score",
    ),
}


@dataclass(frozen=True)
class Combo:
    """One preset combination."""

    name: str  # file-name-safe id, e.g. qwen3_4b__tp2__grpo_tis__none__fp8
    overrides: tuple[str, ...]  # Hydra overrides after `base`
    base: tuple[str, ...] = BASE_OVERRIDES  # what this combination shares with its family


def all_combos() -> list[Combo]:
    """The 63 grid combinations, then the synthetic-task ones."""
    synthetic = [Combo(name, o, SYNTHETIC_BASE) for name, o in SYNTHETIC_COMBOS.items()]
    return grid_combos() + synthetic


def grid_combos() -> list[Combo]:
    """The 63 model x parallelism pairs with rotating algorithm / speculative / precision."""
    combos = []
    for i, model in enumerate(MODELS):
        for j, par in enumerate(PARALLELISMS):
            algo = ALGORITHMS[(i + j) % len(ALGORITHMS)]
            spec = SPECULATIVE[(i + 2 * j) % len(SPECULATIVE)]
            prec = PRECISIONS[(2 * i + j) % len(PRECISIONS)]
            spec, prec = fit_to_checkpoint(model, spec, prec)
            overrides = [
                f"model={model}",
                f"parallelism={par}",
                f"speculative={spec}",
                f"precision={prec}",
            ]
            if algo == "grpo+icepop":
                overrides += ["algorithm=grpo", "algorithm/correction=icepop"]
            else:
                overrides.append(f"algorithm={algo}")
            if spec == "eagle":
                overrides.append(f"speculative.draft_model_path=/root/models/{model}-eagle3")
            overrides += rollout_checkpoint(model, prec)
            if model in MOE_MODELS and (i + j) % 2 == 0:
                overrides.append("algorithm.use_rollout_routing_replay=true")
            overrides += uneven_pipeline(model, par)
            name = "__".join([model, par, algo.replace("+", "_"), spec, prec])
            combos.append(Combo(name.replace(".", "_"), tuple(overrides)))
    return combos


def fit_to_checkpoint(model: str, spec: str, precision: str) -> tuple[str, str]:
    """What miles can run on this checkpoint (miles_rules.py): an EAGLE draft where the model
    has no MTP layers, FP8 where INT4 QAT would find no routed experts (tests/miles/test_rules.py
    checks the refusals themselves)."""
    if spec in ("mtp", "mtp_online") and model not in MTP_MODEL_PRESETS:
        spec = "eagle"
    if precision == "int4_qat" and model not in MOE_MODELS:
        precision = "fp8"
    return spec, precision


ROLLOUT_SUFFIX = {"fp8": "FP8", "int4_qat": "INT4"}  # miles' recipes: <hf_checkpoint>-FP8/-INT4


def rollout_checkpoint(model: str, precision: str) -> list[str]:
    """FP8 / INT4 QAT on miles serve a checkpoint in that format (miles_rules.py): the override
    naming it, as scripts/run_qwen3_30b_a3b.py names its --rollout-fp8/--rollout-int4 ones."""
    from omegaconf import OmegaConf

    if precision not in ROLLOUT_SUFFIX:
        return []
    hf = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml").hf_checkpoint
    return [f"precision.rollout_checkpoint={hf}-{ROLLOUT_SUFFIX[precision]}"]


def uneven_pipeline(model: str, parallelism: str) -> list[str]:
    """The override that lets a PP preset that does not divide a model's layers run with an
    uneven last stage (as miles' DeepSeek-V3 / Qwen3-235B recipes do); [] when PP divides."""
    from omegaconf import OmegaConf

    layers = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml").num_layers
    par = OmegaConf.load(CONF_DIR / "parallelism" / f"{parallelism}.yaml")
    pp = par.get("pipeline_model_parallel_size", 1)
    if pp < 2 or layers % pp == 0:
        return []
    return [f"parallelism.decoder_last_pipeline_num_layers={layers - (pp - 1) * (layers // pp)}"]


def compose_run(overrides: list[str] | tuple[str, ...], base: bool = True) -> RunConfig:
    """Compose conf/ with Hydra and materialize (ConfigError if our validation refuses)."""
    return compose_many({"one": tuple(overrides)}, base=base)["one"].unwrap()


@dataclass
class Composed:
    """A composed combination: the RunConfig, or the ConfigError that refused it."""

    run: Optional[RunConfig]  # the validated config
    error: Optional[ConfigError]  # why our validation refused it

    def unwrap(self) -> RunConfig:
        if self.error is not None:
            raise self.error
        assert self.run is not None
        return self.run


def compose_many(
    named_overrides: dict[str, tuple[str, ...]], base: bool = True
) -> dict[str, Composed]:
    """Compose several override lists in one Hydra initialization."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    out: dict[str, Composed] = {}
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for name, overrides in named_overrides.items():
                full = [*(BASE_OVERRIDES if base else ()), *overrides]
                try:
                    out[name] = Composed(materialize(compose("config", overrides=full)), None)
                except ConfigError as exc:
                    out[name] = Composed(None, exc)
    finally:
        GlobalHydra.instance().clear()
    return out


def split_valid(combos: list[Combo]) -> tuple[dict[str, RunConfig], dict[str, ConfigError]]:
    """(valid RunConfigs, refused ConfigErrors), keyed by combo name."""
    composed = compose_many({c.name: (*c.base, *c.overrides) for c in combos}, base=False)
    valid = {k: v.run for k, v in composed.items() if v.error is None}
    refused = {k: v.error for k, v in composed.items() if v.error is not None}
    return valid, refused


def golden_text(combo: Combo, entry: str, argv: list[str], env: dict[str, str]) -> str:
    """The golden file of one combination: overrides, env, entry, one flag (+ values) per line."""
    lines = [
        f"# combo: {' '.join(combo.overrides)}",
        f"# base: {' '.join(combo.base)}",
        f"# regenerate: {REGEN_COMMAND}",
        "env:",
        *(f"  {key}={shlex.quote(value)}" for key, value in sorted(env.items())),
        f"entry: {entry}",
        "argv:",
    ]
    current: list[str] = []
    for token in argv:
        if token.startswith("--") and current:
            lines.append("  " + shlex.join(current))
            current = []
        current.append(token)
    if current:
        lines.append("  " + shlex.join(current))
    for flag, value in zip(argv, argv[1:]):  # inline files, readable for review
        if value.startswith("base64:"):
            lines.append(f"# {flag} decodes to:")
            decoded = base64.b64decode(value.removeprefix("base64:")).decode()
            lines += [f"#   {line}" for line in decoded.splitlines()]
    return "\n".join(lines) + "\n"
