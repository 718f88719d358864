"""The policy-loss combiner (miles ``losses.py::policy_loss_function``) and the critic loss.

``loss = pg_loss − entropy_coef·entropy_loss + kl_loss_coef·kl_loss`` where, per token,
``pg_loss_t`` is the clipped PPO/GSPO surrogate (``policy_loss.ppo_clip_loss``), zeroed by OPSM
if enabled, multiplied by the off-policy correction weights (TIS / IcePop / MIS), each term
reduced by ``aggregate``.
A correction's modified mask (MIS rejection) becomes the numerator mask of every reduced loss
term and of pg_clipfrac/ppo_kl/entropy/kl/train_rollout_*; ESS, ois and the correction's own
metrics use the original mask, as in miles. Denominators always come from ``loss_mask``.

Shapes: padded ``[B, T]`` response tensors with a 0/1 ``loss_mask``; everything at
``loss_mask = 0`` is ignored. Metric values are detached 0-d tensors keyed like miles' wandb
names (``train/...``). For micro-batching pass the global ``num_samples``/``num_tokens``;
losses and metrics of the micro-batches then add up to the global-batch values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from miles_hydra.backends.local.algo.aggregation import aggregate, aggregate_per_sample
from miles_hydra.backends.local.algo.corrections import icepop_weights, tis_weights
from miles_hydra.backends.local.algo.kl import approx_kl
from miles_hydra.backends.local.algo.mis import mis_weights
from miles_hydra.backends.local.algo.policy_loss import (
    clipped_value_loss,
    ess_ratio_per_sample,
    opsm_mask,
    ppo_clip_loss,
    sanitize,
    sequence_ppo_kl,
    token_ppo_kl,
)
from miles_hydra.config.algorithm import (
    AdvantageEstimator,
    AlgorithmConfig,
    CorrectionKind,
    KLType,
    LossAggregation,
)


def _aggregator(
    loss_mask: torch.Tensor,
    cfg: AlgorithmConfig,
    sample_denominators: torch.Tensor | None,
    num_samples: int | None,
    num_tokens: float | None,
) -> Callable[..., torch.Tensor]:
    """Bind the reducer settings; returns ``reduce(values, numerator_mask=None) -> scalar``."""

    def reduce(values: torch.Tensor, numerator_mask: torch.Tensor | None = None) -> torch.Tensor:
        return aggregate(
            values,
            loss_mask,
            cfg.loss_aggregation,
            numerator_mask=numerator_mask,
            sample_denominators=sample_denominators,
            num_samples=num_samples,
            num_tokens=num_tokens,
        )

    return reduce


def _apply_correction(
    pg_loss: torch.Tensor,
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: AlgorithmConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Returns ``(pg_loss · w, numerator mask, per-token metrics)`` for ``cfg.correction``."""
    c = cfg.correction
    if c.kind is CorrectionKind.mis:
        weights, numerator, metrics = mis_weights(old_log_probs, rollout_log_probs, loss_mask, c)
        return pg_loss * weights, numerator, metrics
    fn = tis_weights if c.kind is CorrectionKind.tis else icepop_weights
    weights, metrics = fn(
        old_log_probs, rollout_log_probs, clip_low=c.lower_bound, clip_high=c.upper
    )
    return pg_loss * weights, loss_mask, metrics


