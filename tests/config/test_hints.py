"""typo_hints: the closest valid key or option for overrides Hydra would refuse."""

from __future__ import annotations

import pytest

from miles_hydra.launch.hints import typo_hints


@pytest.mark.parametrize(
    ("arg", "hint"),
    [
        ("model.num_layerz=3", "model.num_layerz: unknown key; did you mean model.num_layers"),
        ("model=qwen3_4bb", "model=qwen3_4bb: no such option; did you mean model=qwen3_4b?"),
        ("modle=qwen3_4b", "modle: unknown key; did you mean mode or model?"),
        ("algorithm/correction=tiss", "did you mean algorithm/correction=tis?"),
        ("algorithm.correction.uper=3", "did you mean algorithm.correction.upper"),
        ("experiment_nam=x", "did you mean experiment_name or experiment?"),
        (
            "model=qwen3_4b,qwen3_8bb",
            "model=qwen3_8bb: no such option; did you mean model=qwen3_8b?",
        ),
    ],
)
def test_hint_for_typo(arg: str, hint: str) -> None:
    hints = typo_hints([arg])
    assert len(hints) == 1 and hint in hints[0], hints


@pytest.mark.parametrize(
    "arg",
    [
        "model=qwen3_4b",
        "mode=plan",
        "rollout.rollout_batch_size=8",
        "+extra.key=1",
        "rollout.sglang.anything_goes=1",
        "hydra.run.dir=x",
        "-m",
        "algorithm/correction=tis",
        "parallelism=choice(tp2,tp8)",
    ],
)
def test_no_hint_for_valid_override(arg: str) -> None:
    assert typo_hints([arg]) == []
