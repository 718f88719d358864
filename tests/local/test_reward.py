"""Reward functions: task/math/exact_match scoring, custom import paths, bad reward functions."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from miles_hydra.config.data import DataConfig, DataSource
from miles_hydra.config.reward import RewardConfig
from miles_hydra.errors import ConfigError, RewardError
from miles_hydra.tasks import Prompt
from miles_hydra.tasks.reward import build_reward_fn, math_reward

CUSTOM = """
import math

def good(prompt, response, label):
    return len(response) / 10

def flag(prompt, response, label):
    return response == label

def boom(prompt, response, label):
    raise KeyError("no such field")

def nan(prompt, response, label):
    return math.nan

def text(prompt, response, label):
    return "1.0"

def value(prompt, response, label):
    return VALUE

VALUE = None
NOT_CALLABLE = 3
"""


@pytest.fixture
def rewards_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(CUSTOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def prompt(label: object = "46") -> Prompt:
    return Prompt(text="12+34=", ids=[3, 4, 39, 5, 6, 45], label=label, meta={})


def custom(name: str):
    return build_reward_fn(RewardConfig(rm_type="custom", custom_rm_path=name), DataConfig())


def test_task_reward_uses_the_synthetic_verifier() -> None:
    reward = build_reward_fn(RewardConfig(), DataConfig(task_kwargs={"max_digits": 2}))
    assert reward(prompt(), "46") == 1.0
    assert reward(prompt(), " 46\n") == 1.0
    assert reward(prompt(), "46+") == 0.0
    sorting = build_reward_fn(RewardConfig(), DataConfig(task="sorting"))
    assert sorting(prompt("123"), "123") == 1.0


def test_task_reward_needs_a_synthetic_source(tmp_path: Path) -> None:
    data = DataConfig(source=DataSource.file, prompt_data=str(tmp_path / "p.jsonl"))
    with pytest.raises(ConfigError, match="reward.rm_type='task' needs a synthetic task"):
        build_reward_fn(RewardConfig(), data)


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        ("The answer is 46.", "46", 1.0),
        ("12+34 = 46", 46, 1.0),
        ("46 or 47", "46", 0.0),  # the last number counts
        ("x = 1,000", "1000", 1.0),
        ("0.5", "1/2", 1.0),
        ("-3", -3, 1.0),
        ("no number", "46", 0.0),
    ],
)
def test_math_reward_compares_the_last_number(
    response: str, label: object, expected: float
) -> None:
    assert math_reward("q", response, label) == expected
    reward = build_reward_fn(RewardConfig(rm_type="math"), DataConfig())
    assert reward(prompt(label), response) == expected


def test_math_reward_with_a_non_numeric_label_names_it() -> None:
    reward = build_reward_fn(RewardConfig(rm_type="math"), DataConfig())
    with pytest.raises(RewardError, match=r"reward function math raised ValueError: label 'abc'"):
        reward(prompt("abc"), "46")


def test_answer_rewards_refuse_countdown_labels() -> None:
    with pytest.raises(ConfigError, match="reward.rm_type='math' cannot score data.task=countdown"):
        build_reward_fn(RewardConfig(rm_type="math"), DataConfig(task="countdown"))


def test_exact_match() -> None:
    reward = build_reward_fn(RewardConfig(rm_type="exact_match"), DataConfig())
    assert reward(prompt("46"), " 46 ") == 1.0
    assert reward(prompt("46"), "46.") == 0.0


def test_custom_reward_values_bools_and_scalars(rewards_module: str) -> None:
    assert custom(f"{rewards_module}:good")(prompt(), "46") == pytest.approx(0.2)
    assert custom(f"{rewards_module}:flag")(prompt(), "46") == 1.0
    module = sys.modules[rewards_module]
    reward = custom(f"{rewards_module}:value")
    for value, expected in [
        (np.float32(0.5), 0.5),
        (torch.tensor(2.0), 2.0),
        (np.bool_(True), 1.0),
    ]:
        module.VALUE = value
        assert reward(prompt(), "46") == expected


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("boom", r"my_rewards:boom raised KeyError: 'no such field' \(prompt '12\+34=', response"),
        ("nan", r"my_rewards:nan returned nan \(float\), not a finite number"),
        ("text", r"my_rewards:text returned '1.0' \(str\), not a finite number"),
    ],
)
def test_bad_custom_reward_raises_reward_error_naming_it(
    rewards_module: str, function: str, message: str
) -> None:
    with pytest.raises(RewardError, match=message):
        custom(f"{rewards_module}:{function}")(prompt(), "46")


@pytest.mark.parametrize("value", [None, math.inf, [1.0], torch.tensor([1.0, 2.0])])
def test_non_scalar_or_infinite_values_are_rejected(rewards_module: str, value: object) -> None:
    reward = custom(f"{rewards_module}:value")  # imports the module
    sys.modules[rewards_module].VALUE = value
    with pytest.raises(RewardError, match=r"my_rewards:value returned .* not a finite number"):
        reward(prompt(), "46")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "no_such_module_xyz:score",
            r"reward.custom_rm_path='no_such_module_xyz:score' names module",
        ),
        (
            "my_rewards:missing",
            r"reward.custom_rm_path='my_rewards:missing' names 'missing', which",
        ),
        ("my_rewards:NOT_CALLABLE", r"names int 'NOT_CALLABLE', not a function"),
    ],
)
def test_wrong_import_path_is_a_config_error(rewards_module: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        custom(path)
