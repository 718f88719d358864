"""Dynamic-sampling group filters of the local engine (DAPO; miles ``--dynamic-sampling-filter-path``).

A filter sees one prompt group and says whether to train on it:

- ``nonzero_std`` (``rollout.dynamic_sampling=nonzero_std``): keep a group unless all its rewards
  agree (standard deviation <= 1e-8, as miles' ``check_reward_nonzero_std``): such a group has
  zero GRPO advantage everywhere and only costs training compute.
- ``custom``: ``rollout.dynamic_sampling_filter_path=package.module:function``, called as miles
  calls its filters, ``fn(args, samples)``, with ``args`` the ``rollout`` config (its field names
  are miles' flag names) and ``samples`` a list of ``GroupSample`` (``reward``,
  ``response_length``, ``truncated``, ``get_reward_value(args)``: the parts of miles' ``Sample``
  a group filter reads). It returns a bool, or an object with ``keep`` and optional ``reason``
  (miles' ``DynamicFilterOutput``); the reason names the drop metric
  ``rollout/dynamic_filter/drop_<reason>``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from miles_hydra.config.rollout import DynamicSampling, RolloutConfig
from miles_hydra.errors import ConfigError

STD_EPS = 1e-8  # miles' check_reward_nonzero_std threshold


@dataclass(frozen=True)
class GroupSample:
    """One sample of a group, as a filter sees it."""

    reward: float  # the reward function's score
    response_length: int  # response tokens
    truncated: bool  # hit the length cap (no stop token)

    def get_reward_value(self, args: Any = None) -> float:
        return self.reward


@dataclass(frozen=True)
class FilterVerdict:
    keep: bool  # train on the group
    reason: Optional[str] = None  # why it was dropped (metric suffix)


GroupFilter = Callable[[list[GroupSample]], FilterVerdict]


def nonzero_std(samples: list[GroupSample]) -> FilterVerdict:
    """Keep a group whose rewards are not all equal (sample std > 1e-8, like miles)."""
    rewards = [s.reward for s in samples]
    if len(rewards) < 2:
        return FilterVerdict(False, "single_sample")
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
    if std > STD_EPS:
        return FilterVerdict(True)
    return FilterVerdict(False, f"zero_std_{round(float(rewards[0]), 1)}")


def load_filter_function(path: str) -> Callable[..., Any]:
    """The function at ``package.module:function`` (or miles' dotted ``package.module.function``)."""
    module_name, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "rollout.dynamic_sampling_filter_path",
            path,
            f"cannot be loaded ({type(exc).__name__}: {exc})",
            "make the module importable (PYTHONPATH) and name an existing function",
        ) from exc
    if not callable(fn):
        raise ConfigError("rollout.dynamic_sampling_filter_path", path, "is not callable")
    return fn


def build_filter(r: RolloutConfig) -> Optional[GroupFilter]:
    """The configured group filter; None for ``dynamic_sampling=none``."""
    if r.dynamic_sampling is DynamicSampling.none:
        return None
    if r.dynamic_sampling is DynamicSampling.nonzero_std:
        return nonzero_std
    assert r.dynamic_sampling_filter_path, "RolloutConfig.validate requires the path"
    fn = load_filter_function(r.dynamic_sampling_filter_path)

    def custom(samples: list[GroupSample]) -> FilterVerdict:
        out = fn(r, samples)
        if hasattr(out, "keep"):
            return FilterVerdict(bool(out.keep), getattr(out, "reason", None))
        return FilterVerdict(bool(out))

    return custom
