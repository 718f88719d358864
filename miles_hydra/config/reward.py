"""`reward` group: how responses are scored."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


class RewardType(enum.Enum):
    """How a response is scored; miles' names where miles has the same function."""

    task = "task"  # the synthetic task's verifier (both backends)
    math = "math"  # math answer against the label (local: the last number; miles: its grader)
    exact_match = "exact_match"  # the response equals the label (backend=local only)
    custom = "custom"  # your function, reward.custom_rm_path (both backends)
    dapo = "dapo"  # miles' DAPO math score (backend=miles only)
    deepscaler = "deepscaler"  # miles' DeepScaleR rule-based reward (backend=miles only)
    f1 = "f1"  # miles' F1 score against the label (backend=miles only)
    gpqa = "gpqa"  # miles' GPQA multiple-choice reward (backend=miles only)
    remote_rm = "remote_rm"  # miles posts each sample to a reward server (backend=miles only)


@dataclass
class RewardConfig:
    rm_type: RewardType = RewardType.task  # scoring function
    custom_rm_path: Optional[str] = None  # "package.module:function" for rm_type=custom

    def validate(self) -> None:
        if self.rm_type is RewardType.custom and not self.custom_rm_path:
            raise ConfigError(
                "reward.custom_rm_path",
                None,
                "is required for reward.rm_type=custom",
                "set reward.custom_rm_path=my_pkg.rewards:score",
            )
        if self.custom_rm_path and ":" not in self.custom_rm_path:
            raise ConfigError(
                "reward.custom_rm_path",
                self.custom_rm_path,
                "is not of the form module:function",
                "e.g. reward.custom_rm_path=my_pkg.rewards:score",
            )

    def __post_init__(self) -> None:
        self.validate()
