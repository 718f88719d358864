"""`data` group: where prompts come from (built-in synthetic tasks or prompt files)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError


class DataSource(enum.Enum):
    synthetic = "synthetic"  # built-in verifiable task generated on the fly
    file = "file"  # JSONL or Parquet prompt file


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic  # synthetic task or prompt file
    task: str = "arithmetic"  # synthetic task: arithmetic | countdown | sorting
    task_kwargs: dict[str, Any] = field(default_factory=dict)  # task knobs (digits, lengths, ...)
    prompt_data: Optional[str] = None  # prompt file (.jsonl or .parquet) for source=file
    input_key: str = "prompt"  # prompt field of each record
    label_key: str = "label"  # label field of each record
    apply_chat_template: bool = False  # wrap prompts in the tokenizer's chat template
    rollout_shuffle: bool = True  # shuffle prompts each epoch
    eval_prompt_data: Optional[str] = None  # eval prompt file; None = held-out synthetic prompts
    num_eval_prompts: int = 64  # held-out synthetic eval prompts
    warmup_sft_steps: int = 0  # supervised warm-start steps on task solutions before RL
    warmup_sft_lr: Optional[float] = None  # warm-start learning rate; required with warmup steps

    def validate(self) -> None:
        if self.source is DataSource.file and not self.prompt_data:
            raise ConfigError(
                "data.prompt_data",
                None,
                "is required for data.source=file",
                "set data.prompt_data=/path/to/prompts.jsonl (or .parquet)",
            )
        if self.prompt_data and not self.prompt_data.endswith((".jsonl", ".parquet")):
            raise ConfigError(
                "data.prompt_data",
                self.prompt_data,
                "is neither .jsonl nor .parquet",
                "convert the file to JSONL or Parquet",
            )
        if self.warmup_sft_lr is not None and self.warmup_sft_lr <= 0:
            raise ConfigError("data.warmup_sft_lr", self.warmup_sft_lr, "must be > 0 or null")
        if self.warmup_sft_steps > 0 and self.warmup_sft_lr is None:
            raise ConfigError(
                "data.warmup_sft_lr",
                None,
                f"is required with data.warmup_sft_steps={self.warmup_sft_steps} (the warm-start "
                "has its own learning rate, not one derived from algorithm.lr)",
                "set data.warmup_sft_lr=<lr> (conf/data/arithmetic.yaml uses 2e-3), or "
                "data.warmup_sft_steps=0",
            )
        if self.warmup_sft_steps < 0:
            raise ConfigError("data.warmup_sft_steps", self.warmup_sft_steps, "must be >= 0")

    def __post_init__(self) -> None:
        self.validate()
