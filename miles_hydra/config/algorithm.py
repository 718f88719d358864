"""`algorithm` group: advantage estimator, PPO clipping, KL, entropy, off-policy correction, optimizer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError


class AdvantageEstimator(enum.Enum):
    grpo = "grpo"
    gspo = "gspo"
    reinforce_plus_plus = "reinforce_plus_plus"
    reinforce_plus_plus_baseline = "reinforce_plus_plus_baseline"
    ppo = "ppo"


class KLType(enum.Enum):
    k1 = "k1"  # log ratio
    k2 = "k2"  # squared log ratio / 2
    k3 = "k3"  # Schulman k3, non-negative
    low_var_kl = "low_var_kl"  # k3 with clamps (miles' default estimator)


class CorrectionKind(enum.Enum):
    none = "none"  # no train-inference mismatch correction
    tis = "tis"  # truncated importance sampling, token level (miles --use-tis)
    mis = "mis"  # masked importance sampling / rejection sampling (miles mis.py)
    icepop = "icepop"  # keep ratios inside [lower, upper], zero the rest


class CorrectionLevel(enum.Enum):
    token = "token"  # one ratio per token (biased, low variance)
    sequence = "sequence"  # product of the sample's ratios (unbiased, high variance)
    geometric = "geometric"  # geometric mean of the sample's ratios (length-invariant)


class CorrectionMode(enum.Enum):
    truncate = "truncate"  # clamp(rho, 0, upper)
    clip = "clip"  # clamp(rho, lower, upper)
    mask = "mask"  # keep rho, zero the mask outside [lower, upper]


class LossAggregation(enum.Enum):
    seq_mean_token_mean = "seq_mean_token_mean"  # miles default
    token_mean = "token_mean"  # miles --calculate-per-token-loss


class Optimizer(enum.Enum):
    adam = "adam"
    sgd = "sgd"


class LRDecayStyle(enum.Enum):
    constant = "constant"  # algorithm.lr after the warm-up
    linear = "linear"  # linear decay to min_lr at the last step
    cosine = "cosine"  # half-cosine decay to min_lr at the last step


@dataclass
class CorrectionConfig:
    """Off-policy correction of the train-inference mismatch (TIS, MIS, IcePop)."""

    kind: CorrectionKind = CorrectionKind.none  # which correction
    lower: Optional[float] = None  # lower IS bound; None = 0 for tis, 1/upper for mis/icepop
    upper: float = 2.0  # upper IS bound (miles --tis-clip)
    level: CorrectionLevel = (
        CorrectionLevel.token
    )  # ratio aggregation level of the IS weights (mis)
    rs_level: Optional[CorrectionLevel] = None  # ratio level of rejection sampling; None = level
    mode: CorrectionMode = CorrectionMode.truncate  # how weights are bounded (mis)
    use_rs: bool = False  # rejection sampling: mask samples outside the RS bounds (mis)
    rs_lower: Optional[float] = None  # RS lower bound; None = the IS lower bound (mis)
    rs_upper: Optional[float] = None  # RS upper bound; None = the IS upper bound (mis)
    rs_veto_threshold: Optional[float] = None  # mask a sequence if any token ratio is below (mis)
    batch_normalize: bool = False  # divide weights by their batch mean (mis)

    @property
    def lower_bound(self) -> float:
        """IS lower bound: ``lower``, else 0 for tis and ``1 / upper`` for mis/icepop."""
        if self.lower is not None:
            return self.lower
        return 0.0 if self.kind is CorrectionKind.tis else 1.0 / self.upper

    @property
    def rs_ratio_level(self) -> CorrectionLevel:
        """Level of the rejection-sampling ratio: ``rs_level``, else ``level``."""
        return self.level if self.rs_level is None else self.rs_level

    @property
    def rs_bounds(self) -> tuple[float, float]:
        """Rejection-sampling bounds, each defaulting to its IS counterpart (miles' mis.py)."""
        low = self.lower_bound if self.rs_lower is None else self.rs_lower
        high = self.upper if self.rs_upper is None else self.rs_upper
        return low, high

    def mis_settings(self) -> dict[str, Any]:
        """The keys miles' mis.py reads from its args (``--custom-config-path``), in its names."""
        return {
            "use_tis": True,
            "use_rs": self.use_rs,
            "tis_level": self.level.value,
            "rs_level": self.rs_ratio_level.value,
            "tis_mode": self.mode.value,
            "tis_lower_bound": self.lower_bound,
            "tis_upper_bound": self.upper,
            "rs_lower_bound": self.rs_lower,
            "rs_upper_bound": self.rs_upper,
            "rs_veto_threshold": self.rs_veto_threshold,
            "tis_batch_normalize": self.batch_normalize,
        }

    def validate(self) -> None:
        if self.kind is CorrectionKind.none:
            return
        if self.upper <= 0:
            raise ConfigError("algorithm.correction.upper", self.upper, "must be > 0", "e.g. 2.0")
        if self.lower is not None and not 0 <= self.lower <= self.upper:
            raise ConfigError(
                "algorithm.correction.lower",
                self.lower,
                f"must be in [0, algorithm.correction.upper={self.upper}]",
            )
        if self.kind is CorrectionKind.tis and self.upper < 1:
            raise ConfigError(
                "algorithm.correction.upper",
                self.upper,
                "is below 1: TIS would down-weight every on-policy token",
                "use a value >= 1, e.g. 2.0",
            )
        if self.kind is CorrectionKind.mis:
            self._validate_mis()
        mis_only = ("use_rs", "batch_normalize", "rs_veto_threshold", "rs_level")
        if self.kind is not CorrectionKind.mis:
            for key in mis_only:
                if getattr(self, key):
                    raise ConfigError(
                        f"algorithm.correction.{key}",
                        getattr(self, key),
                        f"only applies to algorithm.correction.kind=mis (got {self.kind.value})",
                        "set algorithm.correction.kind=mis or drop the key",
                    )

    def __post_init__(self) -> None:
        self.validate()

    def _validate_mis(self) -> None:
        """What miles' mis.py asserts, checked before anything runs."""
        if self.batch_normalize and self.level is CorrectionLevel.geometric:
            raise ConfigError(
                "algorithm.correction.batch_normalize",
                True,
                "is not defined for level=geometric (miles' mis.py refuses it)",
                "set algorithm.correction.batch_normalize=false or level=token|sequence",
            )
        if self.mode is not CorrectionMode.truncate and self.lower_bound >= self.upper:
            raise ConfigError(
                "algorithm.correction.lower",
                self.lower_bound,
                f"must be below algorithm.correction.upper={self.upper} for mode={self.mode.value}",
                "lower it, or raise algorithm.correction.upper above 1",
            )
        low, high = self.rs_bounds
        if self.use_rs and low >= high:
            raise ConfigError(
                "algorithm.correction.rs_lower",
                low,
                f"must be below the rejection-sampling upper bound {high}",
                "set algorithm.correction.rs_lower / rs_upper so that lower < upper",
            )


@dataclass
class AlgorithmConfig:
    advantage_estimator: AdvantageEstimator = AdvantageEstimator.grpo  # how advantages are formed
    rewards_normalization: bool = (
        True  # subtract the group mean of rewards (grpo/gspo/rpp_baseline)
    )
    grpo_std_normalization: bool = True  # also divide by the group std; false = Dr.GRPO
    normalize_advantages: bool = False  # whiten advantages over the batch (required by REINFORCE++)
    gamma: float = 1.0  # discount (reinforce_plus_plus, ppo)
    lambd: float = 1.0  # GAE lambda (ppo)
    eps_clip: float = 0.2  # PPO lower clip (ratio >= 1 - eps_clip)
    eps_clip_high: Optional[float] = None  # PPO upper clip; None = eps_clip (DAPO uses 0.28)
    eps_clip_c: Optional[float] = None  # dual-clip constant (> 1) for negative advantages
    value_clip: float = 0.2  # PPO critic value clip
    use_kl_loss: bool = False  # add a KL(actor || reference) loss term
    kl_loss_coef: float = 0.0  # weight of the KL loss
    kl_loss_type: KLType = KLType.low_var_kl  # KL estimator for the loss
    use_unbiased_kl: bool = False  # weight the KL by pi_theta / pi_old (DeepSeek-V3.2)
    kl_coef: float = 0.0  # KL penalty in token rewards (reinforce_plus_plus*, ppo)
    entropy_coef: float = 0.0  # entropy bonus weight
    use_opsm: bool = False  # off-policy sequence masking of negative-advantage drifted samples
    opsm_delta: float = 1e-4  # OPSM threshold on the mean log-ratio
    loss_aggregation: LossAggregation = LossAggregation.seq_mean_token_mean  # loss reducer
    use_rollout_logprobs: bool = False  # take pi_old from the rollout engine (bypass recompute)
    use_rollout_routing_replay: bool = False  # R3: replay rollout expert choices in training (MoE)
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)  # off-policy correction
    optimizer: Optimizer = Optimizer.adam  # optimizer
    lr: float = 1e-6  # learning rate
    min_lr: float = 0.0  # floor of the LR schedule
    lr_decay_style: LRDecayStyle = LRDecayStyle.constant  # LR schedule after the warm-up
    lr_warmup_iters: int = 0  # linear warm-up steps
    weight_decay: float = 0.1  # decoupled weight decay
    adam_beta1: float = 0.9  # Adam beta1
    adam_beta2: float = 0.98  # Adam beta2
    adam_eps: float = 1e-8  # Adam epsilon
    clip_grad: float = 1.0  # gradient-norm clip

    @property
    def uses_reference(self) -> bool:
        """A frozen reference policy is needed (KL loss or KL reward penalty)."""
        return self.use_kl_loss or self.kl_coef != 0.0

    @property
    def clip_high(self) -> float:
        """PPO upper clip: ``eps_clip_high``, else ``eps_clip``."""
        return self.eps_clip if self.eps_clip_high is None else self.eps_clip_high

    def validate(self) -> None:
        if not 0 < self.eps_clip < 1:
            raise ConfigError("algorithm.eps_clip", self.eps_clip, "must be in (0, 1)", "e.g. 0.2")
        if self.eps_clip_high is not None and self.eps_clip_high <= 0:
            raise ConfigError(
                "algorithm.eps_clip_high", self.eps_clip_high, "must be > 0", "e.g. 0.28"
            )
        if self.eps_clip_c is not None and self.eps_clip_c <= 1:
            raise ConfigError(
                "algorithm.eps_clip_c",
                self.eps_clip_c,
                "must be > 1 (dual clip)",
                "e.g. 3.0 or null",
            )
        if self.lr <= 0:
            raise ConfigError("algorithm.lr", self.lr, "must be > 0", "e.g. 1e-6")
        if self.kl_coef != 0.0 and self.kl_loss_coef != 0.0:
            raise ConfigError(
                "algorithm.kl_coef",
                self.kl_coef,
                "and algorithm.kl_loss_coef are mutually exclusive in miles",
                "use the KL loss (use_kl_loss, kl_loss_coef) or the reward penalty (kl_coef), not both",
            )
        if self.kl_loss_coef != 0.0 and not self.use_kl_loss:
            raise ConfigError(
                "algorithm.kl_loss_coef",
                self.kl_loss_coef,
                "has no effect without use_kl_loss=true",
                "set algorithm.use_kl_loss=true",
            )
        rpp = (
            AdvantageEstimator.reinforce_plus_plus,
            AdvantageEstimator.reinforce_plus_plus_baseline,
        )
        if self.advantage_estimator in rpp and not self.normalize_advantages:
            raise ConfigError(
                "algorithm.normalize_advantages",
                False,
                f"is required by advantage_estimator={self.advantage_estimator.value}",
                "set algorithm.normalize_advantages=true",
            )
        if self.advantage_estimator is AdvantageEstimator.ppo and self.kl_coef != 0.0:
            raise ConfigError(
                "algorithm.kl_coef",
                self.kl_coef,
                "must be 0 for ppo in miles",
                "use algorithm.use_kl_loss=true with algorithm.kl_loss_coef instead",
            )
        if self.use_rollout_logprobs and self.correction.kind is not CorrectionKind.none:
            raise ConfigError(
                "algorithm.use_rollout_logprobs",
                True,
                f"excludes algorithm.correction.kind={self.correction.kind.value}: the correction "
                "needs trainer-scored old log-probs",
                "set algorithm.use_rollout_logprobs=false or algorithm.correction.kind=none",
            )
        self.correction.validate()

    def __post_init__(self) -> None:
        self.validate()
