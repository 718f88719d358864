"""The one-token decode forward of the batched decode loop, eager or as CUDA graphs.

`DecodeStep(ids [B], positions [B])` runs `kv.cached_forward` for cache rows 0..B-1 with a
FIXED attended length `kv_len`, the smallest bucket (a multiple of `bucket_size`, at most the
cache length) covering every active position: no host sync, no data-dependent shape. On CUDA
each (B, kv_len) is captured once in a `torch.cuda.CUDAGraph` (inputs and logits in static
buffers, one memory pool for all graphs) and replayed; the capture runs the step for real, so
the warm-up writes the same keys/values the step writes. With `compile_step` the forward is
torch.compile'd (inductor) before capture and one bucket (the cache length) is used, so only
one compile per batch size is paid (tens of seconds each on an H200).

Graphs hold pointers to the cache tensors and the weights: weights must be updated in place
(RolloutEngine.update_weights does) and a new cache needs a new DecodeStep.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Optional

import torch
from transformers import PreTrainedModel

from miles_hydra.engine.rollout.kv import StaticKVCache, cached_forward

ENV_GRAPHS = "MILES_ROLLOUT_CUDA_GRAPHS"  # "0" turns CUDA graphs off (default on, CUDA only)
ENV_COMPILE = "MILES_ROLLOUT_COMPILE"  # "1" torch.compiles the decode step before capture


def env_flag(name: str, default: bool) -> bool:
    """A boolean environment switch: "0"/"false"/"off"/"no" = False, other non-empty = True."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "off", "no")


def _is_moe(lm: PreTrainedModel) -> bool:
    """MoE blocks route with data-dependent shapes (not capturable); they stay eager."""
    cfg = lm.config
    return bool(getattr(cfg, "num_experts", 0) or getattr(cfg, "num_local_experts", 0))


class DecodeStep:
    """Decode forward of `lm` over cache rows 0..B-1; see the module docstring."""

    def __init__(
        self,
        lm: PreTrainedModel,
        cache: StaticKVCache,
        use_graphs: bool,
        compile_step: bool = False,
        bucket_size: int = 64,
    ) -> None:
        self.lm, self.cache = lm, cache
        on_cuda = cache.keys[0].device.type == "cuda"
        self.use_graphs = use_graphs and on_cuda and not _is_moe(lm)
        self.compile_step = compile_step and self.use_graphs
        self.bucket_size = bucket_size
        self._forward: Callable = self._eager_forward
        if self.compile_step:
            self._forward = torch.compile(self._eager_forward, dynamic=False)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def kv_bucket(self, max_position: int) -> int:
        """Attended length for a step whose largest active position is `max_position`."""
        if self.compile_step:
            return self.cache.max_len
        size = self.bucket_size * (max_position // self.bucket_size + 1)
        return min(size, self.cache.max_len)

    def __call__(
        self, ids: torch.Tensor, positions: torch.Tensor, max_position: int
    ) -> torch.Tensor:
        """Logits [B, V] of token `ids` [B] at `positions` [B] (cache rows 0..B-1)."""
        kv_len = self.kv_bucket(max_position)
        if not self.use_graphs:
            return self._eager_forward(ids[:, None], positions[:, None], kv_len)
        batch = ids.shape[0]
        static_ids, static_pos = self._static_inputs(batch)
        static_ids.copy_(ids[:, None])
        static_pos.copy_(positions[:, None])
        entry = self._graphs.get((batch, kv_len))
        if entry is None:
            entry = self._capture(static_ids, static_pos, kv_len)
            self._graphs[(batch, kv_len)] = entry
        else:
            entry[0].replay()
        return entry[1]

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def _eager_forward(
        self, ids: torch.Tensor, positions: torch.Tensor, kv_len: int
    ) -> torch.Tensor:
        out = cached_forward(self.lm, self.cache, ids, positions, kv_len=kv_len)
        return out.logits[:, 0]

    def _static_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch not in self._inputs:
            device = self.cache.keys[0].device
            self._inputs[batch] = (
                torch.zeros(batch, 1, dtype=torch.long, device=device),
                torch.zeros(batch, 1, dtype=torch.long, device=device),
            )
        return self._inputs[batch]

    def _capture(
        self, ids: torch.Tensor, positions: torch.Tensor, kv_len: int
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Warm up on a side stream (compiles if asked), capture, replay once for real."""
        stream = torch.cuda.Stream(ids.device)
        stream.wait_stream(torch.cuda.current_stream(ids.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward(ids, positions, kv_len)
        torch.cuda.current_stream(ids.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._forward(ids, positions, kv_len)
        graph.replay()
        return graph, logits


def maybe_flag(value: Optional[bool], env: str, default: bool) -> bool:
    """An engine kwarg, or its environment variable when the kwarg is None."""
    return env_flag(env, default) if value is None else value
