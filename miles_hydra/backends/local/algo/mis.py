"""MIS / rejection sampling (miles ``examples/.../train_infer_mismatch_helper/mis.py``).

Per sample, with ``ℓ_t = log π_train(t) − log π_roll(t)`` and level
``token: ℓ_t`` | ``sequence: Σ_t m_t ℓ_t`` (product of ratios) | ``geometric: mean_t ℓ_t``:

1. IS weights ``w = exp(clamp(ℓ_level, ±20))``, bounded by ``tis_mode``:
   ``truncate``: ``clamp(w, 0, U)``; ``clip``: ``clamp(w, L, U)``; ``mask``: keep w, drop
   tokens with w outside ``[L, U]`` from the numerator mask (L = ``tis_lower_bound`` or 1/U).
2. Rejection sampling (``use_rs``): drop tokens whose RS ratio (at ``rs_level``) is outside
   ``[rs_lower_bound, rs_upper_bound]`` (default: the TIS bounds); veto: drop the whole sample
   if any loss token has ``ρ_t < rs_veto_threshold``.
3. ``tis_batch_normalize``: ``w /= mean(w)`` over the batch (token level: over all loss
   tokens; sequence level: mean of per-sample means), if that mean is > 1e-8.

The modified mask only replaces the *numerator* mask of the reducer; denominators stay the
original token counts. All metrics are per-token ``[B, T]`` tensors keyed ``mis_<name>``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from miles_hydra.backends.local.algo.aggregation import (
    masked_mean_per_sample,
    masked_sum_per_sample,
)
from miles_hydra.backends.local.algo.corrections import mismatch_metrics
from miles_hydra.backends.local.algo.kl import LOG_RATIO_CLAMP
from miles_hydra.errors import ConfigError


class ISLevel(enum.Enum):
    token = "token"  # one ratio per token (biased, low variance)
    sequence = "sequence"  # product of the sample's ratios (unbiased, high variance)
    geometric = "geometric"  # geometric mean of the sample's ratios (length-invariant)


class ISMode(enum.Enum):
    truncate = "truncate"  # clamp(w, 0, U): TIS
    clip = "clip"  # clamp(w, L, U): CIS
    mask = "mask"  # keep w, reject tokens outside [L, U]: MIS


@dataclass(frozen=True)
class MisConfig:
    """miles' ``MisConfig`` (keys of the ``--custom-config-path`` YAML), same defaults."""

    use_tis: bool = True  # apply IS weights; False = mismatch metrics only (miles YAML use_tis)
    use_rs: bool = False  # rejection sampling: zero numerator-mask tokens outside RS bounds
    tis_level: ISLevel = ISLevel.token  # aggregation level of the IS ratio
    rs_level: ISLevel = ISLevel.token  # aggregation level of the RS ratio
    tis_mode: ISMode = ISMode.truncate  # how IS weights are bounded
    tis_lower_bound: float | None = 0.5  # L; None = 1 / tis_upper_bound
    tis_upper_bound: float = 2.0  # U
    rs_lower_bound: float | None = None  # RS lower bound; None = the TIS lower bound
    rs_upper_bound: float | None = None  # RS upper bound; None = tis_upper_bound
    rs_veto_threshold: float | None = 1.0e-4  # reject a sample if any token ρ_t < this
    tis_batch_normalize: bool = False  # divide weights by their batch mean

    def __post_init__(self) -> None:
        for name, kind in (("tis_level", ISLevel), ("rs_level", ISLevel), ("tis_mode", ISMode)):
            value = getattr(self, name)  # a string or any enum with the same values
            object.__setattr__(self, name, kind(getattr(value, "value", value)))
        if self.tis_upper_bound <= 0:
            raise ConfigError(
                "algorithm.mis.tis_upper_bound", self.tis_upper_bound, "must be > 0", "e.g. 2.0"
            )
        if self.tis_mode is not ISMode.truncate and self.lower_bound >= self.tis_upper_bound:
            raise ConfigError(
                "algorithm.mis.tis_lower_bound",
                self.tis_lower_bound,
                f"must be below tis_upper_bound={self.tis_upper_bound} for tis_mode=clip/mask",
                "lower it or raise tis_upper_bound",
            )
        if self.use_rs and self.rs_bounds[0] >= self.rs_bounds[1]:
            raise ConfigError(
                "algorithm.mis.rs_lower_bound",
                self.rs_bounds[0],
                f"must be below the RS upper bound {self.rs_bounds[1]}",
                "set rs_lower_bound/rs_upper_bound so that lower < upper",
            )
        if self.tis_batch_normalize and self.use_tis and self.tis_level is ISLevel.geometric:
            raise ConfigError(
                "algorithm.mis.tis_batch_normalize",
                True,
                "is not defined for tis_level=geometric (miles raises too)",
                "use tis_level=token or sequence, or turn tis_batch_normalize off",
            )

    @property
    def lower_bound(self) -> float:
        """TIS lower bound L (``tis_lower_bound`` or ``1 / tis_upper_bound``)."""
        if self.tis_lower_bound is None:
            return 1.0 / self.tis_upper_bound
        return self.tis_lower_bound

    @property
    def rs_bounds(self) -> tuple[float, float]:
        """RS bounds, each defaulting to its TIS counterpart."""
        low = self.lower_bound if self.rs_lower_bound is None else self.rs_lower_bound
        high = self.tis_upper_bound if self.rs_upper_bound is None else self.rs_upper_bound
        return low, high


