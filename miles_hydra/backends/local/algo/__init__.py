"""RL algorithm math of the embedded engine, as small pure torch functions.

Every tensor argument is a padded ``[batch, T]`` tensor over response tokens (row i = sample i,
column t = its t-th response token) with a 0/1 ``loss_mask`` of the same shape, unless a
docstring says ``[batch]``. Padding positions must carry ``loss_mask == 0``; their values are
ignored (NaN/Inf there never leaks into a loss, a metric or a gradient).

Settings come in as the schema's own types (``miles_hydra.config.algorithm``: the enums,
``CorrectionConfig``, ``AlgorithmConfig``); defaults live there only, so a setting the math
needs is a required argument here.

Modules:
    advantages   reward normalization per prompt group, advantage estimators, whitening
    policy_loss  PPO/GSPO clipped surrogate, dual clip, OPSM, ESS, clipped value loss,
                 token log-probs and entropy from logits
    kl           KL estimators k1/k2/k3/low_var_kl (+ unbiased variant)
    corrections  train/rollout mismatch: TIS, IcePop, mismatch metrics
    mis          MIS / rejection sampling (miles' mis.py)
    aggregation  seq_mean_token_mean and token_mean reducers
    objective    compute_policy_loss_and_metrics / compute_value_loss_and_metrics
"""

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
from miles_hydra.backends.local.algo.aggregation import (
    aggregate,
    aggregate_per_sample,
    masked_mean_per_sample,
    masked_sum_per_sample,
)
from miles_hydra.backends.local.algo.corrections import (
    icepop_weights,
    mismatch_metrics,
    tis_weights,
)
from miles_hydra.backends.local.algo.kl import approx_kl
from miles_hydra.backends.local.algo.mis import mis_weights
from miles_hydra.backends.local.algo.objective import (
    compute_policy_loss_and_metrics,
    compute_value_loss_and_metrics,
)
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

__all__ = [
    "aggregate",
    "aggregate_per_sample",
    "approx_kl",
    "clipped_value_loss",
    "compute_advantages",
    "compute_policy_loss_and_metrics",
    "compute_value_loss_and_metrics",
    "ess_ratio_per_sample",
    "gae_advantages_and_returns",
    "grpo_advantages",
    "icepop_weights",
    "masked_mean_per_sample",
    "masked_sum_per_sample",
    "masked_whiten",
    "mis_weights",
    "mismatch_metrics",
    "normalize_group_rewards",
    "normalize_rewards_for_estimator",
    "opsm_mask",
    "ppo_clip_loss",
    "reinforce_plus_plus_baseline_advantages",
    "reinforce_plus_plus_returns",
    "sanitize",
    "sequence_ppo_kl",
    "tis_weights",
    "token_entropy",
    "token_log_probs",
    "token_ppo_kl",
]
