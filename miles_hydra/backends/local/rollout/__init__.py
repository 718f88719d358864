"""Rollout engine of the local backend: batched, KV-cached, speculative generation.

`RolloutEngineActor` (the Ray actor) is imported lazily, so the engine imports without Ray.
"""

from typing import Any

from miles_hydra.backends.local.rollout.engine import RolloutEngine
from miles_hydra.backends.local.rollout.sampling import GenOutput, SamplingParams

__all__ = ["GenOutput", "RolloutEngine", "RolloutEngineActor", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "RolloutEngineActor":
        from miles_hydra.backends.local.rollout.actor import RolloutEngineActor

        return RolloutEngineActor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