def _level_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor, level: ISLevel) -> torch.Tensor:
    """token: ``ℓ_t``; sequence: ``Σ_t m_t ℓ_t``; geometric: ``Σ_t m_t ℓ_t / max(Σ m, 1)``."""
    if level is ISLevel.token:
        return log_ratio
    if level is ISLevel.sequence:
        per_sample = masked_sum_per_sample(log_ratio, mask)
    else:
        per_sample = masked_mean_per_sample(log_ratio, mask)
    return per_sample[:, None].expand_as(log_ratio)


def _bound_weights(
    weights: torch.Tensor, mask: torch.Tensor, cfg: MisConfig, metrics: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``tis_mode``; returns ``(weights · m, numerator mask)`` and records fractions."""
    low, high = cfg.lower_bound, cfg.tis_upper_bound
    if cfg.tis_mode is ISMode.truncate:
        metrics["tis_truncate_fraction"] = (weights > high).float()
        return weights.clamp(0, high) * mask, mask
    metrics[f"tis_{cfg.tis_mode.value}_fraction_low"] = (weights < low).float()
    metrics[f"tis_{cfg.tis_mode.value}_fraction_high"] = (weights > high).float()
    if cfg.tis_mode is ISMode.clip:
        return weights.clamp(low, high) * mask, mask
    in_range = ((weights >= low) & (weights <= high)).float()
    return weights * mask, mask * in_range


def _reject(
    log_ratio: torch.Tensor,
    level_log_ratio: torch.Tensor,
    mask: torch.Tensor,
    numerator: torch.Tensor,
    cfg: MisConfig,
    metrics: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Rejection sampling on ``numerator``: RS bounds at ``rs_level``, then the veto."""
    low, high = cfg.rs_bounds
    rs_weights = level_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    metrics["rs_mask_fraction_low"] = (rs_weights < low).float()
    metrics["rs_mask_fraction_high"] = (rs_weights > high).float()
    numerator = numerator * ((rs_weights >= low) & (rs_weights <= high)).float()
    if cfg.rs_veto_threshold is not None:
        catastrophic = (log_ratio < math.log(cfg.rs_veto_threshold)) & mask.bool()
        vetoed = catastrophic.any(dim=-1, keepdim=True).expand_as(mask)
        metrics["rs_catastrophic_token_fraction"] = catastrophic.float()
        metrics["rs_catastrophic_seq_fraction"] = vetoed.float()
        numerator = numerator * (~vetoed).float()
    return numerator


def _batch_mean(weights: torch.Tensor, mask: torch.Tensor, level: ISLevel) -> torch.Tensor:
    """token: ``Σ m w / max(Σ m, 1)``; sequence: mean over samples of per-sample means."""
    if level is ISLevel.token:
        return masked_sum_per_sample(weights, mask).sum() / mask.sum().clamp_min(1)
    return masked_mean_per_sample(weights, mask).mean()


def _final_stats(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample mean/min/max of the final weights over loss tokens (0 for an empty sample)."""
    valid = mask.bool()
    has_tokens = valid.any(dim=-1)
    low = torch.where(valid, weights, math.inf).amin(dim=-1)
    high = torch.where(valid, weights, -math.inf).amax(dim=-1)
    stats = {
        "is_ratio_mean_final": masked_mean_per_sample(weights, mask),
        "is_ratio_min_final": torch.where(has_tokens, low, 0.0),
        "is_ratio_max_final": torch.where(has_tokens, high, 0.0),
    }
    return {key: value[:, None].expand_as(weights) for key, value in stats.items()}


def mis_weights(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: MisConfig,
) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, torch.Tensor]]:
    """miles ``compute_mis_weights`` on a padded batch (see the module docstring for the math).

    Returns ``(weights, numerator_mask, metrics)``: weights ``[B, T]`` (None when
    ``cfg.use_tis`` is False: metrics only, no weights and no rejection, as in miles), the
    modified 0/1 numerator mask, and ``mis_*`` per-token metrics to be reduced with the
    original ``loss_mask``. Weights and masks carry no gradient.
    """
    mask = loss_mask.float()
    train = torch.where(mask.bool(), train_log_probs.detach().float(), 0.0)
    rollout = torch.where(mask.bool(), rollout_log_probs.detach().float(), 0.0)
    metrics = mismatch_metrics(train, rollout, mask)
    if not cfg.use_tis:
        return None, mask, {f"mis_{key}": value for key, value in metrics.items()}

    log_ratio = train - rollout
    tis_log_ratio = _level_log_ratio(log_ratio, mask, cfg.tis_level)
    weights = tis_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    metrics["tis_weight_before_bound"] = weights
    weights, numerator = _bound_weights(weights, mask, cfg, metrics)
    metrics["tis_weight_after_bound"] = weights
    if cfg.use_rs:
        same_level = cfg.rs_level is cfg.tis_level
        rs_log_ratio = (
            tis_log_ratio if same_level else _level_log_ratio(log_ratio, mask, cfg.rs_level)
        )
        numerator = _reject(log_ratio, rs_log_ratio, mask, numerator, cfg, metrics)
    metrics["is_ratio_mean_after_tis_rs"] = weights

    if cfg.tis_batch_normalize:
        mean = _batch_mean(weights, mask, cfg.tis_level)
        if mean > 1e-8:
            weights = weights / mean
            metrics["batch_norm_factor"] = mean.expand_as(weights)
        else:
            metrics["batch_norm_factor"] = torch.ones_like(weights)
    metrics.update(_final_stats(weights, mask))
    return weights, numerator, {f"mis_{key}": value for key, value in metrics.items()}
