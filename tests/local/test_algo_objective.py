"""Loss aggregation and the policy/value loss combiners: hand-computed batches, gradients,
the numerator-only semantics of rejection masks, and the step-0 invariant."""

from __future__ import annotations

import enum
import math

import pytest
import torch

from miles_hydra.backends.local.algo.aggregation import (
    LossAggregation,
    aggregate,
    aggregate_per_sample,
)
from miles_hydra.backends.local.algo.corrections import Correction
from miles_hydra.backends.local.algo.kl import KLType
from miles_hydra.backends.local.algo.mis import ISLevel, ISMode, MisConfig
from miles_hydra.backends.local.algo.objective import (
    PolicyLossConfig,
    compute_policy_loss_and_metrics,
    compute_value_loss_and_metrics,
)
from miles_hydra.errors import ConfigError


def approx(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    actual = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    assert math.isclose(actual, expected, abs_tol=tol), (actual, expected)


VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_seq_mean_token_mean_and_token_mean() -> None:
    approx(aggregate(VALUES, MASK, "seq_mean_token_mean"), (2.0 + 4.0) / 2)
    approx(aggregate(VALUES, MASK, "token_mean"), 10.0 / 4)
    numerator = torch.tensor([[1, 0, 1], [0, 0, 0]])
    # rejected tokens count as zeros; denominators stay the original token counts
    approx(aggregate(VALUES, MASK, "seq_mean_token_mean", numerator_mask=numerator), (4 / 3) / 2)
    approx(aggregate(VALUES, MASK, "token_mean", numerator_mask=numerator), 4.0 / 4)
    denoms = torch.tensor([6.0, 1.0])
    approx(aggregate(VALUES, MASK, sample_denominators=denoms), (6 / 6 + 4) / 2)


def test_micro_batches_with_global_counts_add_up_to_the_global_value() -> None:
    for mode in ("seq_mean_token_mean", "token_mean"):
        whole = aggregate(VALUES, MASK, mode)
        parts = [
            aggregate(VALUES[i : i + 1], MASK[i : i + 1], mode, num_samples=2, num_tokens=4)
            for i in range(2)
        ]
        approx(sum(parts), float(whole))


def test_aggregate_per_sample() -> None:
    per_sample = torch.tensor([0.9, 0.5])
    mask = torch.tensor([[1, 1], [1, 0]])
    approx(aggregate_per_sample(per_sample, mask, "seq_mean_token_mean"), 0.7)
    approx(aggregate_per_sample(per_sample, mask, "token_mean"), (0.9 * 2 + 0.5) / 3)


# A hand-built batch: row 0 has ratios π_θ/π_old = [1.5, 1.0], row 1 = [0.5, padding].
OLD = torch.tensor([[-1.0, -2.0], [-1.5, 0.0]])
RATIO = torch.tensor([[1.5, 1.0], [0.5, 1.0]])
ADV = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
LOSS_MASK = torch.tensor([[1, 1], [1, 0]])
RHO = torch.tensor([[1.0, 4.0], [0.5, 1.0]])  # π_old / π_roll


def _batch() -> dict[str, torch.Tensor]:
    log_probs = (OLD + RATIO.log()).requires_grad_(True)
    pad_nan = torch.tensor([[0.0, 0.0], [0.0, float("nan")]])  # garbage in the padding slot
    return {
        "log_probs": log_probs,
        "old_log_probs": OLD + pad_nan,
        "rollout_log_probs": OLD - RHO.log() + pad_nan,
        "ref_log_probs": (OLD + RATIO.log()) - torch.tensor([[0.1, 0.2], [0.3, 0.0]]) + pad_nan,
        "advantages": ADV,
        "loss_mask": LOSS_MASK,
    }


def test_combiner_with_tis_entropy_and_kl_on_hand_numbers() -> None:
    cfg = PolicyLossConfig(
        eps_clip=0.2, correction="tis", entropy_coef=0.1, use_kl_loss=True, kl_loss_coef=0.5
    )
    entropy = torch.tensor([[1.0, 2.0], [3.0, 9.0]])
    loss, m = compute_policy_loss_and_metrics(**_batch(), entropy=entropy, config=cfg)
    # clipped surrogate: [max(-1.5,-1.2), -1], [max(.5,.8)]; TIS w = [1, 2], [.5]
    pg = ((-1.2 * 1 + -1.0 * 2) / 2 + 0.8 * 0.5) / 2
    approx(m["train/pg_loss"], pg)
    approx(m["train/entropy_loss"], (1.5 + 3.0) / 2)
    approx(m["train/kl_loss"], (0.15 + 0.3) / 2)
    approx(loss, pg - 0.1 * 2.25 + 0.5 * 0.225)
    approx(m["train/loss"], float(loss.detach()))
    approx(m["train/pg_clipfrac"], (0.5 + 1.0) / 2)
    approx(m["train/ppo_kl"], (-math.log(1.5) / 2 + math.log(2)) / 2)
    approx(m["train/tis"], ((1 + 4) / 2 + 0.5) / 2)
    approx(m["train/tis_clipfrac"], (0.5 + 0) / 2)
    approx(m["train/tis_abs"], ((0 + 3) / 2 + 0.5) / 2)
    approx(m["train/ois"], ((1.5 + 1) / 2 + 0.5) / 2)
    approx(m["train/train_rollout_logprob_abs_diff"], (math.log(4) / 2 + math.log(2)) / 2)
    k3 = [[0.0, 4 - 1 - math.log(4)], [0.5 - 1 + math.log(2)]]  # ρ − 1 − log ρ
    approx(m["train/train_rollout_kl"], ((k3[0][0] + k3[0][1]) / 2 + k3[1][0]) / 2)
    approx(m["train/ess_ratio"], (2.5**2 / (2 * (1.5**2 + 1)) + 1.0) / 2)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_combiner_token_mean() -> None:
    cfg = PolicyLossConfig(eps_clip=0.2, correction="tis", aggregation="token_mean")
    _, m = compute_policy_loss_and_metrics(**_batch(), config=cfg)
    approx(m["train/pg_loss"], (-1.2 - 2.0 + 0.4) / 3)
    approx(m["train/ess_ratio"], (2.5**2 / 6.5 * 2 + 1.0) / 3)


def test_gradients_skip_clipped_tokens_and_padding() -> None:
    batch = _batch()
    loss, _ = compute_policy_loss_and_metrics(
        **batch, config=PolicyLossConfig(eps_clip=0.2, correction="tis")
    )
    loss.backward()
    # only row 0 token 1 is unclipped: d(-r·A·w)/dlogp = -1·1·2, times 1/(2 tokens · 2 samples)
    expected = torch.tensor([[0.0, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(batch["log_probs"].grad, expected)


def test_mis_rejection_changes_the_numerator_only() -> None:
    log_probs = torch.zeros(2, 2, requires_grad=True)
    rollout = -torch.log(torch.tensor([[1.0, 3.0], [1.0, 1.0]]))
    cfg = PolicyLossConfig(correction="mis", mis=MisConfig(tis_mode="mask"))
    _, m = compute_policy_loss_and_metrics(
        log_probs=log_probs,
        old_log_probs=torch.zeros(2, 2),
        rollout_log_probs=rollout,
        advantages=torch.ones(2, 2),
        loss_mask=torch.tensor([[1, 1], [1, 0]]),
        config=cfg,
    )
    approx(m["train/pg_loss"], (-1.0 / 2 + -1.0) / 2)  # not -1: the rejected token counts 0
    approx(m["train/mis_tis_mask_fraction_high"], (0.5 + 0.0) / 2)  # original mask
    approx(m["train/ois"], 1.0)
    assert "train/mis_training_ppl" in m


def test_gspo_uses_the_sequence_ratio() -> None:
    log_probs = torch.tensor([[math.log(2.0), 0.0]], requires_grad=True)
    _, m = compute_policy_loss_and_metrics(
        log_probs=log_probs,
        old_log_probs=torch.zeros(1, 2),
        advantages=torch.ones(1, 2),
        loss_mask=torch.ones(1, 2),
        config=PolicyLossConfig(eps_clip=0.2, gspo=True),
    )
    approx(m["train/pg_loss"], -1.2)  # r = sqrt(2) for both tokens, clipped at 1.2
    approx(m["train/pg_clipfrac"], 1.0)
    approx(m["train/ppo_kl"], -math.log(2) / 2)


def test_opsm_in_the_combiner() -> None:
    log_probs = torch.tensor([[-0.5, -0.5], [0.5, 0.5]], requires_grad=True)
    _, m = compute_policy_loss_and_metrics(
        log_probs=log_probs,
        old_log_probs=torch.zeros(2, 2),
        advantages=torch.tensor([[-1.0, 1.0], [-1.0, -1.0]]),
        loss_mask=torch.ones(2, 2),
        config=PolicyLossConfig(eps_clip=10.0, use_opsm=True),
    )
    r0, r1 = math.exp(-0.5), math.exp(0.5)
    # row 0 drifted (mean old − new = 0.5): its A<0 token is dropped; row 1 is kept
    approx(m["train/pg_loss"], ((0.0 - r0) / 2 + (r1 + r1) / 2) / 2)
    approx(m["train/opsm_clipfrac"], (0.5 + 0.0) / 2)


def test_unbiased_kl_and_observed_entropy_without_coefficients() -> None:
    cfg = PolicyLossConfig(use_kl_loss=True, kl_loss_type="k2", use_unbiased_kl=True)
    loss, m = compute_policy_loss_and_metrics(**_batch(), entropy=torch.ones(2, 2), config=cfg)
    k2 = [[0.1**2 / 2 * 1.5, 0.2**2 / 2 * 1.0], [0.3**2 / 2 * 0.5]]  # times π_θ/π_old
    approx(m["train/kl_loss"], ((k2[0][0] + k2[0][1]) / 2 + k2[1][0]) / 2)
    approx(m["train/entropy_loss"], 1.0)
    approx(loss, float(m["train/pg_loss"]))  # both coefficients are 0: report only


@pytest.mark.parametrize("correction", ["none", "tis", "icepop", "mis"])
@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean"])
def test_step_zero_invariant(correction: str, aggregation: str) -> None:
    torch.manual_seed(0)
    lp = -torch.rand(3, 5) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 0]])
    adv = torch.randn(3, 5)
    for kl_type in KLType:
        cfg = PolicyLossConfig(
            correction=correction,
            aggregation=aggregation,
            use_kl_loss=True,
            kl_loss_coef=1.0,
            kl_loss_type=kl_type,
            use_unbiased_kl=True,
            mis=MisConfig(use_rs=True, tis_batch_normalize=True),
        )
        loss, m = compute_policy_loss_and_metrics(
            log_probs=lp.clone().requires_grad_(True),
            old_log_probs=lp.clone(),
            rollout_log_probs=lp.clone(),
            ref_log_probs=lp.clone(),
            advantages=adv,
            loss_mask=mask,
            config=cfg,
        )
        for key in ("ppo_kl", "kl_loss", "pg_clipfrac", "train_rollout_logprob_abs_diff"):
            assert float(m[f"train/{key}"]) == 0.0, key
        approx(m["train/train_rollout_kl"], 0.0)
        approx(m["train/ess_ratio"], 1.0)
        approx(loss, -float(aggregate(adv, mask, aggregation)))
        if correction in ("tis", "icepop"):
            approx(m["train/tis"], 1.0)
            approx(m["train/tis_clipfrac"], 0.0)
        if correction == "mis":
            approx(m["train/mis_is_ratio_mean_final"], 1.0)
            approx(m["train/mis_rs_mask_fraction_low"], 0.0)
        if correction != "none":
            approx(m["train/ois"], 1.0)


def test_settings_accept_strings_and_foreign_enums_with_the_same_values() -> None:
    class ForeignKL(enum.Enum):
        k3 = "k3"

    class ForeignAggregation(enum.Enum):
        token_mean = "token_mean"

    class ForeignMode(enum.Enum):
        mask = "mask"

    cfg = PolicyLossConfig(
        kl_loss_type=ForeignKL.k3,
        aggregation=ForeignAggregation.token_mean,
        correction="mis",
        mis=MisConfig(tis_mode=ForeignMode.mask, tis_level="geometric"),
    )
    assert cfg.kl_loss_type is KLType.k3
    assert cfg.aggregation is LossAggregation.token_mean
    assert cfg.correction is Correction.mis
    assert cfg.mis.tis_mode is ISMode.mask and cfg.mis.tis_level is ISLevel.geometric


def test_missing_inputs_and_bad_settings() -> None:
    batch = _batch()
    batch.pop("rollout_log_probs")
    with pytest.raises(ValueError, match="rollout_log_probs"):
        compute_policy_loss_and_metrics(**batch, config=PolicyLossConfig(correction="tis"))
    batch.pop("ref_log_probs")
    with pytest.raises(ValueError, match="ref_log_probs"):
        compute_policy_loss_and_metrics(**batch, config=PolicyLossConfig(use_kl_loss=True))
    with pytest.raises(ValueError, match="entropy"):
        compute_policy_loss_and_metrics(**batch, config=PolicyLossConfig(entropy_coef=0.01))
    with pytest.raises(ConfigError, match="eps_clip_c"):
        PolicyLossConfig(eps_clip_c=0.5)
    with pytest.raises(ConfigError, match="tis_clip_low"):
        PolicyLossConfig(tis_clip_low=3.0, tis_clip=2.0)


def test_value_loss_combiner() -> None:
    values = torch.tensor([[1.0, 0.0], [0.55, float("nan")]], requires_grad=True)
    loss, m = compute_value_loss_and_metrics(
        values=values,
        old_values=torch.tensor([[0.5, 0.5], [0.5, 0.0]]),
        returns=torch.tensor([[2.0, 0.0], [1.0, 0.0]]),
        loss_mask=torch.tensor([[1, 1], [1, 0]]),
        value_clip=0.2,
        metric_prefix="train/critic-",
    )
    approx(loss, ((1.69 + 0.09) / 2 + 0.2025) / 2)
    approx(m["train/critic-value_loss"], float(loss.detach()))
    approx(m["train/critic-value_clipfrac"], (1.0 + 0.0) / 2)
    loss.backward()
    # the clipped branch wins on row 0 (no gradient); row 1: 2(V − R) / (1 token · 2 samples)
    expected = torch.tensor([[0.0, 0.0], [2 * (0.55 - 1.0) / 2, 0.0]])
    torch.testing.assert_close(values.grad, expected)
