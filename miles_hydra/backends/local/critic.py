"""The PPO critic of the local trainer (``advantage_estimator=ppo``): a copy of the policy
trunk with a scalar value head and its own optimizer; its loss is ``algo``'s clipped value
loss (miles' critic role, metrics ``train/value_*``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from miles_hydra.backends.local import algo
from miles_hydra.backends.local.models import PolicyModel
from miles_hydra.backends.local.r3 import routing_context
from miles_hydra.backends.local.train_batch import PackedBatch
from miles_hydra.config.algorithm import AlgorithmConfig


class Critic:
    """PPO value model: a copy of the policy trunk with a scalar head, its own optimizer."""

    def __init__(self, trunk: PolicyModel, a: AlgorithmConfig) -> None:
        self.trunk = trunk
        self.algorithm = a
        param = next(trunk.parameters())
        self.head = nn.Linear(trunk.lm.config.hidden_size, 1).to(param.device, param.dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.params = [*trunk.lm.model.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=a.lr, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_eps
        )

    def values(self, mb: PackedBatch, routed: Any = None) -> torch.Tensor:
        """``V`` of the state before each response token, ``[B, T]`` float32."""
        replay = self.algorithm.use_rollout_routing_replay
        with routing_context(self.trunk.lm, routed, mb.input_ids, replay=replay):
            hidden = self.trunk.lm.model(input_ids=mb.input_ids).last_hidden_state
        index = mb.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return self.head(hidden.gather(1, index)).squeeze(-1).float()

    def loss(
        self,
        mb: PackedBatch,
        routed: Any,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        num_samples: int,
        num_tokens: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = mb.loss_mask.device
        return algo.compute_value_loss_and_metrics(
            values=self.values(mb, routed),
            old_values=old_values.to(device),
            returns=returns.to(device),
            loss_mask=mb.loss_mask,
            value_clip=self.algorithm.value_clip,
            aggregation=self.algorithm.loss_aggregation,
            num_samples=num_samples,
            num_tokens=num_tokens,
        )

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.algorithm.clip_grad)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "trunk": self.trunk.lm.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trunk.lm.load_state_dict(state["trunk"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
