"""The learning-rate schedule of the local trainer: ``algorithm.lr_warmup_iters`` of linear
warm-up, then ``algorithm.lr_decay_style`` down to ``algorithm.min_lr`` (Megatron's
``--lr-decay-style`` semantics, as a ``LambdaLR`` multiplier)."""

from __future__ import annotations

import math
from collections.abc import Callable

from miles_hydra.config.algorithm import AlgorithmConfig, LRDecayStyle


def lr_lambda(a: AlgorithmConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of ``algorithm.lr`` at optimizer step s: linear warm-up over
    ``lr_warmup_iters``, then constant / linear / cosine decay to ``min_lr`` at the last step.

    With ``f = min_lr / lr`` and progress ``p = min(1, (s − warmup) / (total − warmup))``:
    constant ``1``; linear ``f + (1 − f)(1 − p)``; cosine ``f + (1 − f)·(1 + cos πp)/2``.
    """
    floor = a.min_lr / a.lr
    warmup = a.lr_warmup_iters
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if a.lr_decay_style is LRDecayStyle.constant:
            return 1.0
        progress = min(1.0, (step - warmup) / decay_steps)
        if a.lr_decay_style is LRDecayStyle.linear:
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * shape

    return factor
