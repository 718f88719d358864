"""Reward functions: the synthetic task's verifier, math answer matching, exact match, or yours.

``build_reward_fn(reward_cfg, data_cfg)`` returns ``reward(prompt, response) -> float`` where
`response` is the decoded response text up to the first eos. Every reward, built-in or custom,
goes through one check: if the function raises, or returns anything but a finite real number
(bool counts as 0/1), RewardError names the function and the offending value and the run stops.

- ``task``: the synthetic task's verifier (exact answer after stripping whitespace; see tasks.py).
- ``math``: the last number in the response equals the label numerically (``"x = 46."`` and
  ``"46"`` both match label 46); trailing text is tolerated.
- ``exact_match``: ``response.strip() == str(label).strip()``.
- ``custom``: ``reward.custom_rm_path=package.module:function``, called as
  ``function(prompt_text, response, label)``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from miles_hydra.config.reward import RewardType
from miles_hydra.errors import ConfigError, RewardError
from miles_hydra.tasks.source import Prompt
from miles_hydra.tasks.synthetic import build_task

RewardFn = Callable[[Prompt, str], float]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def math_reward(prompt_text: str, response: str, label: Any) -> float:
    """1.0 if the last number in `response` equals `label` (int, float or "a/b"), else 0.0."""
    found = _NUMBER.findall(response.replace(",", ""))
    if not found:
        return 0.0
    target = _as_fraction(label)
    if target is None:
        raise ValueError(f"label {label!r} is not a number")
    got = _as_fraction(found[-1])
    return float(got is not None and got == target)


def exact_match_reward(prompt_text: str, response: str, label: Any) -> float:
    """1.0 if the stripped response equals the stripped label text, else 0.0."""
    return float(response.strip() == str(label).strip())


def _as_fraction(value: Any) -> Fraction | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return Fraction(value).limit_denominator(10**9) if math.isfinite(value) else None
    try:
        return Fraction(str(value).strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def load_custom_reward(path: str) -> Callable[..., Any]:
    """Import ``module:function`` and check it can be called as ``fn(prompt, response, label)``;
    ConfigError naming reward.custom_rm_path if either fails."""
    key = "reward.custom_rm_path"
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            key, path, "is not of the form module:function", "e.g. my_pkg.rewards:score"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            key,
            path,
            f"names module {module_name!r} that cannot be imported ({exc})",
            "put the module on PYTHONPATH (or install its package) and check the spelling",
        ) from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ConfigError(
                key,
                path,
                f"names {attr!r}, which module {module_name!r} does not define",
                "check the function name after the colon",
            )
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(key, path, f"names {type(fn).__name__} {attr!r}, not a function")
    _check_signature(path, fn)
    return fn


def _check_signature(path: str, fn: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it is called as is
        return
    try:
        signature.bind("prompt", "response", "label")
    except TypeError as exc:
        raise ConfigError(
            "reward.custom_rm_path",
            path,
            f"takes {signature}, so it cannot be called as fn(prompt, response, label) ({exc})",
            "define it as def score(prompt: str, response: str, label) -> float",
        ) from exc


def checked(name: str, fn: Callable[[str, str, Any], Any]) -> RewardFn:
    """Wrap ``fn(prompt_text, response, label)`` so errors and bad values raise RewardError."""

    def reward(prompt: Prompt, response: str) -> float:
        try:
            value = fn(prompt.text, response, prompt.label)
        except Exception as exc:
            raise RewardError(
                f"reward function {name} raised {type(exc).__name__}: {exc} "
                f"(prompt {prompt.text[:80]!r}, response {response[:80]!r}, label {prompt.label!r})"
            ) from exc
        return _as_reward(name, value, prompt, response)

    reward.__name__ = f"reward[{name}]"
    return reward


def _as_reward(name: str, value: Any, prompt: Prompt, response: str) -> float:
    scalar = value
    if hasattr(scalar, "item") and tuple(getattr(scalar, "shape", (1,))) == ():
        scalar = scalar.item()  # 0-d numpy array / torch tensor
    if isinstance(scalar, (bool, numbers.Real)) and math.isfinite(float(scalar)):
        return float(scalar)
    raise RewardError(
        f"reward function {name} returned {value!r} ({type(value).__name__}), not a finite number "
        f"(prompt {prompt.text[:80]!r}, response {response[:80]!r}); return a float or a bool"
    )


def _is_synthetic(data_cfg: Any, task: str) -> bool:
    source = getattr(data_cfg.source, "value", data_cfg.source)
    return source == "synthetic" and data_cfg.task == task


def build_reward_fn(reward_cfg: Any, data_cfg: Any) -> RewardFn:
    """``reward(prompt, response) -> float`` for reward.rm_type (task|math|exact_match|custom).

    ``reward_cfg.rm_type`` is a RewardType or its value (miles' reward hook passes a namespace).
    """
    rm_type = RewardType(reward_cfg.rm_type)
    if rm_type is RewardType.task:
        source = getattr(data_cfg.source, "value", data_cfg.source)
        if source != "synthetic":
            raise ConfigError(
                "reward.rm_type",
                rm_type.value,
                f"needs a synthetic task, but data.source={source}",
                "use reward=math, reward.rm_type=exact_match or reward=custom for prompt files",
            )
        task = build_task(data_cfg.task, data_cfg.task_kwargs)
        return checked(
            f"task:{task.name}", lambda _text, response, label: task.verify(response, label)
        )
    if rm_type in (RewardType.math, RewardType.exact_match) and _is_synthetic(
        data_cfg, "countdown"
    ):
        raise ConfigError(
            "reward.rm_type",
            rm_type.value,
            "cannot score data.task=countdown: its label is the numbers and target, not an answer",
            "use reward=task",
        )
    if rm_type is RewardType.math:
        return checked("math", math_reward)
    if rm_type is RewardType.exact_match:
        return checked("exact_match", exact_match_reward)
    if rm_type is RewardType.custom:
        path = reward_cfg.custom_rm_path
        if not path:
            raise ConfigError(
                "reward.custom_rm_path",
                None,
                "is required for reward.rm_type=custom",
                "set reward.custom_rm_path=my_pkg.rewards:score",
            )
        return checked(path, load_custom_reward(path))
    raise ConfigError(
        "reward.rm_type",
        rm_type.value,
        "is one of miles' reward functions; backend=local scores task, math, exact_match or custom",
        "use one of those, or backend=miles",
    )
