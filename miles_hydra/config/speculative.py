"""`speculative` group: speculative decoding in rollout and online draft (MTP) training."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from miles_hydra.errors import ConfigError


class SpecMode(enum.Enum):
    none = "none"  # plain decoding
    eagle = "eagle"  # external EAGLE draft model (not trained online)
    mtp = "mtp"  # the model's own MTP heads as draft, frozen
    mtp_online = "mtp_online"  # the model's MTP heads as draft, trained online with the policy


@dataclass
class SpeculativeConfig:
    mode: SpecMode = SpecMode.none  # draft source and whether it is trained
    # backend=local drafts a greedy MTP chain: with speculation on it refuses non-default values
    # of the three SGLang knobs algorithm, eagle_topk, num_draft_tokens (validate.py)
    algorithm: str = "EAGLE"  # SGLang --speculative-algorithm (MTP drafts run as EAGLE)
    num_steps: int = 2  # draft tokens proposed per verification step
    eagle_topk: int = 1  # draft branching factor (1 = a chain; > 1, a tree, on miles only)
    num_draft_tokens: Optional[int] = None  # tokens verified per step; None = num_steps + 1
    draft_model_path: Optional[str] = None  # external draft checkpoint (mode=eagle)
    mtp_num_layers: int = 1  # draft head layers (mtp, mtp_online)
    mtp_loss_scaling_factor: float = 0.2  # weight of the MTP loss (mtp_online)
    accept_drop_alert: float = 0.3  # alert when accept length falls this fraction below its best

    @property
    def enabled(self) -> bool:
        return self.mode is not SpecMode.none

    @property
    def draft_tokens(self) -> int:
        return self.num_draft_tokens or self.num_steps + 1

    def validate(self) -> None:
        if not self.enabled:
            return
        if self.num_steps < 1:
            raise ConfigError("speculative.num_steps", self.num_steps, "must be >= 1")
        if self.eagle_topk < 1:
            raise ConfigError("speculative.eagle_topk", self.eagle_topk, "must be >= 1")
        if self.eagle_topk == 1 and self.draft_tokens != self.num_steps + 1:
            raise ConfigError(
                "speculative.num_draft_tokens",
                self.num_draft_tokens,
                f"must be num_steps + 1 = {self.num_steps + 1} when eagle_topk=1 (a chain)",
                "leave it null",
            )
        if self.mode is SpecMode.eagle and not self.draft_model_path:
            raise ConfigError(
                "speculative.draft_model_path",
                None,
                "is required for speculative=eagle",
                "set speculative.draft_model_path=<EAGLE draft checkpoint> or use speculative=mtp",
            )
        if self.mode in (SpecMode.mtp, SpecMode.mtp_online) and self.mtp_num_layers < 1:
            raise ConfigError(
                "speculative.mtp_num_layers", self.mtp_num_layers, "must be >= 1 for MTP drafts"
            )
        if not 0.0 <= self.mtp_loss_scaling_factor:
            raise ConfigError(
                "speculative.mtp_loss_scaling_factor", self.mtp_loss_scaling_factor, "must be >= 0"
            )

    def __post_init__(self) -> None:
        self.validate()
