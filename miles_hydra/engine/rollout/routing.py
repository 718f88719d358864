"""R3 recording in the rollout engine: the top-k expert ids each MoE layer chose per position.

Forward hooks on the MoE routers (HF ``mlp.gate`` modules returning ``(logits, scores,
indices)``) capture the ids of each forward; `store` scatters them to the slots' positions,
exactly like the KV cache, so positions of rejected speculative tokens are overwritten later.
Dense layers hold -1. Output layout (miles' ``rollout_routed_experts``):
``[prompt_len + response_len - 1, num_layers, topk]`` int32.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel


class RoutingRecorder:
    """Records routed expert ids of `lm`'s MoE layers into per-slot buffers."""

    def __init__(self, lm: PreTrainedModel, slots: int, max_len: int) -> None:
        layers = lm.model.layers
        topk = getattr(lm.config, "num_experts_per_tok", 1)
        self.buffer = torch.full((slots, max_len, len(layers), topk), -1, dtype=torch.int32)
        self._last: dict[int, torch.Tensor] = {}
        self._handles = []
        for i, layer in enumerate(layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and hasattr(gate, "top_k"):
                self._handles.append(gate.register_forward_hook(self._hook(i)))

    def _hook(self, layer: int):
        def hook(_module: torch.nn.Module, _inputs: tuple, output: tuple) -> None:
            self._last[layer] = output[2].detach()

        return hook

    def store(self, rows: torch.Tensor, positions: torch.Tensor) -> None:
        """Scatter the ids of the last forward ([B*T, topk] per layer) to rows x positions."""
        b, t = positions.shape
        rows_cpu, pos_cpu = rows.cpu()[:, None].expand(b, t), positions.cpu()
        for layer, ids in self._last.items():
            self.buffer[rows_cpu, pos_cpu, layer] = ids.view(b, t, -1).to("cpu", torch.int32)
        self._last.clear()

    def take(self, slot: int, length: int) -> np.ndarray:
        out = self.buffer[slot, :length].numpy().copy()
        self.buffer[slot] = -1
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
