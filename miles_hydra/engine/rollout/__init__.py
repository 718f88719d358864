"""Rollout engine of the local backend: batched, KV-cached, speculative generation."""

from miles_hydra.engine.rollout.actor import RolloutEngineActor
from miles_hydra.engine.rollout.engine import RolloutEngine
from miles_hydra.engine.rollout.sampling import GenOutput, SamplingParams

__all__ = ["GenOutput", "RolloutEngine", "RolloutEngineActor", "SamplingParams"]
