"""TIS, IcePop, mismatch metrics and MIS / rejection sampling on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from miles_hydra.backends.local.algo.corrections import (
    icepop_weights,
    mismatch_metrics,
    tis_weights,
)
from miles_hydra.backends.local.algo.mis import mis_weights
from miles_hydra.config.algorithm import (
    CorrectionConfig,
    CorrectionKind,
    CorrectionLevel,
    CorrectionMode,
)
from miles_hydra.errors import ConfigError


def mis(**settings) -> CorrectionConfig:
    """``algorithm.correction`` with kind=mis (IS bounds [1/upper, upper], 2.0 by default)."""
    return CorrectionConfig(kind=CorrectionKind.mis, **settings)


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    expected_t = torch.tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual.detach().float(), expected_t.float(), atol=tol, rtol=0)


def ratios(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, rollout) log-probs whose ratio train/rollout is ``rows``."""
    rollout = torch.full((len(rows), len(rows[0])), -2.0)
    train = rollout + torch.tensor([[math.log(r) for r in row] for row in rows])
    return train, rollout


PPL_KEYS = {
    "training_log_ppl",
    "training_ppl",
    "rollout_log_ppl",
    "rollout_ppl",
    "kl",
    "k3_kl",
    "log_ppl_diff",
    "log_ppl_abs_diff",
    "ppl_ratio",
    "chi2_token",
    "chi2_seq",
}


def test_tis_token_clamp_and_metrics() -> None:
    train, rollout = ratios([[1.0, 3.0, 0.5, 0.1]])
    weights, metrics = tis_weights(train, rollout, clip_low=0.2, clip_high=2.0)
    close(weights, [[1.0, 2.0, 0.5, 0.2]])
    close(metrics["tis"], [[1.0, 3.0, 0.5, 0.1]])
    close(metrics["tis_clipfrac"], [[0.0, 1.0, 0.0, 1.0]])
    close(metrics["tis_abs"], [[0.0, 2.0, 0.5, 0.9]])


def test_icepop_keeps_in_range_ratios_and_pops_the_rest() -> None:
    train, rollout = ratios([[1.0, 3.0, 0.5, 0.1]])
    weights, metrics = icepop_weights(train, rollout, clip_low=0.2, clip_high=2.0)
    close(weights, [[1.0, 0.0, 0.5, 0.0]])
    close(metrics["tis_clipfrac"], [[0.0, 1.0, 0.0, 1.0]])
    close(metrics["tis"], [[1.0, 3.0, 0.5, 0.1]])


def test_mismatch_metrics() -> None:
    train = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    rollout = torch.log(torch.tensor([[0.25, 0.25, 0.1]]))
    mask = torch.tensor([[1, 1, 0]])
    m = mismatch_metrics(train, rollout, mask)
    assert set(m) == PPL_KEYS
    mean_train = (math.log(0.5) + math.log(0.25)) / 2
    mean_rollout = math.log(0.25)
    close(m["training_log_ppl"][:, :2], [[-mean_train] * 2])
    close(m["training_ppl"][:, :1], [[math.exp(-mean_train)]])
    close(m["rollout_ppl"][:, :1], [[4.0]])
    close(m["kl"][:, :2], [[-math.log(2), 0.0]])
    close(m["k3_kl"][:, :2], [[2 - math.log(2) - 1, 0.0]])
    close(m["log_ppl_diff"][:, :1], [[mean_rollout - mean_train]])
    close(m["log_ppl_abs_diff"][:, :1], [[abs(mean_rollout - mean_train)]])
    close(m["ppl_ratio"][:, :1], [[math.exp(mean_rollout - mean_train)]])
    close(m["chi2_token"][:, :1], [[(4 + 1) / 2 - 1]])
    close(m["chi2_seq"][:, :1], [[3.0]])  # (2 · 1)² − 1, the masked 9× ratio ignored


