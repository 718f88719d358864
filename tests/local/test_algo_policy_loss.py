"""PPO/GSPO surrogate, dual clip, ESS, value loss, KL estimators, log-probs and entropy."""

from __future__ import annotations

import math

import pytest
import torch

from miles_hydra.backends.local.algo.kl import approx_kl
from miles_hydra.backends.local.algo.policy_loss import (
    clipped_value_loss,
    ess_ratio_per_sample,
    opsm_mask,
    ppo_clip_loss,
    sanitize,
    sequence_ppo_kl,
    token_entropy,
    token_log_probs,
    token_ppo_kl,
)
from miles_hydra.config.algorithm import AlgorithmConfig, KLType


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    expected_t = torch.tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual.detach(), expected_t, atol=tol, rtol=0)


RATIOS = [1.5, 0.5, 1.1, 0.7, 5.0]
ADVANTAGES = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0])


def _log_probs_with_ratios() -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.tensor([-1.0, -2.0, -0.5, -1.5, -3.0])
    log_probs = (old + torch.tensor([math.log(r) for r in RATIOS])).requires_grad_(True)
    return log_probs, old


def test_asymmetric_clip_values_and_clipfrac() -> None:
    log_probs, old = _log_probs_with_ratios()
    loss, clipfrac = ppo_clip_loss(
        token_ppo_kl(log_probs, old), ADVANTAGES, eps_clip=0.2, eps_clip_high=0.28, eps_clip_c=None
    )
    # r=1.5,A=1 -> max(-1.5,-1.28); r=.5,A=1 -> max(-.5,-.8); r=1.1,A=-1 -> 1.1;
    # r=.7,A=-1 -> max(.7,.8); r=5,A=-1 -> max(5, 1.28)
    close(loss, [-1.28, -0.5, 1.1, 0.8, 5.0])
    close(clipfrac, [1.0, 0.0, 0.0, 1.0, 0.0])


def test_symmetric_clip_when_eps_clip_high_is_unset() -> None:
    a = AlgorithmConfig(eps_clip=0.2)  # the schema: eps_clip_high None = eps_clip
    log_probs, old = _log_probs_with_ratios()
    kl = token_ppo_kl(log_probs, old)
    loss, _ = ppo_clip_loss(
        kl, ADVANTAGES, eps_clip=a.eps_clip, eps_clip_high=a.clip_high, eps_clip_c=None
    )
    close(loss[:1], [-1.2])


def test_dual_clip_and_gradients_of_clipped_tokens_are_zero() -> None:
    log_probs, old = _log_probs_with_ratios()
    loss, clipfrac = ppo_clip_loss(
        token_ppo_kl(log_probs, old), ADVANTAGES, eps_clip=0.2, eps_clip_high=0.28, eps_clip_c=3.0
    )
    close(loss, [-1.28, -0.5, 1.1, 0.8, 3.0])  # A<0: min(-c·A, L) caps r=5 at 3
    close(clipfrac, [1.0, 0.0, 0.0, 1.0, 0.0])
    loss.sum().backward()
    # d(-r·A)/dlogp = -r·A for unclipped tokens; clipped and dual-clipped tokens get 0.
    close(log_probs.grad, [0.0, -0.5, 1.1, 0.0, 0.0])
    with pytest.raises(AssertionError):  # the schema refuses it (algorithm.eps_clip_c)
        ppo_clip_loss(
            torch.zeros(1), torch.ones(1), eps_clip=0.2, eps_clip_high=0.2, eps_clip_c=1.0
        )


def test_ratio_is_clamped_at_exp_20_and_non_finite_kl_is_safe() -> None:
    ppo_kl = torch.tensor([-100.0, float("nan"), float("-inf")])
    loss, _ = ppo_clip_loss(
        ppo_kl, torch.tensor([-1.0, -1.0, -1.0]), eps_clip=0.2, eps_clip_high=0.2, eps_clip_c=None
    )
    close(loss, [math.exp(20), 1.0, math.exp(20)], tol=1.0)


def test_sanitize_zeroes_inactive_and_non_finite_tokens() -> None:
    x = torch.tensor([[1.0, float("nan"), float("inf"), 7.0]])
    close(sanitize(x, torch.tensor([[1, 1, 1, 0]])), [[1.0, 0.0, 0.0, 0.0]])


