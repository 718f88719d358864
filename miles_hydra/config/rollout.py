"""`rollout` group: sampling and the four batch knobs of miles' batch invariant."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from miles_hydra.errors import ConfigError


class DynamicSampling(str, Enum):
    """Which prompt groups dynamic sampling keeps (DAPO; miles --dynamic-sampling-filter-path)."""

    none = "none"  # keep every group
    nonzero_std = "nonzero_std"  # drop groups whose rewards are all equal (zero advantage)
    custom = "custom"  # your filter: rollout.dynamic_sampling_filter_path


# miles' built-in filter that dynamic_sampling=nonzero_std compiles to (v0.1.0 and 0.0.2).
MILES_NONZERO_STD_FILTER = (
    "miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std"
)


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
    partial_rollout: bool = False  # pause unfinished samples when the batch is full, resume next
    mask_offpolicy_in_partial_rollout: bool = False  # resumed samples: no loss on older tokens
    over_sampling_batch_size: Optional[int] = None  # prompts per sampling round; None = batch
    dynamic_sampling: DynamicSampling = DynamicSampling.none  # which groups to train on
    dynamic_sampling_filter_path: Optional[str] = None  # "pkg.module:function" (custom filter)
    dynamic_sampling_max_rounds: int = 10  # sampling rounds per rollout before a short batch
    max_weight_staleness: Optional[int] = None  # restart paused groups older than this; None = off
    eval_interval: Optional[int] = None  # evaluate every n rollouts; None = never
    n_samples_per_eval_prompt: int = 1  # responses per eval prompt
    eval_temperature: float = 0.0  # eval sampling temperature (0 = greedy)
    sglang_mem_fraction_static: Optional[float] = None  # SGLang KV/weights fraction of GPU memory
    sglang: dict[str, Any] = field(default_factory=dict)  # free SGLang args -> --sglang-<key>

    @property
    def samples_per_rollout(self) -> int:
        return self.rollout_batch_size * self.n_samples_per_prompt

    @property
    def effective_over_sampling_batch_size(self) -> int:
        """Prompts drawn per sampling round (miles defaults it to rollout_batch_size)."""
        if self.over_sampling_batch_size is None:
            return self.rollout_batch_size
        return self.over_sampling_batch_size

    @property
    def dynamic_filter_path(self) -> Optional[str]:
        """The filter as miles loads it (dotted ``package.module.function``); None = no filter."""
        if self.dynamic_sampling is DynamicSampling.nonzero_std:
            return MILES_NONZERO_STD_FILTER
        if self.dynamic_sampling is DynamicSampling.custom and self.dynamic_sampling_filter_path:
            return self.dynamic_sampling_filter_path.replace(":", ".")
        return None

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

        self._validate_sampling_modes()

    def _validate_sampling_modes(self) -> None:
        """Partial rollout, over-sampling, dynamic sampling and staleness (issue 16)."""
        osb = self.over_sampling_batch_size
        if osb is not None and osb < self.rollout_batch_size:
            raise ConfigError(
                "rollout.over_sampling_batch_size",
                osb,
                f"must be >= rollout.rollout_batch_size={self.rollout_batch_size} (miles asserts "
                "it: a sampling round draws at least one batch of prompts)",
                f"set it to {self.rollout_batch_size} or more, or null (= rollout_batch_size)",
            )
        if self.mask_offpolicy_in_partial_rollout and not self.partial_rollout:
            raise ConfigError(
                "rollout.mask_offpolicy_in_partial_rollout",
                True,
                "masks the tokens a resumed sample got before a weight update; without "
                "rollout.partial_rollout no sample is ever resumed",
                "set rollout.partial_rollout=true, or leave the mask off",
            )
        path = self.dynamic_sampling_filter_path
        if self.dynamic_sampling is DynamicSampling.custom:
            if not path:
                raise ConfigError(
                    "rollout.dynamic_sampling_filter_path",
                    path,
                    "is required by rollout.dynamic_sampling=custom",
                    "set rollout.dynamic_sampling_filter_path=my_pkg.filters:keep_group",
                )
            module, sep, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
            if not (module and sep and attr) or " " in path:
                raise ConfigError(
                    "rollout.dynamic_sampling_filter_path",
                    path,
                    "must name a function as package.module:function",
                    "e.g. rollout.dynamic_sampling_filter_path=my_pkg.filters:keep_group",
                )
        elif path:
            raise ConfigError(
                "rollout.dynamic_sampling_filter_path",
                path,
                f"is only read by rollout.dynamic_sampling=custom (it is "
                f"{self.dynamic_sampling.value})",
                "set rollout.dynamic_sampling=custom, or drop the path",
            )
        if self.dynamic_sampling is DynamicSampling.nonzero_std and self.n_samples_per_prompt < 2:
            raise ConfigError(
                "rollout.dynamic_sampling",
                self.dynamic_sampling.value,
                "compares the rewards within a prompt group; with n_samples_per_prompt=1 it "
                "would drop every group",
                "set rollout.n_samples_per_prompt >= 2, or rollout.dynamic_sampling=none",
            )
        if self.dynamic_sampling_max_rounds < 1:
            raise ConfigError(
                "rollout.dynamic_sampling_max_rounds",
                self.dynamic_sampling_max_rounds,
                "must be >= 1",
                "e.g. 10 (verl's max_num_gen_batches)",
            )
        stale = self.max_weight_staleness
        if stale is not None:
            if stale < 1:
                raise ConfigError(
                    "rollout.max_weight_staleness",
                    stale,
                    "must be >= 1 or null: the one-step-off pipeline itself trains on data one "
                    "weight version old",
                    "set it to 1 or more, or null (no staleness limit)",
                )
            if not (self.partial_rollout or self.async_training):
                raise ConfigError(
                    "rollout.max_weight_staleness",
                    stale,
                    "limits how old a trained sample's weights may be; with neither "
                    "rollout.partial_rollout nor rollout.async_training every sample is on-policy",
                    "set rollout.partial_rollout=true or rollout.async_training=true, or null",
                )

    def __post_init__(self) -> None:
        self.validate()