def test_mis_token_truncate() -> None:
    train, rollout = ratios([[0.5, 3.0, 1.0]])
    weights, numerator, m = mis_weights(train, rollout, torch.ones(1, 3), mis())
    close(weights, [[0.5, 2.0, 1.0]])
    close(numerator, [[1.0, 1.0, 1.0]])
    close(m["mis_tis_truncate_fraction"], [[0.0, 1.0, 0.0]])
    close(m["mis_tis_weight_before_bound"], [[0.5, 3.0, 1.0]])
    close(m["mis_tis_weight_after_bound"], [[0.5, 2.0, 1.0]])
    close(m["mis_is_ratio_mean_final"], [[3.5 / 3] * 3])
    close(m["mis_is_ratio_min_final"], [[0.5] * 3])
    close(m["mis_is_ratio_max_final"], [[2.0] * 3])


def test_mis_clip_and_mask_modes() -> None:
    train, rollout = ratios([[0.4, 3.0, 1.0]])
    mask = torch.ones(1, 3)
    weights, numerator, m = mis_weights(train, rollout, mask, mis(mode=CorrectionMode.clip))
    close(weights, [[0.5, 2.0, 1.0]])
    close(numerator, [[1.0, 1.0, 1.0]])
    close(m["mis_tis_clip_fraction_low"], [[1.0, 0.0, 0.0]])
    close(m["mis_tis_clip_fraction_high"], [[0.0, 1.0, 0.0]])
    weights, numerator, m = mis_weights(train, rollout, mask, mis(mode=CorrectionMode.mask))
    close(weights, [[0.4, 3.0, 1.0]])  # MIS keeps the ratio and rejects through the mask
    close(numerator, [[0.0, 0.0, 1.0]])
    close(m["mis_tis_mask_fraction_low"], [[1.0, 0.0, 0.0]])
    close(m["mis_tis_mask_fraction_high"], [[0.0, 1.0, 0.0]])


def test_mis_lower_bound_defaults_to_inverse_upper_bound() -> None:
    cfg = mis(mode=CorrectionMode.clip, upper=4.0)
    train, rollout = ratios([[0.1, 5.0]])
    weights, _, _ = mis_weights(train, rollout, torch.ones(1, 2), cfg)
    close(weights, [[0.25, 4.0]])


