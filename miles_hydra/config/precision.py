"""`precision` group: numeric formats for training and rollout."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from miles_hydra.errors import ConfigError


class PrecisionMode(enum.Enum):
    fp32 = "fp32"  # CPU / debugging
    bf16 = "bf16"
    fp8 = "fp8"  # blockwise FP8 training (Transformer Engine) and FP8 rollout
    int4_qat = "int4_qat"  # INT4 quantization-aware training, INT4 rollout


class DType(enum.Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class PrecisionConfig:
    mode: PrecisionMode = PrecisionMode.fp32  # training precision recipe
    train_dtype: DType = DType.float32  # parameter/compute dtype of the local trainer
    rollout_dtype: DType = DType.float32  # dtype of the local rollout engine's weights
    fp8_format: str = "e4m3"  # Megatron --fp8-format (fp8 only)
    fp8_recipe: str = (
        "blockwise"  # Megatron --fp8-recipe: blockwise | mxfp8 | tensorwise (fp8 only)
    )
    # fp8 / int4_qat on backend=miles: the HF checkpoint SGLang serves (miles --hf-checkpoint),
    # already block-wise FP8 / W4A16, as miles' recipes do; None = model.hf_checkpoint
    rollout_checkpoint: Optional[str] = None  # HF checkpoint in the rollout format (FP8 / INT4)
    min_compute_capability: float = 0.0  # GPU compute capability this mode needs (fp8: 9.0)
    env: dict[str, str] = field(default_factory=dict)  # job env vars this mode needs

    def validate(self) -> None:
        quantized = (PrecisionMode.fp8, PrecisionMode.int4_qat)
        if self.rollout_checkpoint and self.mode not in quantized:
            raise ConfigError(
                "precision.rollout_checkpoint",
                self.rollout_checkpoint,
                f"is the FP8/INT4 rollout checkpoint; precision={self.mode.value} serves "
                "model.hf_checkpoint",
                "drop the key, or use precision=fp8 / int4_qat",
            )
        if self.mode is PrecisionMode.fp8 and self.fp8_recipe not in (
            "blockwise",
            "mxfp8",
            "tensorwise",
            "delayed",
        ):
            raise ConfigError(
                "precision.fp8_recipe",
                self.fp8_recipe,
                "is not an FP8 recipe Megatron knows",
                "use blockwise, mxfp8, tensorwise or delayed",
            )
        if self.mode is PrecisionMode.fp8 and self.fp8_format not in ("e4m3", "hybrid"):
            raise ConfigError(
                "precision.fp8_format",
                self.fp8_format,
                "is not an FP8 format",
                "use e4m3 or hybrid",
            )

    def __post_init__(self) -> None:
        self.validate()