def compute_policy_loss_and_metrics(
    *,
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    config: AlgorithmConfig,
    rollout_log_probs: torch.Tensor | None = None,
    ref_log_probs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    sample_denominators: torch.Tensor | None = None,
    num_samples: int | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy loss and miles' ``train/*`` metrics for one (micro-)batch.

    Args:
        log_probs: ``[B, T]`` log π_θ of the sampled tokens, with grad.
        old_log_probs: ``[B, T]`` log π_old (trainer-scored; rollout's under bypass).
        advantages: ``[B, T]``.
        loss_mask: ``[B, T]`` 0/1.
        config: ``algorithm.*`` (clipping, GSPO, OPSM, KL loss, entropy, correction, reducer).
        rollout_log_probs: ``[B, T]`` rollout-engine log-probs; needed by every correction and
            enables train/train_rollout_logprob_abs_diff and train/train_rollout_kl.
        ref_log_probs: ``[B, T]``; needed when ``config.use_kl_loss``.
        entropy: ``[B, T]`` token entropy (``policy_loss.token_entropy``); needed when
            ``entropy_coef != 0``; when given with coef 0 it is reported without gradient.
        sample_denominators / num_samples / num_tokens: see ``aggregation.aggregate``.
    Returns:
        ``(loss, metrics)``: scalar loss with grad; detached 0-d metrics.
    """
    mask = loss_mask.bool()
    # Finite zeros at masked positions: nothing leaks from padding into losses or gradients.
    log_probs = torch.where(mask, log_probs, 0.0)
    old_log_probs = torch.where(mask, old_log_probs, 0.0).detach()
    if rollout_log_probs is not None:
        rollout_log_probs = torch.where(mask, rollout_log_probs, 0.0).detach()
    reduce = _aggregator(loss_mask, config, sample_denominators, num_samples, num_tokens)

    if config.advantage_estimator is AdvantageEstimator.gspo:
        ppo_kl = sanitize(sequence_ppo_kl(log_probs, old_log_probs, loss_mask), loss_mask)
    else:
        ppo_kl = sanitize(token_ppo_kl(log_probs, old_log_probs), loss_mask)
    advantages = sanitize(advantages.float(), loss_mask)
    pg_loss, pg_clipfrac = ppo_clip_loss(
        ppo_kl,
        advantages,
        eps_clip=config.eps_clip,
        eps_clip_high=config.clip_high,
        eps_clip_c=config.eps_clip_c,
    )

    opsm_clipfrac = None
    if config.use_opsm:
        keep, opsm_clipfrac = opsm_mask(
            log_probs, old_log_probs, advantages, loss_mask, delta=config.opsm_delta
        )
        pg_loss = pg_loss * keep

    numerator, correction_metrics = loss_mask, {}
    if config.correction.kind is not CorrectionKind.none:
        if rollout_log_probs is None:
            raise ValueError(f"correction={config.correction.kind.value} needs rollout_log_probs")
        pg_loss, numerator, correction_metrics = _apply_correction(
            pg_loss, old_log_probs, rollout_log_probs, loss_mask, config
        )
        correction_metrics["ois"] = (-ppo_kl.detach()).exp()

    def reduce_numerator(values: torch.Tensor) -> torch.Tensor:
        return reduce(torch.where(mask, values, 0.0), numerator)

    pg_loss = reduce_numerator(pg_loss)
    ess = ess_ratio_per_sample(ppo_kl, loss_mask)
    metrics = {
        "train/pg_loss": pg_loss,
        "train/pg_clipfrac": reduce_numerator(pg_clipfrac),
        "train/ppo_kl": reduce_numerator(ppo_kl),
        "train/ess_ratio": aggregate_per_sample(
            ess, loss_mask, config.loss_aggregation, num_samples=num_samples, num_tokens=num_tokens
        ),
    }
    if opsm_clipfrac is not None:
        metrics["train/opsm_clipfrac"] = aggregate_per_sample(
            opsm_clipfrac,
            loss_mask,
            config.loss_aggregation,
            num_samples=num_samples,
            num_tokens=num_tokens,
        )
    regularization, regularizer_metrics = _regularizers(
        log_probs, old_log_probs, ref_log_probs, entropy, loss_mask, config, reduce_numerator
    )
    loss = pg_loss + regularization
    metrics.update(regularizer_metrics)
    if rollout_log_probs is not None:
        metrics.update(_rollout_diagnostics(old_log_probs, rollout_log_probs, reduce_numerator))
    for key, value in correction_metrics.items():
        metrics[f"train/{key}"] = reduce(value)
    metrics["train/loss"] = loss
    return loss, {key: value.detach() for key, value in metrics.items()}


def _regularizers(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor | None,
    entropy: torch.Tensor | None,
    loss_mask: torch.Tensor,
    cfg: AlgorithmConfig,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``−entropy_coef·reduce(H) + kl_loss_coef·reduce(KL(π_θ‖π_ref))`` and their metrics.

    The entropy term is reported as ``train/entropy_loss`` (0 without ``entropy``) and only
    enters the loss when ``entropy_coef != 0``; ``train/kl_loss`` is reported whenever
    ``use_kl_loss`` (even with coefficient 0), as in miles.
    """
    total = log_probs.new_zeros(())
    metrics = {"train/entropy_loss": log_probs.new_zeros(())}
    if entropy is not None:
        metrics["train/entropy_loss"] = reduce(entropy)
        if cfg.entropy_coef != 0:
            total = total - cfg.entropy_coef * metrics["train/entropy_loss"]
    elif cfg.entropy_coef != 0:
        raise ValueError("entropy_coef != 0 needs the token entropy")
    if cfg.use_kl_loss:
        if ref_log_probs is None:
            raise ValueError("use_kl_loss needs ref_log_probs")
        ref_log_probs = torch.where(loss_mask.bool(), ref_log_probs, 0.0)
        ratio = (log_probs - old_log_probs).exp() if cfg.use_unbiased_kl else None
        kl = approx_kl(log_probs, ref_log_probs, cfg.kl_loss_type, ratio)
        metrics["train/kl_loss"] = reduce(sanitize(kl, loss_mask))
        if cfg.kl_loss_coef != 0:
            total = total + cfg.kl_loss_coef * metrics["train/kl_loss"]
    return total, metrics


def _rollout_diagnostics(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``train_rollout_logprob_abs_diff = reduce(|log π_old − log π_roll|)`` and
    ``train_rollout_kl = reduce(low_var_kl(log π_roll, log π_old))``
    (= ``ρ − 1 − log ρ`` per token with ``ρ = π_old/π_roll``, clamped)."""
    abs_diff = torch.nan_to_num((old_log_probs - rollout_log_probs).abs(), 0.0, 0.0, 0.0)
    kl = approx_kl(rollout_log_probs, old_log_probs, KLType.low_var_kl)
    return {
        "train/train_rollout_logprob_abs_diff": reduce(abs_diff),
        "train/train_rollout_kl": reduce(torch.nan_to_num(kl, 0.0, 0.0, 0.0)),
    }


def compute_value_loss_and_metrics(
    *,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    loss_mask: torch.Tensor,
    value_clip: float,
    aggregation: LossAggregation,
    sample_denominators: torch.Tensor | None = None,
    num_samples: int | None = None,
    num_tokens: float | None = None,
    metric_prefix: str = "train/",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO critic loss ``reduce(max((V_c − R)², (V − R)²))`` (``policy_loss.clipped_value_loss``)
    and metrics ``<prefix>value_loss``, ``<prefix>value_clipfrac`` (miles logs the critic
    role's as ``train/critic-value_loss``: pass ``metric_prefix="train/critic-"``)."""
    mask = loss_mask.bool()
    values = torch.where(mask, values.float(), 0.0)
    old_values = torch.where(mask, old_values.float(), 0.0).detach()
    returns = torch.where(mask, returns.float(), 0.0).detach()
    loss_t, clipfrac_t = clipped_value_loss(values, old_values, returns, value_clip=value_clip)

    def reduce(x: torch.Tensor) -> torch.Tensor:
        return aggregate(
            x,
            loss_mask,
            aggregation,
            sample_denominators=sample_denominators,
            num_samples=num_samples,
            num_tokens=num_tokens,
        )

    loss = reduce(loss_t)
    metrics = {
        f"{metric_prefix}value_loss": loss.detach(),
        f"{metric_prefix}value_clipfrac": reduce(clipfrac_t).detach(),
    }
    return loss, metrics
