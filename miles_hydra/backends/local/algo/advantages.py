"""Rewards → advantages (miles ``train_data_conversion.py::_post_process_rewards``,
``loss_hub/advantages.py``, ``math_utils.py``, ``distributed_utils.py::distributed_masked_whiten``).

Shapes: ``rewards`` is ``[B]`` (one scalar per sample); token tensors are ``[B, T]`` padded
response tensors with a 0/1 ``loss_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from miles_hydra.config.algorithm import AdvantageEstimator

_GROUP_NORMALIZED = (
    AdvantageEstimator.grpo,
    AdvantageEstimator.gspo,
    AdvantageEstimator.reinforce_plus_plus_baseline,
)


def _split_sizes(num_rewards: int, group_sizes: int | Sequence[int]) -> list[int]:
    """Sizes of the contiguous prompt groups: ``[g] * (N / g)`` for an int, else as given."""
    if isinstance(group_sizes, int):
        if group_sizes <= 0 or num_rewards % group_sizes != 0:
            raise ValueError(f"{num_rewards} rewards do not split into groups of {group_sizes}")
        return [group_sizes] * (num_rewards // group_sizes)
    sizes = list(group_sizes)
    if sum(sizes) != num_rewards or any(size <= 0 for size in sizes):
        raise ValueError(f"group sizes {sizes} do not partition {num_rewards} rewards")
    return sizes


def normalize_group_rewards(
    rewards: torch.Tensor,
    group_sizes: int | Sequence[int],
    *,
    std_normalization: bool,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Per prompt group g: ``r̃_i = r_i − mean_g(r)``, then, if ``std_normalization`` (GRPO;
    off = Dr.GRPO) and ``|g| > 1`` and ``std_g > 0``: ``r̃_i /= std_g(r) + epsilon``.

    ``std_g`` is the unbiased (n−1) standard deviation, as ``torch.std``. Groups are
    contiguous runs of ``group_sizes`` (an int: every group has that size).
    Returns float32 ``[B]``.
    """
    rewards = rewards.float()
    normalized = []
    for group in rewards.split(_split_sizes(rewards.numel(), group_sizes)):
        centered = group - group.mean()
        if std_normalization and group.numel() > 1:
            std = group.std()
            if std > 0:
                centered = centered / (std + epsilon)
        normalized.append(centered)
    return torch.cat(normalized)


def normalize_rewards_for_estimator(
    estimator: AdvantageEstimator,
    rewards: torch.Tensor,
    group_sizes: int | Sequence[int],
    *,
    rewards_normalization: bool,
    grpo_std_normalization: bool,
) -> torch.Tensor:
    """miles' dispatch: grpo/gspo/reinforce_plus_plus_baseline get group-mean subtraction when
    ``rewards_normalization``; only grpo/gspo also divide by the group std when
    ``grpo_std_normalization``. Other estimators get the raw rewards (float32 ``[B]``)."""
    if estimator not in _GROUP_NORMALIZED or not rewards_normalization:
        return rewards.float()
    use_std = (
        grpo_std_normalization and estimator is not AdvantageEstimator.reinforce_plus_plus_baseline
    )
    return normalize_group_rewards(rewards, group_sizes, std_normalization=use_std)


