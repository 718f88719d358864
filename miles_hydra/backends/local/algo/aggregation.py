"""Loss aggregation: miles' ``sum_of_sample_mean`` / per-token reducers over padded batches.

miles (``cp_utils.py::get_sum_of_sample_mean``, ``loss.py::loss_function``) reduces every
per-token quantity (pg loss, clipfrac, KL, entropy, metrics) in one of two ways:

* ``seq_mean_token_mean`` (default, ``--calculate-per-token-loss`` off): the mean over samples
  of each sample's token mean, ``(1/N) Σ_i Σ_t n_{i,t} x_{i,t} / max(D_i, 1)``.
* ``token_mean`` (``--calculate-per-token-loss``): the global token mean,
  ``Σ_{i,t} n_{i,t} x_{i,t} / max(Σ_{i,t} m_{i,t}, 1)``.

Here ``m`` is the original loss mask, ``n`` the numerator mask (``m`` unless a correction such
as MIS rejection sampling zeroed some tokens), ``D_i = Σ_t m_{i,t}`` (or the caller's
``sample_denominators``, miles' ``rollout_mask_sums``) and ``N`` the number of samples.
Denominators always come from the original mask: rejected tokens count as zeros, they do not
shrink the mean.

Micro-batching: pass ``num_samples`` / ``num_tokens`` of the whole global batch and the
per-micro-batch results sum to the global-batch value (what miles' Megatron rescaling does).
"""

from __future__ import annotations

import torch

from miles_hydra.config.algorithm import LossAggregation


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` where ``mask`` is set, exactly 0 elsewhere (NaN/Inf at padding cannot leak)."""
    return torch.where(mask.bool(), values, 0.0)


def masked_sum_per_sample(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample masked sum ``s_i = Σ_t m_{i,t} x_{i,t}``; ``[B, T] -> [B]``."""
    return _masked(values, mask).sum(dim=-1)


def masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample masked mean ``Σ_t m_{i,t} x_{i,t} / max(Σ_t m_{i,t}, 1)``; ``[B, T] -> [B]``.

    Matches miles' ``masked_mean`` (an empty sample gives 0).
    """
    count = mask.to(values.dtype).sum(dim=-1).clamp_min(1)
    return masked_sum_per_sample(values, mask) / count


def aggregate(
    values: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: LossAggregation,
    *,
    numerator_mask: torch.Tensor | None = None,
    sample_denominators: torch.Tensor | None = None,
    num_samples: int | None = None,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token tensor to a scalar the way miles does.

    seq_mean_token_mean: ``(1/N) Σ_i [Σ_t n_{i,t} x_{i,t} / max(D_i, 1)]``
    token_mean:          ``Σ_{i,t} n_{i,t} x_{i,t} / max(M, 1)``

    Args:
        values: ``[B, T]`` per-token values.
        loss_mask: ``[B, T]`` original 0/1 mask ``m``; gives the denominators.
        mode: the reducer.
        numerator_mask: ``[B, T]`` mask ``n`` used in the numerator (default ``loss_mask``).
        sample_denominators: ``[B]`` per-sample ``D_i`` (default ``Σ_t m_{i,t}``).
        num_samples: ``N`` (default ``B``); the global batch size under micro-batching.
        num_tokens: ``M`` (default ``Σ_{i,t} m_{i,t}``); the global token count.
    """
    numerator = loss_mask if numerator_mask is None else numerator_mask
    sums = masked_sum_per_sample(values, numerator)
    if mode is LossAggregation.token_mean:
        total = loss_mask.to(values.dtype).sum() if num_tokens is None else num_tokens
        return sums.sum() / max(float(total), 1.0)
    if sample_denominators is None:
        sample_denominators = loss_mask.to(values.dtype).sum(dim=-1)
    per_sample = sums / sample_denominators.to(values.dtype).clamp_min(1)
    count = values.shape[0] if num_samples is None else num_samples
    return per_sample.sum() / max(count, 1)


def aggregate_per_sample(
    per_sample: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: LossAggregation,
    *,
    num_samples: int | None = None,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce a per-sample ``[B]`` statistic ``e_i`` (e.g. ESS) like miles' ESS metric.

    seq_mean_token_mean: ``(1/N) Σ_i e_i``
    token_mean:          ``Σ_i e_i · max(Σ_t m_{i,t}, 1) / max(M, 1)``
    """
    if mode is LossAggregation.token_mean:
        weights = loss_mask.to(per_sample.dtype).sum(dim=-1).clamp_min(1)
        total = loss_mask.to(per_sample.dtype).sum() if num_tokens is None else num_tokens
        return (per_sample * weights).sum() / max(float(total), 1.0)
    count = per_sample.shape[0] if num_samples is None else num_samples
    return per_sample.sum() / max(count, 1)
