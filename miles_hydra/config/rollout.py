"""`rollout` group: sampling and the four batch knobs of miles' batch invariant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError


@dataclass
class RolloutConfig:
    num_rollout: int = 20  # rollout/train iterations of the run
    rollout_batch_size: int = 8  # prompts per rollout
    n_samples_per_prompt: int = 4  # responses sampled per prompt (the GRPO group size)
    global_batch_size: Optional[int] = None  # samples per optimizer step; None = derived
    num_steps_per_rollout: int = 1  # optimizer steps per rollout
    rollout_max_prompt_len: int = 64  # longest prompt in tokens (longer ones are refused)
    rollout_max_response_len: int = 16  # max new tokens per response
    rollout_temperature: float = 1.0  # sampling temperature
    rollout_top_p: float = 1.0  # nucleus sampling
    rollout_top_k: int = -1  # top-k sampling; -1 = off
    async_training: bool = False  # one-step off-policy pipeline (miles train_async.py)
    eval_interval: Optional[int] = None  # evaluate every n rollouts; None = never
    n_samples_per_eval_prompt: int = 1  # responses per eval prompt
    eval_temperature: float = 0.0  # eval sampling temperature (0 = greedy)
    sglang_mem_fraction_static: Optional[float] = None  # SGLang KV/weights fraction of GPU memory
    sglang: dict[str, Any] = field(default_factory=dict)  # free SGLang args -> --sglang-<key>

    @property
    def samples_per_rollout(self) -> int:
        return self.rollout_batch_size * self.n_samples_per_prompt

    @property
    def effective_global_batch_size(self) -> int:
        if self.global_batch_size is not None:
            return self.global_batch_size
        return self.samples_per_rollout // self.num_steps_per_rollout

    def validate(self) -> None:
        for key in (
            "num_rollout",
            "rollout_batch_size",
            "n_samples_per_prompt",
            "num_steps_per_rollout",
            "rollout_max_prompt_len",
            "rollout_max_response_len",
            "n_samples_per_eval_prompt",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"rollout.{key}", getattr(self, key), "must be >= 1")
        n = self.samples_per_rollout
        steps = self.num_steps_per_rollout
        if self.global_batch_size is None:
            if n % steps:
                raise ConfigError(
                    "rollout.num_steps_per_rollout",
                    steps,
                    f"does not divide rollout_batch_size x n_samples_per_prompt = "
                    f"{self.rollout_batch_size} x {self.n_samples_per_prompt} = {n}",
                    f"use one of {[d for d in range(1, n + 1) if n % d == 0]}",
                )
        elif self.global_batch_size * steps != n:
            fix = (
                f"set rollout.global_batch_size={n // steps}"
                if n % steps == 0
                else (
                    "leave rollout.global_batch_size null and pick num_steps_per_rollout dividing "
                    f"{n}"
                )
            )
            raise ConfigError(
                "rollout.global_batch_size",
                self.global_batch_size,
                f"breaks the batch invariant rollout_batch_size x n_samples_per_prompt = "
                f"global_batch_size x num_steps_per_rollout: {self.rollout_batch_size} x "
                f"{self.n_samples_per_prompt} = {n} != {self.global_batch_size} x {steps} = "
                f"{self.global_batch_size * steps}",
                fix + " (or leave it null to derive it)",
            )
        if self.rollout_temperature < 0:
            raise ConfigError(
                "rollout.rollout_temperature", self.rollout_temperature, "must be >= 0"
            )
        if not 0 < self.rollout_top_p <= 1:
            raise ConfigError("rollout.rollout_top_p", self.rollout_top_p, "must be in (0, 1]")
        if self.eval_interval is not None and self.eval_interval < 1:
            raise ConfigError(
                "rollout.eval_interval", self.eval_interval, "must be >= 1 or null (no eval)"
            )
        frac = self.sglang_mem_fraction_static
        if frac is not None and not 0 < frac < 1:
            raise ConfigError(
                "rollout.sglang_mem_fraction_static", frac, "must be in (0, 1)", "e.g. 0.7"
            )
        for key in self.sglang:
            if key.startswith("-") or "_" in key:
                raise ConfigError(
                    f"rollout.sglang.{key}",
                    self.sglang[key],
                    "keys are SGLang flag names without dashes, in kebab-case",
                    f"write it as rollout.sglang.{key.lstrip('-').replace('_', '-')}",
                )

    def __post_init__(self) -> None:
        self.validate()
