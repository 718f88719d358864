"""Rollout engine of the local backend: batched, KV-cached, speculative generation.

engine         ``RolloutEngine``: weights, the KV cache, generate(); the per-slot loop (CPU, R3)
actor          ``RolloutEngineActor``, the engine as a Ray actor
sampling       ``SamplingParams``, ``GenOutput`` and the reference sampling math (per-slot loop)
kv             the static KV cache and the cached forward of HF decoder models
routing        R3 recording: the experts each MoE layer chose per position
decode         ``BatchedDecoder``: the batched loop (all slots, one fixed-shape step; the GPU path)
graphs         ``DecodeStep``: that step eager, torch.compile'd, or replayed as CUDA graphs
step           ``advance``: one decode step as pure tensor code over device-side state
step_sampler   ``StepSampler``: the token draws inside that step (capturable)
attn_kernel    Triton decode/verify attention over the cache, with a torch reference
sample_kernel  Triton sampling kernels (Gumbel-max, logsumexp, uniforms), with torch references

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
