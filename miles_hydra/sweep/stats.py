"""Seed aggregation and ranking of sweep variants (pure functions, no files).

Variants that differ only by ``seed`` form one *group*. A group's value is the mean of its
variants' final metrics with a 95% confidence interval (Student's t, ``n - 1`` degrees of
freedom); ``n`` counts the seeds that finished. The leader is *named* only when it is better
than every other group beyond noise: its interval does not overlap theirs. Groups whose
interval overlaps the leader's are *tied* with it. With one seed per group there is no noise
estimate: values equal to the leader's are ties, and a named best is marked untested.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

SEED_KEY = "seed"  # the swept key whose variants are aggregated, not compared
FINISHED = ("completed",)  # states whose final value counts toward a group's mean
REL_EQUAL = 1e-9  # values closer than this (relative) are equal


@dataclass
class Group:
    """Variants that differ only by seed."""

    params: dict[str, str]  # swept key -> value, seed excluded
    nums: list[int]  # its variants
    values: list[float] = field(default_factory=list)  # final metric of each finished variant
    partial: bool = False  # no variant finished: values are the running variants' latest

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def half_width(self) -> float | None:
        """Half the 95% confidence interval of the mean; None below two values."""
        if self.n < 2:
            return None
        return t_quantile(0.975, self.n - 1) * statistics.stdev(self.values) / math.sqrt(self.n)

    @property
    def ci(self) -> tuple[float, float] | None:
        if self.mean is None or self.half_width is None:
            return None
        return (self.mean - self.half_width, self.mean + self.half_width)


@dataclass
class Ranking:
    """The groups in rank order and what can be said about the leader."""

    order: list[Group]  # groups with a value, best first
    ties: list[Group]  # groups tied with the leader (the leader included), if any
    best: Group | None  # the leader, when better than every other group beyond noise
    tested: bool  # the leader's lead was tested against noise (every group has n >= 2)
    provisional: bool  # no group has a finished variant: ranked on running variants


def t_quantile(q: float, dof: int) -> float:
    """Student's t quantile (scipy, a dependency of optuna)."""
    from scipy.stats import t

    return float(t.ppf(q, dof))


def group_key(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in params.items() if k != SEED_KEY)


def make_groups(rows: list[tuple[int, dict[str, str], str, float | None]]) -> list[Group]:
    """Group ``(num, params, state, final)`` rows by their params without the seed.

    A group's values are its finished variants' finals; a group none of whose variants finished
    takes its running/preempted variants' latest values, marked partial."""
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    latest: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for num, params, state, final in rows:
        key = group_key(params)
        group = groups.setdefault(key, Group(params=dict(key), nums=[]))
        group.nums.append(num)
        if final is None:
            continue
        if state in FINISHED:
            group.values.append(final)
        elif state in ("running", "preempted"):
            latest.setdefault(key, []).append(final)
    for key, group in groups.items():
        if not group.values and latest.get(key):
            group.values, group.partial = latest[key], True
    return list(groups.values())


def rank(groups: list[Group], mode: str) -> Ranking:
    """Order groups by mean (``mode`` max or min) and decide whether the leader is the best."""
    finished = [g for g in groups if g.values and not g.partial]
    provisional = not finished
    pool = finished or [g for g in groups if g.values]
    sign = -1.0 if mode == "max" else 1.0
    order = sorted(pool, key=lambda g: (sign * (g.mean or 0.0), g.nums[0]))
    if not order:
        return Ranking([], [], None, False, provisional)
    leader = order[0]
    ties = [leader] + [g for g in order[1:] if _tied(leader, g)]
    tested = all(g.n >= 2 for g in order)
    if len(ties) > 1:
        return Ranking(order, ties, None, tested, provisional)
    return Ranking(order, [], leader, tested, provisional)


def _tied(a: Group, b: Group) -> bool:
    """Intervals overlap; without intervals, equal means."""
    assert a.mean is not None and b.mean is not None
    if a.ci is not None and b.ci is not None:
        return a.ci[0] <= b.ci[1] and b.ci[0] <= a.ci[1]
    if a.ci is not None or b.ci is not None:  # one interval: the other's mean inside it
        lo, hi = a.ci or b.ci  # type: ignore[misc]
        other = b.mean if a.ci is not None else a.mean
        return lo <= other <= hi
    scale = max(abs(a.mean), abs(b.mean), 1e-300)
    return abs(a.mean - b.mean) <= REL_EQUAL * scale
