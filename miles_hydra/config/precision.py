"""`precision` group: numeric formats for training and rollout."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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
    min_compute_capability: float = 0.0  # GPU compute capability this mode needs (fp8: 9.0)
    env: dict[str, str] = field(default_factory=dict)  # job env vars this mode needs

    def validate(self) -> None:
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
