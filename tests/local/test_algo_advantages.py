"""Reward normalization, advantage estimators and whitening on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from miles_hydra.backends.local.algo.advantages import (
    compute_advantages,
    gae_advantages_and_returns,
    grpo_advantages,
    masked_whiten,
    normalize_group_rewards,
    normalize_rewards_for_estimator,
    reinforce_plus_plus_baseline_advantages,
    reinforce_plus_plus_returns,
)
from miles_hydra.config.algorithm import AdvantageEstimator


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0])


def test_grpo_group_normalization_uses_unbiased_std_plus_epsilon() -> None:
    std1 = math.sqrt(4 * 0.25 / 3)  # unbiased std of [1, 0, 0, 1]
    std3 = math.sqrt((3 * 0.25 + 1.5**2) / 3)  # of [0, 0, 0, 2] -> 1.0
    out = normalize_group_rewards(REWARDS, 4, std_normalization=True)
    expected = [0.5 / (std1 + 1e-6), -0.5 / (std1 + 1e-6), -0.5 / (std1 + 1e-6)]
    expected += [0.5 / (std1 + 1e-6), 0.0, 0.0, 0.0, 0.0]  # zero-std group stays 0
    expected += [-0.5 / (std3 + 1e-6)] * 3 + [1.5 / (std3 + 1e-6)]
    close(out, expected)


def test_dr_grpo_only_subtracts_the_group_mean() -> None:
    out = normalize_group_rewards(REWARDS, 4, std_normalization=False)
    close(out, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.5, -0.5, -0.5, 1.5])


def test_uneven_groups_and_single_sample_group() -> None:
    out = normalize_group_rewards(torch.tensor([3.0, 1.0, 2.0]), [1, 2], std_normalization=True)
    std = math.sqrt(0.5)
    close(out, [0.0, -0.5 / (std + 1e-6), 0.5 / (std + 1e-6)])


def test_group_sizes_must_partition_the_rewards() -> None:
    with pytest.raises(ValueError):
        normalize_group_rewards(REWARDS, 5, std_normalization=True)
    with pytest.raises(ValueError):
        normalize_group_rewards(REWARDS, [4, 4], std_normalization=True)


def test_reward_normalization_dispatch_per_estimator() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    std = math.sqrt(1 / 3)
    on = {"rewards_normalization": True, "grpo_std_normalization": True}  # the schema's defaults

    def normalize(estimator: AdvantageEstimator, **flags: bool) -> torch.Tensor:
        return normalize_rewards_for_estimator(estimator, rewards, 4, **{**on, **flags})

    grpo = normalize(AdvantageEstimator.grpo)
    close(grpo, [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6)])
    close(normalize(AdvantageEstimator.gspo), grpo.tolist())
    # reinforce_plus_plus_baseline: mean only, even with grpo_std_normalization on
    close(normalize(AdvantageEstimator.reinforce_plus_plus_baseline), [0.5, -0.5, -0.5, 0.5])
    close(normalize(AdvantageEstimator.ppo), [1, 0, 0, 1])
    close(normalize(AdvantageEstimator.reinforce_plus_plus), [1, 0, 0, 1])
    close(normalize(AdvantageEstimator.grpo, rewards_normalization=False), [1, 0, 0, 1])
    close(normalize(AdvantageEstimator.grpo, grpo_std_normalization=False), [0.5, -0.5, -0.5, 0.5])


def test_grpo_advantages_broadcast_the_scalar_reward() -> None:
    adv, ret = grpo_advantages(torch.tensor([0.5, -2.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    close(adv, [[0.5, 0.5, 0.5], [-2.0, -2.0, -2.0]])
    close(ret, [[0.5, 0.5, 0.5], [-2.0, -2.0, -2.0]])
    gspo_adv, _ = compute_advantages(
        AdvantageEstimator.gspo,
        rewards=torch.tensor([0.5, -2.0]),
        loss_mask=adv > -9,
        kl_coef=0.0,
        gamma=1.0,
        lambd=1.0,
    )
    close(gspo_adv, adv.tolist())


def test_reinforce_plus_plus_discounted_returns() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.1, 9.9]])  # 9.9 sits in padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = reinforce_plus_plus_returns(
        torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5, gamma=0.9, response_mask=mask
    )
    g2 = -0.15 + 1.0
    g1 = -0.1 + 0.9 * g2
    g0 = -0.05 + 0.9 * g1
    h1 = -0.05 + 2.0
    h0 = -0.25 + 0.9 * h1
    close(out, [[g0, g1, g2], [h0, h1, 0.0]])


def test_reinforce_plus_plus_masked_tokens_inside_the_response_keep_their_kl() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3]])
    out = reinforce_plus_plus_returns(
        torch.tensor([1.0]), kl, torch.tensor([[1, 0, 1]]), kl_coef=1.0, gamma=1.0
    )
    close(out, [[0.4, 0.5, 0.7]])
    with pytest.raises(ValueError):
        reinforce_plus_plus_returns(
            torch.tensor([1.0]), kl, torch.tensor([[0, 0, 0]]), kl_coef=1.0, gamma=1.0
        )


def test_reinforce_plus_plus_via_dispatch_without_kl_is_the_reward() -> None:
    adv, ret = compute_advantages(
        AdvantageEstimator.reinforce_plus_plus,
        rewards=torch.tensor([1.0]),
        loss_mask=torch.tensor([[1, 1, 1]]),
        kl_coef=0.0,
        gamma=0.5,
        lambd=1.0,
    )
    close(adv, [[0.25, 0.5, 1.0]])
    close(ret, [[0.25, 0.5, 1.0]])


def test_reinforce_plus_plus_baseline() -> None:
    kl = torch.tensor([[0.2, 0.4], [1.0, 0.0]])
    out = reinforce_plus_plus_baseline_advantages(torch.tensor([0.5, -0.5]), kl, kl_coef=0.1)
    close(out, [[0.48, 0.46], [-0.6, -0.5]])


def test_gae_runs_over_trainable_tokens_only() -> None:
    values = torch.tensor([[0.5, 0.2, 0.1, 0.4], [0.3, 0.3, 0.3, 0.3]])
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0]])
    adv, ret = gae_advantages_and_returns(
        torch.tensor([1.0, 5.0]), values, mask, gamma=0.9, lambd=0.8
    )
    a3 = 1.0 - 0.4  # terminal reward at the last trainable token, V_next = 0
    a2 = (0.9 * 0.4 - 0.2) + 0.72 * a3  # the masked token is skipped, not decayed through
    a1 = (0.9 * 0.2 - 0.5) + 0.72 * a2
    close(adv, [[a1, a2, 0.0, a3], [0.0, 0.0, 0.0, 0.0]])
    close(ret, [[a1 + 0.5, a2 + 0.2, 0.0, a3 + 0.4], [0.0, 0.0, 0.0, 0.0]])
    assert not adv.requires_grad


def test_gae_with_kl_shaped_token_rewards() -> None:
    adv, ret = compute_advantages(
        AdvantageEstimator.ppo,
        rewards=torch.tensor([1.0]),
        loss_mask=torch.tensor([[1, 1]]),
        kl=torch.tensor([[1.0, 2.0]]),
        values=torch.zeros(1, 2),
        kl_coef=0.1,
        gamma=1.0,
        lambd=1.0,
    )
    close(adv, [[-0.1 + 0.8, 0.8]])
    close(ret, [[0.7, 0.8]])
    with pytest.raises(ValueError):
        compute_advantages(
            AdvantageEstimator.ppo,
            rewards=torch.tensor([1.0]),
            loss_mask=torch.ones(1, 2),
            kl_coef=0.0,
            gamma=1.0,
            lambd=1.0,
        )


def test_masked_whiten_bessel_corrected() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    var = (2.25 + 0.25 + 0.25 + 2.25) / 4 * 4 / 3
    sd = math.sqrt(var + 1e-8)
    out = masked_whiten(values, mask)
    close(out[0], [(x - 2.5) / sd for x in (1, 2, 3)])
    close(out[1, :2], [(4 - 2.5) / sd, (99 - 2.5) / sd])  # affine at masked positions too
    unshifted = masked_whiten(values, mask, shift_mean=False)
    close(unshifted[0], [(x - 2.5) / sd + 2.5 for x in (1, 2, 3)])
    with pytest.raises(ValueError):
        masked_whiten(values, torch.zeros_like(mask))
