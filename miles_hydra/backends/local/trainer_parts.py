"""Pieces of the training actor: config mapping to engine.algo, LR schedule, the PPO critic,
and the R3 routing-replay hooks (``miles_hydra.backends.local.r3``)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
from torch import nn

from miles_hydra.backends.local import algo
from miles_hydra.backends.local.models import PolicyModel
from miles_hydra.backends.local.train_batch import PackedBatch, RolloutBatch, masked_mean
from miles_hydra.config import RunConfig
from miles_hydra.config.algorithm import AlgorithmConfig, CorrectionKind
from miles_hydra.errors import ConfigError, TrainingError


def policy_loss_config(a: AlgorithmConfig) -> algo.PolicyLossConfig:
    """``algorithm.*`` -> the loss settings of ``engine.algo`` (miles' flag semantics)."""
    c = a.correction
    mis = algo.MisConfig()
    if c.kind is CorrectionKind.mis:
        mis = algo.MisConfig(
            use_tis=True,
            use_rs=c.use_rs,
            tis_level=c.level.value,
            rs_level=c.level.value,
            tis_mode=c.mode.value,
            tis_lower_bound=c.lower,
            tis_upper_bound=c.upper,
            rs_lower_bound=c.rs_lower,
            rs_upper_bound=c.rs_upper,
            rs_veto_threshold=c.rs_veto_threshold,
            tis_batch_normalize=c.batch_normalize,
        )
    return algo.PolicyLossConfig(
        eps_clip=a.eps_clip,
        eps_clip_high=a.clip_high,
        eps_clip_c=a.eps_clip_c,
        gspo=a.advantage_estimator.value == "gspo",
        entropy_coef=a.entropy_coef,
        use_kl_loss=a.use_kl_loss,
        kl_loss_coef=a.kl_loss_coef,
        kl_loss_type=a.kl_loss_type.value,
        correction=c.kind.value,
        tis_clip_low=c.lower_bound if c.kind is not CorrectionKind.none else 0.0,
        tis_clip=c.upper,
        mis=mis,
        aggregation=algo.LossAggregation[a.loss_aggregation.name],
    )


def lr_lambda(a: AlgorithmConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of ``algorithm.lr`` at optimizer step s: linear warm-up over
    ``lr_warmup_iters``, then constant / linear / cosine decay to ``min_lr`` at the last step."""
    floor = a.min_lr / a.lr
    warmup = a.lr_warmup_iters
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if a.lr_decay_style == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / decay_steps)
        if a.lr_decay_style == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * shape

    return factor


class Critic:
    """PPO value model: a copy of the policy trunk with a scalar head, its own optimizer."""

    def __init__(self, trunk: PolicyModel, cfg: RunConfig) -> None:
        self.trunk = trunk
        self.cfg = cfg
        self.value_clip = cfg.algorithm.value_clip
        self.aggregation = algo.LossAggregation[cfg.algorithm.loss_aggregation.name]
        param = next(trunk.parameters())
        self.head = nn.Linear(trunk.lm.config.hidden_size, 1).to(param.device, param.dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.params = [*trunk.lm.model.parameters(), *self.head.parameters()]
        a = cfg.algorithm
        self.optimizer = torch.optim.AdamW(
            self.params, lr=a.lr, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_eps
        )
        self.clip_grad = a.clip_grad

    def values(self, mb: PackedBatch, routed: Any = None) -> torch.Tensor:
        """``V`` of the state before each response token, ``[B, T]`` float32."""
        with routing_context(self.trunk, routed, self.cfg, mb.input_ids):
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
            value_clip=self.value_clip,
            aggregation=self.aggregation,
            num_samples=num_samples,
            num_tokens=num_tokens,
        )

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
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


def _r3() -> Any:
    try:
        from miles_hydra.backends.local import r3
    except ImportError as err:
        raise ConfigError(
            "algorithm.use_rollout_routing_replay",
            True,
            f"needs miles_hydra.backends.local.r3 ({err})",
            "set algorithm.use_rollout_routing_replay=false",
        ) from err
    return r3


@contextlib.contextmanager
def routing_context(
    model: nn.Module,
    routed: Optional[list[Any]],
    cfg: Optional[RunConfig],
    input_ids: Optional[torch.Tensor] = None,
    record: bool = False,
) -> Iterator[Optional[dict[str, float]]]:
    """R3 around one forward of ``model`` on ``input_ids``: replay the rollout's expert choices
    when ``algorithm.use_rollout_routing_replay`` (indices from the rollout, probabilities from
    the current router, so the router still learns). With ``record``, the dict it yields is
    filled after the block with the routing mismatch (``train/routing_mismatch*``) between the
    rollout and what this forward used (0 under R3)."""
    result: dict[str, float] = {}
    if routed is None or input_ids is None:
        yield result
        return
    r3 = _r3()
    replay = cfg is not None and cfg.algorithm.use_rollout_routing_replay
    routers = r3.moe_routers(model.lm)
    per_seq = [_moe_layers_only(model.lm, a, len(routers)) for a in routed]
    packed = r3.pack_routing(per_seq, input_ids.shape[1], device=input_ids.device)
    with contextlib.ExitStack() as stack:
        if replay:
            stack.enter_context(r3.replay_routing(model.lm, packed))
        recording = stack.enter_context(r3.record_routing(model.lm)) if record else None
        yield result
    if recording is not None:
        result.update(r3.routing_mismatch_metrics(packed, recording.stacked()))


def _moe_layers_only(lm: nn.Module, routed: Any, num_moe: int) -> Any:
    """The rollout engine records ``[T, num_layers, K]`` with -1 in dense layers; r3 wants the
    ``[T, num_moe_layers, K]`` columns of the MoE layers only."""
    if routed is None or routed.shape[1] == num_moe:
        return routed
    moe = [
        i for i, layer in enumerate(lm.model.layers) if hasattr(getattr(layer, "mlp", None), "gate")
    ]
    return routed[:, moe]


def check_finite(loss: torch.Tensor, rollout_id: int, metrics: dict[str, Any]) -> None:
    """TrainingError for a NaN/Inf loss, before backward and the optimizer step."""
    if torch.isfinite(loss):
        return
    parts = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    raise TrainingError(
        f"non-finite loss ({float(loss)}) at rollout {rollout_id} ({parts}): training "
        "stopped before the optimizer step, the last good checkpoint is kept; lower "
        "algorithm.lr or algorithm.clip_grad, or check the rewards"
    )


def rollout_log(
    packed: PackedBatch,
    fwd: dict[str, Any],
    adv: torch.Tensor,
    returns: torch.Tensor,
    normalized_rewards: torch.Tensor,
) -> dict[str, float]:
    """miles ``log_rollout_data``: mask-weighted per-sample means of the rollout tensors."""
    mask = packed.loss_mask
    out = {
        "rollout/log_probs": masked_mean(fwd["log_probs"], mask),
        "rollout/rollout_log_probs": masked_mean(packed.rollout_log_probs, mask),
        "rollout/advantages": masked_mean(adv, mask),
        "rollout/returns": masked_mean(returns, mask),
        "rollout/rewards": float(normalized_rewards.mean()),
        "rollout/response_lengths": float(mask.sum(-1).mean()),
        "rollout/total_lengths": float(packed.lengths.float().mean()),
    }
    if "ref_log_probs" in fwd:
        out["rollout/ref_log_probs"] = masked_mean(fwd["ref_log_probs"], mask)
        diff = (fwd["log_probs"] - fwd["ref_log_probs"]).abs() * mask
        out["rollout/ref_logprob_abs_diff_max"] = float(diff.max())
    if "values" in fwd:
        out["rollout/values"] = masked_mean(fwd["values"], mask)
    return out


def select_routed(batch: RolloutBatch, rows: torch.Tensor) -> Any:
    if batch.routed_experts is None:
        return None
    return [batch.routed_experts[int(i)] for i in rows]


def rows_of(fwd: dict[str, Any], key: str, rows: torch.Tensor, t: int, device: str) -> Any:
    return fwd[key][rows, :t].to(device) if key in fwd else None


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x
