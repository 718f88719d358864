"""Compose every option of every config group (and every experiment/sweep file); validate each."""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path

import pytest
import yaml
from conftest import compose_config, compose_fast

from miles_hydra.config import RunConfig
from miles_hydra.config.algorithm import CorrectionConfig
from miles_hydra.config.backend import BackendKind
from miles_hydra.config.store import GROUPS

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SKIP_GROUPS = {"experiment", "local"}  # experiment files are composed below; local is per-user

MILES_DENSE = ["model=qwen3_4b", "precision=bf16"]
MILES_MOE = ["model=qwen3_30b_a3b", "precision=bf16"]

# Options that cannot validate alone: the companions a user would add.
COMPANIONS: dict[str, list[str]] = {
    "model": ["precision=bf16"],  # real models switch to backend=miles, which trains in bf16/fp8
    "parallelism/tp2": MILES_DENSE,
    "parallelism/tp8": MILES_DENSE,
    "parallelism/tp8_pp2": MILES_DENSE,
    "parallelism/tp4_ep8": MILES_MOE,
    "parallelism/tp4_ep8_2node": MILES_MOE,
    "parallelism/disagg_tp4_pp4_ep8_8node": MILES_MOE,
    "precision/fp8": ["model=qwen3_4b", "precision.rollout_checkpoint=/ckpt/Qwen3-4B-FP8"],
    "precision/int4_qat": ["model=qwen3_30b_a3b", "precision.rollout_checkpoint=/ckpt/INT4"],
    "speculative/eagle": [*MILES_DENSE, "speculative.draft_model_path=/ckpt/eagle"],
    "backend/miles": MILES_DENSE,
    "data/jsonl": ["data.prompt_data=/data/prompts.jsonl"],
    "reward/custom": ["reward.custom_rm_path=my_pkg.rewards:score"],
}


def _options() -> list[tuple[str, str]]:
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) < 2 or rel.parts[0] in SKIP_GROUPS:
            continue
        out.append(("/".join(rel.parts[:-1]), rel.stem))
    return out


OPTIONS = _options()


def test_every_group_has_options() -> None:
    groups = {g for g, _ in OPTIONS}
    expected = {
        "model",
        "parallelism",
        "precision",
        "speculative",
        "algorithm",
        "rollout",
        "data",
        "reward",
        "checkpoint",
        "cluster",
        "logging",
        "backend",
        "algorithm/correction",
    }
    assert expected <= groups, expected - groups


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_compose_option(group: str, option: str) -> None:
    extra = COMPANIONS.get(f"{group}/{option}", COMPANIONS.get(group, []))
    if group == "model" and option.startswith("tiny"):
        extra = []
    cfg = compose_fast([f"{group}={option}", *extra])
    run = compose_and_check(cfg)
    node = run
    for part in group.split("/"):
        node = getattr(node, part)
    if hasattr(node, "name"):  # the model keeps its preset name (error messages)
        assert node.name == option
    for key, value in _preset_values(CONF / group / f"{option}.yaml").items():
        got = getattr(node, key)
        got = got.name if isinstance(got, enum.Enum) else got
        if isinstance(got, list):  # e.g. logging.trackers: a list of enums
            got = [g.name if isinstance(g, enum.Enum) else g for g in got]
        assert got == value, f"{group}/{option}.yaml sets {key}={value!r}; the config has {got!r}"


def _preset_values(path: Path) -> dict[str, object]:
    """What a preset file sets, less its defaults list, interpolations and ``???`` values."""
    doc = yaml.safe_load(path.read_text()) or {}
    return {
        key: value
        for key, value in doc.items()
        if key != "defaults" and not (isinstance(value, str) and ("${" in value or value == "???"))
    }


