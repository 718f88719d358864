"""Speculative-decoding acceptance tracking and the acceptance-collapse alert.

Per rollout step the engines report, summed over samples (``GenOutput`` fields):
``spec_draft_tokens`` (tokens the draft proposed), ``spec_accepted_tokens`` (of those, accepted
by the target) and ``spec_verify_steps`` (target verification forwards). From them::

    rollout/spec_accept_rate   = accepted / drafted
    rollout/spec_accept_length = (accepted + verify_steps) / verify_steps

the accept length being the tokens emitted per target forward (accepted drafts plus the one
token the target adds at every verification), as SGLang reports it: 1.0 = the draft is useless,
num_steps + 1 = every draft accepted.

Where the chain breaks is read from ``spec_accept_hist`` (summed elementwise over samples;
``hist[a]`` = verify steps that accepted exactly ``a`` of the ``k`` drafts): for depth
``i = 1..k``::

    rollout/spec_accept_rate_depth{i} = P(draft i accepted | drafts 1..i-1 accepted)
                                      = sum(hist[i:]) / sum(hist[i-1:])

(the per-draft-position acceptance EAGLE and SGLang report; a depth nobody reached is left out).

The alert guards against the silent collapse of miles PR #1926 (a draft whose weights stopped
being synced: throughput fell back to no-speculation with nothing logged). It fires when the
accept length falls below ``(1 - accept_drop_alert) * best`` where ``best`` is the highest accept
length over the previous ``window`` steps: ``rollout/spec_accept_collapse`` is 1 on every such
step and a warning is logged when a collapse starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from miles_hydra.config.speculative import SpeculativeConfig

logger = logging.getLogger(__name__)

DEPTH_RATE_PREFIX = "rollout/spec_accept_rate_depth"  # + depth i (1-based)


@dataclass
class SpecStats:
    """Speculative-decoding counters of one rollout step, summed over samples."""

    draft_tokens: int = 0  # tokens proposed by the draft
    accepted_tokens: int = 0  # proposed tokens the target accepted
    verify_steps: int = 0  # target verification forwards
    # verify steps by accepted draft count (hist[a]: exactly a accepted); [] when not reported
    accept_hist: list[int] = field(default_factory=list)

    @classmethod
    def from_outputs(cls, outputs: Iterable[Any]) -> SpecStats:
        """Sum the ``spec_*`` fields of ``GenOutput``-like objects; histograms elementwise,
        the shorter padded with zeros (an output without ``spec_accept_hist`` counts as [])."""
        stats = cls()
        for out in outputs:
            stats.draft_tokens += out.spec_draft_tokens
            stats.accepted_tokens += out.spec_accepted_tokens
            stats.verify_steps += out.spec_verify_steps
            stats.accept_hist = add_hists(stats.accept_hist, getattr(out, "spec_accept_hist", []))
        return stats

    @property
    def accept_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def accept_length(self) -> float:
        if not self.verify_steps:
            return 0.0
        return (self.accepted_tokens + self.verify_steps) / self.verify_steps


def add_hists(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Elementwise ``a + b``, the shorter padded with zeros (k may differ between samples)."""
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def depth_accept_rates(hist: Sequence[int]) -> dict[int, float]:
    """Acceptance per draft position from an accepted-count histogram.

    ``rate[i] = sum(hist[i:]) / sum(hist[i-1:])`` for ``i = 1..len(hist)-1``: of the verify
    steps whose drafts 1..i-1 were all accepted, the fraction that also accepted draft i.
    Depths with a zero denominator are omitted. ``[2, 3, 1, 4]`` -> ``{1: 8/10, 2: 5/8, 3: 4/5}``.
    """
    rates = {}
    reached = sum(hist)  # steps that accepted >= i - 1 drafts
    for i in range(1, len(hist)):
        accepted = reached - hist[i - 1]  # steps that accepted >= i drafts
        if reached:
            rates[i] = accepted / reached
        reached = accepted
    return rates


def accept_collapse(history: Sequence[float], current: float, drop: float, window: int) -> bool:
    """True when ``current < (1 - drop) * max(history[-window:])``; False without history."""
    recent = history[-window:]
    return bool(recent) and current < (1.0 - drop) * max(recent)


class SpecMonitor:
    """Tracks acceptance over rollout steps and raises the collapse alert.

    Args:
        accept_drop_alert: relative drop below the running best that counts as a collapse
            (``speculative.accept_drop_alert``, e.g. 0.3).
        window: number of previous steps the running best is taken over.
        min_history: steps that must have been seen before the alert can fire (the first
            steps of a run are noisy and have no meaningful best yet).
    """

    def __init__(self, accept_drop_alert: float, window: int = 10, min_history: int = 3) -> None:
        assert 0.0 < accept_drop_alert < 1.0, accept_drop_alert
        assert window >= 1 and min_history >= 1
        self.accept_drop_alert = accept_drop_alert
        self.window = window
        self.min_history = min_history
        self.history: list[float] = []  # accept length per step that had verify steps
        self.collapsed = False  # whether the last step was in collapse

    @classmethod
    def from_config(cls, spec_cfg: SpeculativeConfig, window: int = 10) -> SpecMonitor:
        return cls(spec_cfg.accept_drop_alert, window=window)

    def update(self, stats: SpecStats, step: int) -> dict[str, float]:
        """Record one rollout step; returns its ``rollout/spec_*`` metrics ({} if no drafting)."""
        if not stats.verify_steps:
            return {}
        length = stats.accept_length
        best = max(self.history[-self.window :], default=length)
        collapse = len(self.history) >= self.min_history and accept_collapse(
            self.history, length, self.accept_drop_alert, self.window
        )
        if collapse and not self.collapsed:
            logger.warning(
                "speculative acceptance collapsed at step %d: accept length %.3f < "
                "(1 - speculative.accept_drop_alert=%.2f) x best %.3f of the last %d steps; "
                "check that the draft weights are synced and trained (speculative.mode)",
                step,
                length,
                self.accept_drop_alert,
                best,
                self.window,
            )
        self.collapsed = collapse
        self.history.append(length)
        metrics = {
            "rollout/spec_accept_rate": stats.accept_rate,
            "rollout/spec_accept_length": length,
            "rollout/spec_accept_length_best": max(best, length),
            "rollout/spec_accept_collapse": float(collapse),
        }
        for depth, rate in depth_accept_rates(stats.accept_hist).items():
            metrics[f"{DEPTH_RATE_PREFIX}{depth}"] = rate
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "collapsed": self.collapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(x) for x in state["history"]]
        self.collapsed = bool(state["collapsed"])
