"""R3 recording in the rollout engine: the top-k expert ids each MoE layer chose per position.

Each forward runs inside `miles_hydra.backends.local.r3.record_routing`; `RoutingRecorder.store`
scatters that call's ids ``[B, T, L, K]`` to the slots' positions, exactly like the KV cache,
so the ids of rejected speculative positions are overwritten when those positions are fed
again. Output layout (r3.py's): ``[prompt_len + response_len - 1, num_moe_layers, top_k]``
int32, the last sampled token never being fed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from transformers import PreTrainedModel

from miles_hydra.backends.local import r3


class RoutingRecorder:
    """Per-slot routing buffers of `lm`'s MoE layers for one generate() call."""

    def __init__(self, lm: PreTrainedModel, slots: int, max_len: int) -> None:
        routers = r3.moe_routers(lm)  # ConfigError for a dense model
        self.lm = lm
        self.buffer = torch.full(
            (slots, max_len, len(routers), routers[0].top_k), -1, dtype=torch.int32
        )

    @contextlib.contextmanager
    def record(self, rows: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
        """Record the forward run in this block; its tokens sit at `rows` x `positions` [B, T]."""
        with r3.record_routing(self.lm) as record:
            yield
        ids = record.stacked()  # [B, T, L, K]
        b, t = positions.shape
        self.buffer[rows.cpu()[:, None].expand(b, t), positions.cpu()] = ids

    def take(self, slot: int, length: int) -> np.ndarray:
        """The routing of the first `length` positions of `slot`; clears the slot."""
        out = self.buffer[slot, :length].numpy().copy()
        self.buffer[slot] = -1
        return out