def test_presets_state_only_deltas() -> None:
    """STYLE.md: a preset states what differs from its schema's defaults, nothing else."""
    schemas = {**GROUPS, "algorithm/correction": CorrectionConfig}
    restated = []
    for group, option in OPTIONS:
        defaults = {f.name: f.default for f in dataclasses.fields(schemas[group])}
        for key, value in _preset_values(CONF / group / f"{option}.yaml").items():
            default = defaults.get(key, dataclasses.MISSING)
            default = default.name if isinstance(default, enum.Enum) else default
            same_type = type(default) is type(value) or {type(default), type(value)} == {int, float}
            if same_type and default == value:  # (True == 1, but a bool is no int here)
                restated.append(f"{group}/{option}.yaml: {key}={value!r}")
    assert not restated, "presets restate schema defaults:\n" + "\n".join(restated)


def compose_and_check(cfg) -> RunConfig:
    from miles_hydra.config.store import materialize

    run = materialize(cfg)
    assert isinstance(run, RunConfig)
    return run


def test_default_is_local_tiny(compose) -> None:
    run = compose_and_check(compose([]))
    assert run.backend.kind is BackendKind.local
    assert run.model.name == "tiny_dense"


def test_real_model_presets_switch_to_miles(compose) -> None:
    run = compose_and_check(compose(MILES_DENSE))
    assert run.backend.kind is BackendKind.miles


def test_done_when_combination(compose) -> None:
    """Issue 2's 'Done when': Qwen3-30B-A3B, fp8, a speculative draft, GRPO on a multi-node
    preset (an EAGLE draft: online MTP needs a checkpoint with MTP layers, issue 14)."""
    run = compose_and_check(
        compose(
            [
                "model=qwen3_30b_a3b",
                "parallelism=tp4_ep8_2node",
                "precision=fp8",
                "precision.rollout_checkpoint=/root/models/Qwen3-30B-A3B-FP8",
                "speculative=eagle",  # Qwen3 checkpoints have no MTP layers for mtp_online (issue 14)
                "speculative.draft_model_path=/root/models/Qwen3-30B-A3B-EAGLE3",
                "algorithm=grpo",
            ]
        )
    )
    assert run.parallelism.actor_num_nodes == 2
    assert run.parallelism.data_parallel_size == 4


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.yaml")) if (REPO / folder).is_dir() else []


EXPERIMENTS = _files("conf/experiment")
SWEEPS = _files("sweeps")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_compose_experiment(compose, path: Path) -> None:
    run = compose_and_check(compose([f"experiment={path.stem}"]))
    assert isinstance(run, RunConfig)


def _values(spec: object) -> list[str]:
    """The values a sweeper would try, as override strings: each of ``a,b,c`` / ``choice(...)``,
    and both ends of an ``interval(lo, hi)`` (Optuna; possibly inside ``tag(log, ...)``)."""
    text = str(spec).strip()
    interval = re.search(r"interval\(([^,]+),([^)]+)\)", text)
    if interval:
        return [interval.group(1).strip(), interval.group(2).strip()]
    choice = re.fullmatch(r"choice\((.*)\)", text)
    if choice:
        text = choice.group(1)
    return [v.strip() for v in text.split(",")]


def _sweep_points(path: Path) -> list[list[str]]:
    """Each swept value once, the other swept keys at their first value."""
    doc = yaml.safe_load(path.read_text()) or {}
    params = ((doc.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    values = {key: _values(spec) for key, spec in params.items()}
    first = {key: vals[0] for key, vals in values.items()}
    points = [[f"{k}={v}" for k, v in first.items()]]
    for key, vals in values.items():
        for value in vals[1:]:
            points.append([f"{k}={value if k == key else v}" for k, v in first.items()])
    return points


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_compose_sweep(path: Path) -> None:
    """``python launch.py -m +sweep=<name>``: every swept value composes and validates."""
    points = _sweep_points(path)
    for point in points:
        run = compose_and_check(compose_config([f"+sweep={path.stem}", *point]))
        assert run.experiment_name == path.stem
    assert points