def grpo_advantages(
    rewards: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO/GSPO: ``A_{i,t} = r̃_i`` for every position; ``returns = A``. ``[B] -> [B, T]``."""
    advantages = rewards.float()[:, None].expand(loss_mask.shape).clone()
    return advantages, advantages.clone()


def _last_loss_index(loss_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last ``loss_mask == 1`` position per row; ``[B, T] -> [B]``."""
    positions = torch.arange(loss_mask.shape[-1], device=loss_mask.device)
    return torch.where(loss_mask.bool(), positions, -1).amax(dim=-1)


def reinforce_plus_plus_returns(
    rewards: torch.Tensor,
    kl: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    kl_coef: float,
    gamma: float,
    response_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++: token rewards ``ρ_t = −kl_coef·KL_t`` plus the raw reward ``r_i`` at the last
    ``loss_mask = 1`` token; ``G_t = ρ_t + γ·G_{t+1}`` (``G_T = 0``); ``A = returns = G``.

    As in miles, KL of response tokens with ``loss_mask = 0`` (e.g. tool output) still enters
    ``ρ_t``; ``response_mask`` marks which positions are response tokens at all (default: every
    position) so padding contributes nothing. Raises ValueError for a row with no loss token.
    """
    last = _last_loss_index(loss_mask)
    if bool((last < 0).any()):
        raise ValueError("reinforce_plus_plus needs at least one loss_mask=1 token per sample")
    token_rewards = -kl_coef * kl.float()
    if response_mask is not None:
        token_rewards = torch.where(response_mask.bool(), token_rewards, 0.0)
    rows = torch.arange(token_rewards.shape[0], device=token_rewards.device)
    token_rewards = token_rewards.index_put((rows, last), rewards.float(), accumulate=True)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[-1])):
        running = token_rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def reinforce_plus_plus_baseline_advantages(
    rewards: torch.Tensor, kl: torch.Tensor, *, kl_coef: float
) -> torch.Tensor:
    """REINFORCE++-baseline: ``A_{i,t} = r̃_i − kl_coef·KL_{i,t}`` (r̃ group-mean-subtracted)."""
    return rewards.float()[:, None] - kl_coef * kl.float()


def gae_advantages_and_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    gamma: float,
    lambd: float,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO GAE over trainable tokens only (miles ``get_advantages_and_returns_batch``).

    On the subsequence of ``loss_mask = 1`` tokens k = 1..K of each row:
    ``r_k = −kl_coef·KL_k`` (+ ``rewards_i`` at k = K), ``δ_k = r_k + γ·V_{k+1} − V_k`` with
    ``V_{K+1} = 0``, ``A_k = δ_k + γλ·A_{k+1}``, ``R_k = A_k + V_k``. Masked tokens are not
    transitions (the carry crosses them undecayed) and get ``A = R = 0``; a fully masked row
    gets zeros. Returns detached ``(advantages, returns)``, both ``[B, T]``.
    """
    with torch.no_grad():
        mask = loss_mask.bool()
        values = values.detach().float()
        token_rewards = torch.zeros_like(values) if kl is None else -kl_coef * kl.float()
        last = _last_loss_index(loss_mask)
        rows = torch.arange(values.shape[0], device=values.device)
        has_tokens = last >= 0
        token_rewards = token_rewards.index_put(
            (rows[has_tokens], last[has_tokens]), rewards.float()[has_tokens], accumulate=True
        )
        advantages = torch.zeros_like(values)
        next_value = torch.zeros_like(values[:, 0])
        carry = torch.zeros_like(values[:, 0])
        for t in reversed(range(values.shape[-1])):
            delta = token_rewards[:, t] + gamma * next_value - values[:, t]
            gae = delta + gamma * lambd * carry
            active = mask[:, t]
            advantages[:, t] = torch.where(active, gae, 0.0)
            carry = torch.where(active, gae, carry)
            next_value = torch.where(active, values[:, t], next_value)
        returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


def compute_advantages(
    estimator: AdvantageEstimator,
    *,
    rewards: torch.Tensor,
    loss_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    kl_coef: float,
    gamma: float,
    lambd: float,
    response_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the estimator; returns ``(advantages, returns)``, both ``[B, T]``.

    ``rewards`` are the already-normalized ones (``normalize_rewards_for_estimator``).
    ``kl`` is ``approx_kl(log_probs, ref_log_probs, kl_loss_type)`` when ``kl_coef != 0``
    (missing = zeros); grpo/gspo ignore it. ``values`` ([B, T]) are required for ppo.
    """
    if kl is None:
        kl = torch.zeros(loss_mask.shape, dtype=torch.float32, device=loss_mask.device)
    if estimator in (AdvantageEstimator.grpo, AdvantageEstimator.gspo):
        return grpo_advantages(rewards, loss_mask)
    if estimator is AdvantageEstimator.reinforce_plus_plus:
        returns = reinforce_plus_plus_returns(
            rewards, kl, loss_mask, kl_coef=kl_coef, gamma=gamma, response_mask=response_mask
        )
        return returns, returns.clone()
    if estimator is AdvantageEstimator.reinforce_plus_plus_baseline:
        advantages = reinforce_plus_plus_baseline_advantages(rewards, kl, kl_coef=kl_coef)
        return advantages, advantages.clone()
    if values is None:
        raise ValueError("the ppo advantage estimator needs critic values")
    return gae_advantages_and_returns(
        rewards, values, loss_mask, gamma=gamma, lambd=lambd, kl=kl, kl_coef=kl_coef
    )


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    shift_mean: bool = True,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """``--normalize-advantages`` (miles ``distributed_masked_whiten``, single process).

    ``μ = Σ m·x / Σ m``, ``σ² = Σ m·x² / Σ m − μ²`` times ``n/(n−1)`` when ``n = Σ m ≥ 2``;
    ``x ← (x − μ)/sqrt(σ² + ε)`` at every position (masked ones too; the loss masks them),
    plus ``μ`` back when not ``shift_mean``. Raises ValueError when ``Σ m = 0``.
    """
    values = values.float()
    weights = mask.float()
    count = weights.sum()
    if count.item() == 0:
        raise ValueError("cannot whiten advantages: the loss mask selects no token")
    masked = torch.where(mask.bool(), values, 0.0)
    mean = masked.sum() / count
    var = masked.square().sum() / count - mean.square()
    if count.item() >= 2:
        var = var * count / (count - 1)
    whitened = (values - mean) * torch.rsqrt(var + epsilon)
    return whitened if shift_mean else whitened + mean