def test_gspo_sequence_level_ppo_kl() -> None:
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    log_probs = old + torch.tensor([[math.log(2.0), 0.0, 50.0], [math.log(0.5), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    kl = sequence_ppo_kl(log_probs, old, mask)
    # Σ m (old - new) / Σ m: row 0 = -ln2 / 2 (padding ignored), row 1 = ln2 / 1
    close(kl, [[-math.log(2) / 2] * 3, [math.log(2)] * 3])
    ratio = torch.exp(-kl[0, 0])
    assert math.isclose(ratio.item(), math.sqrt(2.0), rel_tol=1e-6)  # (π/π_old)^(1/|y|)


def test_ess_ratio_per_sample() -> None:
    ppo_kl = -torch.log(torch.tensor([[1.0, 2.0, 7.0], [0.5, 0.5, 0.5]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # row 0: w = [1, 2]: (3)² / (2 · 5) ; row 1: equal weights -> 1
    close(ess_ratio_per_sample(ppo_kl, mask), [0.9, 1.0])
    close(ess_ratio_per_sample(ppo_kl, torch.zeros_like(mask)), [0.0, 0.0])


def test_clipped_value_loss() -> None:
    values = torch.tensor([1.0, 0.0, 0.55])
    old = torch.tensor([0.5, 0.5, 0.5])
    returns = torch.tensor([2.0, 0.0, 1.0])
    loss, clipfrac = clipped_value_loss(values, old, returns, value_clip=0.2)
    # V_c = [0.7, 0.3, 0.55]; max((V_c-R)², (V-R)²) = [max(1.69,1), max(.09,0), .2025]
    close(loss, [1.69, 0.09, 0.2025])
    close(clipfrac, [1.0, 1.0, 0.0])


def test_kl_estimators_on_a_log_two_ratio() -> None:
    log_probs = torch.tensor([math.log(0.5)])
    base = torch.tensor([math.log(0.25)])
    d = math.log(2.0)
    close(approx_kl(log_probs, base, KLType.k1), [d])
    close(approx_kl(log_probs, base, KLType.k2), [d * d / 2])
    close(approx_kl(log_probs, base, KLType.k3), [0.5 - 1 + d])
    close(approx_kl(log_probs, base, KLType.low_var_kl), [0.5 - 1 + d])
    # unbiased: multiplied by the importance ratio
    close(approx_kl(log_probs, base, KLType.k3, torch.tensor([2.0])), [2 * (0.5 - 1 + d)])


def test_low_var_kl_clamps() -> None:
    log_probs = torch.tensor([-30.0, 30.0, float("nan"), 0.0])
    base = torch.tensor([0.0, 0.0, 0.0, float("-inf")])
    out = approx_kl(log_probs, base, KLType.low_var_kl)
    # -Δ clamped to ±20 then result clamped to [-10, 10]; NaN -> 0; -Δ = -inf -> -20
    close(out, [10.0, 10.0, 0.0, 10.0])
    k3 = approx_kl(torch.tensor([30.0]), torch.tensor([0.0]), KLType.k3)
    close(k3, [math.exp(-30) - 1 + 30])
    clamped = approx_kl(
        torch.tensor([0.0]), torch.tensor([0.0]), KLType.low_var_kl, torch.tensor([1e9])
    )
    close(clamped, [0.0])


def test_kl_estimators_are_zero_on_identical_policies() -> None:
    lp = torch.randn(3, 4)
    for kl_type in KLType:
        assert torch.equal(approx_kl(lp, lp.clone(), kl_type), torch.zeros(3, 4))


def test_token_log_probs_and_entropy() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
    close(token_log_probs(logits, torch.tensor([0, 2])), [math.log(0.5), math.log(1 / 3)])
    expected_h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    close(token_entropy(logits), [expected_h, math.log(3)])


def test_entropy_with_masked_vocab_is_finite_and_differentiable() -> None:
    logits = torch.tensor([[0.0, float("-inf"), 0.0]], requires_grad=True)
    entropy = token_entropy(logits)
    close(entropy, [math.log(2)])
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_opsm_drops_negative_advantage_tokens_of_drifted_samples() -> None:
    old = torch.zeros(2, 3)
    log_probs = torch.tensor([[-0.4, -0.6, 5.0], [0.5, 0.5, 0.5]])  # row 0: mean drift 0.5
    advantages = torch.tensor([[-1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    keep, clipfrac = opsm_mask(log_probs, old, advantages, mask, delta=1e-4)
    close(keep, [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])  # row 1 moved towards π_θ: kept
    close(clipfrac, [0.5, 0.0])
