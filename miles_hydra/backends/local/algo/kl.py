"""KL estimators (miles ``math_utils.py::compute_approx_kl``, Schulman's k1/k2/k3).

With ``Δ = log π − log π_base`` per token:

=============  ==========================================================================
``k1``         ``Δ``
``k2``         ``Δ² / 2``
``k3``         ``exp(−Δ) − 1 + Δ``  (= π_base/π − 1 − log(π_base/π), non-negative)
``low_var_kl`` k3 with ``−Δ`` sanitized (NaN→0, ±Inf→±20) and clamped to ``[−20, 20]`` before
               ``exp``, and the result clamped to ``[−10, 10]``
=============  ==========================================================================

Unbiased variant (``--use-unbiased-kl``, DeepSeek-V3.2): the estimate is multiplied by the
importance ratio ``π_θ/π_old = exp(log π_θ − log π_old)`` (before the low_var_kl clamp).
"""

from __future__ import annotations

import torch

from miles_hydra.config.algorithm import KLType

LOG_RATIO_CLAMP = 20.0  # miles' _LOG_RATIO_EXP_CLAMP: |log ratio| bound before exp
LOW_VAR_KL_CLAMP = 10.0  # low_var_kl result is clamped to [-10, 10]


def safe_clamp_log_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """miles' ``_safe_clamp_log_ratio``: NaN→0, +Inf→20, −Inf→−20, then clamp to ``[−20, 20]``."""
    cleaned = torch.nan_to_num(
        log_ratio.float(), nan=0.0, posinf=LOG_RATIO_CLAMP, neginf=-LOG_RATIO_CLAMP
    )
    return cleaned.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def approx_kl(
    log_probs: torch.Tensor,
    log_probs_base: torch.Tensor,
    kl_type: KLType,
    importance_ratio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL estimate of ``KL(π ‖ π_base)`` at sampled tokens (same shape as inputs).

    ``Δ = log_probs − log_probs_base`` (computed in float32);
    k1 = Δ; k2 = Δ²/2; k3 = exp(−Δ) − 1 + Δ;
    low_var_kl = clamp(exp(c) − 1 − c, −10, 10) with c = clamp(sanitize(−Δ), −20, 20).
    If ``importance_ratio`` w is given the estimate becomes ``w · KL`` (clamped afterwards for
    low_var_kl). Gradients flow through ``log_probs`` (and ``importance_ratio``).
    """
    log_ratio = log_probs.float() - log_probs_base.float()
    if kl_type is KLType.k1:
        kl = log_ratio
    elif kl_type is KLType.k2:
        kl = log_ratio.square() / 2.0
    else:
        neg = -log_ratio
        if kl_type is KLType.low_var_kl:
            neg = safe_clamp_log_ratio(neg)
        kl = neg.exp() - 1.0 - neg
    if importance_ratio is not None:
        kl = importance_ratio * kl
    if kl_type is KLType.low_var_kl:
        kl = kl.clamp(-LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)
    return kl