def test_mis_sequence_and_geometric_levels() -> None:
    train, rollout = ratios([[2.0, 0.75, 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    seq, _, _ = mis_weights(train, rollout, mask, mis(level=CorrectionLevel.sequence))
    close(seq, [[1.5, 1.5, 0.0]])  # product 2 · 0.75 over loss tokens; padding weight 0
    geo, _, _ = mis_weights(train, rollout, mask, mis(level=CorrectionLevel.geometric))
    close(geo, [[math.sqrt(1.5), math.sqrt(1.5), 0.0]])


def test_rejection_sampling_with_veto() -> None:
    train, rollout = ratios([[1.0, 1e-5], [1.0, 1.0], [3.0, 1.0]])
    cfg = mis(use_rs=True, rs_veto_threshold=1e-4)
    weights, numerator, m = mis_weights(train, rollout, torch.ones(3, 2), cfg)
    close(weights, [[1.0, 1e-5], [1.0, 1.0], [2.0, 1.0]])  # RS never changes the weights
    close(numerator, [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # row 0 vetoed, 3 > U rejected
    close(m["mis_rs_mask_fraction_low"], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    close(m["mis_rs_mask_fraction_high"], [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    close(m["mis_rs_catastrophic_token_fraction"], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    close(m["mis_rs_catastrophic_seq_fraction"], [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])


def test_rejection_sampling_own_level_and_bounds() -> None:
    train, rollout = ratios([[1.01, 1.0], [1.0, 1.0]])
    cfg = mis(use_rs=True, rs_level=CorrectionLevel.geometric, rs_lower=0.99, rs_upper=1.001)
    weights, numerator, _ = mis_weights(train, rollout, torch.ones(2, 2), cfg)
    close(weights, [[1.01, 1.0], [1.0, 1.0]])
    close(numerator, [[0.0, 0.0], [1.0, 1.0]])  # sqrt(1.01) = 1.005 > 1.001


def test_batch_normalize_token_and_sequence() -> None:
    train, rollout = ratios([[1.0, 2.0], [1.0, 5.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    cfg = mis(upper=3.0, batch_normalize=True)
    weights, _, m = mis_weights(train, rollout, mask, cfg)
    close(weights, [[0.75, 1.5], [0.75, 0.0]])  # batch token mean 4/3
    close(m["mis_batch_norm_factor"], [[4 / 3, 4 / 3], [4 / 3, 4 / 3]])
    close(m["mis_is_ratio_mean_after_tis_rs"], [[1.0, 2.0], [1.0, 0.0]])
    close(m["mis_is_ratio_mean_final"], [[1.125, 1.125], [0.75, 0.75]])
    close(m["mis_is_ratio_min_final"], [[0.75, 0.75], [0.75, 0.75]])
    close(m["mis_is_ratio_max_final"], [[1.5, 1.5], [0.75, 0.75]])
    train, rollout = ratios([[2.0, 1.0], [0.5, 1.0]])
    seq_cfg = mis(level=CorrectionLevel.sequence, upper=3.0, batch_normalize=True)
    weights, _, _ = mis_weights(train, rollout, torch.ones(2, 2), seq_cfg)
    close(weights, [[1.6, 1.6], [0.4, 0.4]])  # mean of per-sample means = 1.25


def test_full_metric_key_set_with_every_stage() -> None:
    train, rollout = ratios([[1.0, 2.0]])
    cfg = mis(use_rs=True, batch_normalize=True, rs_veto_threshold=1e-4)
    _, _, m = mis_weights(train, rollout, torch.ones(1, 2), cfg)
    stage_keys = {
        "tis_weight_before_bound",
        "tis_truncate_fraction",
        "tis_weight_after_bound",
        "rs_mask_fraction_low",
        "rs_mask_fraction_high",
        "rs_catastrophic_token_fraction",
        "rs_catastrophic_seq_fraction",
        "is_ratio_mean_after_tis_rs",
        "batch_norm_factor",
        "is_ratio_mean_final",
        "is_ratio_min_final",
        "is_ratio_max_final",
    }
    assert set(m) == {f"mis_{key}" for key in PPL_KEYS | stage_keys}


def test_mis_settings_refused_by_the_schema() -> None:
    """What miles' mis.py asserts is refused when the config is built, for both backends."""
    with pytest.raises(ConfigError, match="batch_normalize"):
        mis(level=CorrectionLevel.geometric, batch_normalize=True)
    with pytest.raises(ConfigError, match="algorithm.correction.lower"):
        mis(mode=CorrectionMode.mask, lower=2.0, upper=2.0)
    with pytest.raises(ConfigError, match="algorithm.correction.lower"):
        mis(mode=CorrectionMode.clip, upper=1.0)  # lower defaults to 1 / upper = upper
    with pytest.raises(ConfigError, match="rs_lower"):
        mis(use_rs=True, rs_lower=1.5, rs_upper=1.0)


def test_rs_level_and_bounds_default_to_the_is_ones() -> None:
    cfg = mis(level=CorrectionLevel.sequence, upper=4.0)
    assert cfg.rs_ratio_level is CorrectionLevel.sequence
    assert cfg.rs_bounds == (0.25, 4.0)
    settings = mis(rs_level=CorrectionLevel.geometric, use_rs=True, rs_upper=3.0).mis_settings()
    assert settings["tis_level"] == "token" and settings["rs_level"] == "geometric"
    assert settings["tis_lower_bound"] == 0.5 and settings["rs_upper_bound"] == 3.0
