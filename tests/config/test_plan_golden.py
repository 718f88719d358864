"""Golden files for the plan of a few presets. Only the plan section is goldened: the resolved
config above it is a mechanical dump of the schemas (it changes with every new field), and the
compiled miles command is goldened by the miles compiler's own tests. Regenerate with the
command printed on mismatch."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from conftest import compose_fast, materialize

from miles_hydra.launch.hardware import detect_hardware
from miles_hydra.launch.plan import render_plan

GOLDEN = Path(__file__).resolve().parent / "golden"
PLAN_HEADER = "# ---- plan ----"
REGEN = "UPDATE_GOLDEN=1 python -m pytest tests/config/test_plan_golden.py"

PRESETS: dict[str, list[str]] = {
    # The default run as on a machine without a GPU (device=auto would detect this machine's).
    "default_local": ["backend.device=cpu"],
    "qwen3_30b_a3b_tp4_ep8_2node_fp8_eagle_grpo": [
        "model=qwen3_30b_a3b",
        "parallelism=tp4_ep8_2node",
        "precision=fp8",
        "precision.rollout_checkpoint=/root/models/Qwen3-30B-A3B-FP8",
        "speculative=eagle",  # Qwen3 checkpoints have no MTP layers for mtp_online (issue 14)
        "speculative.draft_model_path=/root/models/Qwen3-30B-A3B-EAGLE3",
        "algorithm=grpo",
    ],
    "qwen3_4b_tp8_bf16": ["model=qwen3_4b", "parallelism=tp8", "precision=bf16"],
    # Colocated PPO on miles v0.1.0: the critic shares the actor's 8 GPUs (shared Actor/Critic).
    "qwen3_8b_tp8_ppo_colocated": [
        "model=qwen3_8b",
        "parallelism=tp8",
        "precision=bf16",
        "algorithm=ppo",
    ],
    # The disagg preset's PP 4 does not divide DeepSeek-V3's 61 layers: stages 15/15/15/16.
    "deepseek_v3_disagg_pp4_uneven_fp8": [
        "model=deepseek_v3",
        "parallelism=disagg_tp4_pp4_ep8_8node",
        "precision=fp8",
        "precision.rollout_checkpoint=/root/models/DeepSeek-V3",  # ships block-wise FP8 weights
        "parallelism.decoder_last_pipeline_num_layers=16",
        "rollout=large",
    ],
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_plan_matches_golden(name: str) -> None:
    run = materialize(compose_fast(PRESETS[name]))
    full = render_plan(run, with_command=False, hardware=detect_hardware(run))  # as mode=plan
    text = full[full.index(PLAN_HEADER) :]
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; create it with: {REGEN}"
    want = path.read_text()
    if text != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}.txt",
                tofile="render_plan",
            )
        )
        pytest.fail(f"plan of {name} changed:\n{diff}\nIf intended, regenerate with: {REGEN}")
