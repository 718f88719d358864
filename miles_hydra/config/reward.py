"""`reward` group: how responses are scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


@dataclass
class RewardConfig:
    name: str = "task"  # preset name
    rm_type: str = "task"  # task (the synthetic task's verifier) | math | exact_match | custom
    custom_rm_path: Optional[str] = None  # "package.module:function" for rm_type=custom

    def validate(self) -> None:
        if self.rm_type == "custom" and not self.custom_rm_path:
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
