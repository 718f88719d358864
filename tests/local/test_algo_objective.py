"""Loss aggregation and the policy/value loss combiners: hand-computed batches, gradients,
the numerator-only semantics of rejection masks, and the step-0 invariant."""

from __future__ import annotations

import math

import pytest
import torch

from miles_hydra.backends.local.algo.aggregation import aggregate, aggregate_per_sample
from miles_hydra.backends.local.algo.objective import (
    compute_policy_loss_and_metrics,
    compute_value_loss_and_metrics,
)
from miles_hydra.config.algorithm import (
    AdvantageEstimator,
    AlgorithmConfig,
    CorrectionConfig,
    CorrectionKind,
    CorrectionMode,
    KLType,
    LossAggregation,
)

SEQ, TOK = LossAggregation.seq_mean_token_mean, LossAggregation.token_mean
TIS = CorrectionConfig(kind=CorrectionKind.tis)  # clamp(ρ, 0, 2)


def approx(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    actual = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    assert math.isclose(actual, expected, abs_tol=tol), (actual, expected)


VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_seq_mean_token_mean_and_token_mean() -> None:
    approx(aggregate(VALUES, MASK, SEQ), (2.0 + 4.0) / 2)
    approx(aggregate(VALUES, MASK, TOK), 10.0 / 4)
    numerator = torch.tensor([[1, 0, 1], [0, 0, 0]])
    # rejected tokens count as zeros; denominators stay the original token counts
    approx(aggregate(VALUES, MASK, SEQ, numerator_mask=numerator), (4 / 3) / 2)
    approx(aggregate(VALUES, MASK, TOK, numerator_mask=numerator), 4.0 / 4)
    denoms = torch.tensor([6.0, 1.0])
    approx(aggregate(VALUES, MASK, SEQ, sample_denominators=denoms), (6 / 6 + 4) / 2)


def test_micro_batches_with_global_counts_add_up_to_the_global_value() -> None:
    for mode in LossAggregation:
        whole = aggregate(VALUES, MASK, mode)
        parts = [
            aggregate(VALUES[i : i + 1], MASK[i : i + 1], mode, num_samples=2, num_tokens=4)
            for i in range(2)
        ]
        approx(sum(parts), float(whole))


def test_aggregate_per_sample() -> None:
    per_sample = torch.tensor([0.9, 0.5])
    mask = torch.tensor([[1, 1], [1, 0]])
    approx(aggregate_per_sample(per_sample, mask, SEQ), 0.7)
    approx(aggregate_per_sample(per_sample, mask, TOK), (0.9 * 2 + 0.5) / 3)


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
    cfg = AlgorithmConfig(
        eps_clip=0.2,
        correction=TIS,
        entropy_coef=0.1,
        use_kl_loss=True,
        kl_loss_coef=0.5,
        kl_loss_type=KLType.k1,
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
    cfg = AlgorithmConfig(eps_clip=0.2, correction=TIS, loss_aggregation=TOK)
    _, m = compute_policy_loss_and_metrics(**_batch(), config=cfg)
    approx(m["train/pg_loss"], (-1.2 - 2.0 + 0.4) / 3)
    approx(m["train/ess_ratio"], (2.5**2 / 6.5 * 2 + 1.0) / 3)


def test_gradients_skip_clipped_tokens_and_padding() -> None:
    batch = _batch()
    loss, _ = compute_policy_loss_and_metrics(
        **batch, config=AlgorithmConfig(eps_clip=0.2, correction=TIS)
    )
    loss.backward()
    # only row 0 token 1 is unclipped: d(-r·A·w)/dlogp = -1·1·2, times 1/(2 tokens · 2 samples)
    expected = torch.tensor([[0.0, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(batch["log_probs"].grad, expected)


def test_mis_rejection_changes_the_numerator_only() -> None:
    log_probs = torch.zeros(2, 2, requires_grad=True)
    rollout = -torch.log(torch.tensor([[1.0, 3.0], [1.0, 1.0]]))
    mis = CorrectionConfig(kind=CorrectionKind.mis, lower=0.5, mode=CorrectionMode.mask)
    cfg = AlgorithmConfig(correction=mis)
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
        config=AlgorithmConfig(eps_clip=0.2, advantage_estimator=AdvantageEstimator.gspo),
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
        config=AlgorithmConfig(eps_clip=0.9, use_opsm=True),  # clip range [0.1, 1.9]: no clip
    )
    r0, r1 = math.exp(-0.5), math.exp(0.5)
    # row 0 drifted (mean old − new = 0.5): its A<0 token is dropped; row 1 is kept
    approx(m["train/pg_loss"], ((0.0 - r0) / 2 + (r1 + r1) / 2) / 2)
    approx(m["train/opsm_clipfrac"], (0.5 + 0.0) / 2)


def test_unbiased_kl_and_observed_entropy_without_coefficients() -> None:
    cfg = AlgorithmConfig(use_kl_loss=True, kl_loss_type=KLType.k2, use_unbiased_kl=True)
    loss, m = compute_policy_loss_and_metrics(**_batch(), entropy=torch.ones(2, 2), config=cfg)
    k2 = [[0.1**2 / 2 * 1.5, 0.2**2 / 2 * 1.0], [0.3**2 / 2 * 0.5]]  # times π_θ/π_old
    approx(m["train/kl_loss"], ((k2[0][0] + k2[0][1]) / 2 + k2[1][0]) / 2)
    approx(m["train/entropy_loss"], 1.0)
    approx(loss, float(m["train/pg_loss"]))  # both coefficients are 0: report only


STEP_ZERO_CORRECTIONS = {
    CorrectionKind.none: CorrectionConfig(),
    CorrectionKind.tis: TIS,
    CorrectionKind.icepop: CorrectionConfig(kind=CorrectionKind.icepop),
    CorrectionKind.mis: CorrectionConfig(
        kind=CorrectionKind.mis, use_rs=True, batch_normalize=True, rs_veto_threshold=1e-4
    ),
}


@pytest.mark.parametrize("correction", list(CorrectionKind))
@pytest.mark.parametrize("aggregation", list(LossAggregation))
def test_step_zero_invariant(correction: CorrectionKind, aggregation: LossAggregation) -> None:
    torch.manual_seed(0)
    lp = -torch.rand(3, 5) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 0]])
    adv = torch.randn(3, 5)
    for kl_type in KLType:
        cfg = AlgorithmConfig(
            correction=STEP_ZERO_CORRECTIONS[correction],
            loss_aggregation=aggregation,
            use_kl_loss=True,
            kl_loss_coef=1.0,
            kl_loss_type=kl_type,
            use_unbiased_kl=True,
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
        if correction in (CorrectionKind.tis, CorrectionKind.icepop):
            approx(m["train/tis"], 1.0)
            approx(m["train/tis_clipfrac"], 0.0)
        if correction is CorrectionKind.mis:
            approx(m["train/mis_is_ratio_mean_final"], 1.0)
            approx(m["train/mis_rs_mask_fraction_low"], 0.0)
        if correction is not CorrectionKind.none:
            approx(m["train/ois"], 1.0)


def test_missing_inputs() -> None:
    batch = _batch()
    batch.pop("rollout_log_probs")
    with pytest.raises(ValueError, match="rollout_log_probs"):
        compute_policy_loss_and_metrics(**batch, config=AlgorithmConfig(correction=TIS))
    batch.pop("ref_log_probs")
    with pytest.raises(ValueError, match="ref_log_probs"):
        compute_policy_loss_and_metrics(**batch, config=AlgorithmConfig(use_kl_loss=True))
    with pytest.raises(ValueError, match="entropy"):
        compute_policy_loss_and_metrics(**batch, config=AlgorithmConfig(entropy_coef=0.01))


def test_value_loss_combiner() -> None:
    values = torch.tensor([[1.0, 0.0], [0.55, float("nan")]], requires_grad=True)
    loss, m = compute_value_loss_and_metrics(
        values=values,
        old_values=torch.tensor([[0.5, 0.5], [0.5, 0.0]]),
        returns=torch.tensor([[2.0, 0.0], [1.0, 0.0]]),
        loss_mask=torch.tensor([[1, 1], [1, 0]]),
        value_clip=0.2,
        aggregation=SEQ,
        metric_prefix="train/critic-",
    )
    approx(loss, ((1.69 + 0.09) / 2 + 0.2025) / 2)
    approx(m["train/critic-value_loss"], float(loss.detach()))
    approx(m["train/critic-value_clipfrac"], (1.0 + 0.0) / 2)
    loss.backward()
    # the clipped branch wins on row 0 (no gradient); row 1: 2(V − R) / (1 token · 2 samples)
    expected = torch.tensor([[0.0, 0.0], [2 * (0.55 - 1.0) / 2, 0.0]])
    torch.testing.assert_close(values.grad, expected)
