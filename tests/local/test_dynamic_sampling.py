"""Dynamic sampling with over-sampling: the filters, and the collector's keep/drop bookkeeping
(a dropped group never reaches the trainer, extra rounds are bounded, metrics add up)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine, FakeSource

from miles_hydra.backends.local.collector import RolloutCollector
from miles_hydra.backends.local.sampling_filters import (
    GroupSample,
    build_filter,
    nonzero_std,
)
from miles_hydra.config.rollout import DynamicSampling, RolloutConfig
from miles_hydra.errors import ConfigError


def label_reward(prompt, response: list[int]) -> float:
    """Prompts k % 3 == 0 are 'mixed' (reward by response parity), the rest always fail."""
    if prompt.label % 3 == 0:
        return float(len(response) % 2 == 0)
    return 0.0


def make(**overrides) -> tuple[RolloutCollector, FakeEngine, FakeSource]:
    cfg = dict(
        rollout_batch_size=4,
        n_samples_per_prompt=4,
        rollout_max_response_len=40,
        dynamic_sampling=DynamicSampling.nonzero_std,
        over_sampling_batch_size=8,
    )
    r = RolloutConfig(**{**cfg, **overrides})
    engine, source = FakeEngine(1), FakeSource()
    return RolloutCollector(r, source.next_batch, engine.generate, label_reward), engine, source


def test_nonzero_std_filter() -> None:
    def group(*rewards: float) -> list[GroupSample]:
        return [GroupSample(r, 3, False) for r in rewards]

    assert nonzero_std(group(0, 1, 0, 0)).keep
    dropped = nonzero_std(group(1, 1, 1, 1))
    assert not dropped.keep and dropped.reason == "zero_std_1.0"  # miles' reason
    assert nonzero_std(group(0.0, 0.0)).reason == "zero_std_0.0"


def test_dropped_groups_never_reach_the_trainer() -> None:
    c, _, source = make()
    seen_trained: set[int] = set()
    for version in range(5):
        out = c.collect(version)
        assert len(out.batch) == 16 and len(out.uids) == 4
        for g in range(4):  # every trained group has reward variance
            rewards = out.batch.rewards[4 * g : 4 * g + 4]
            assert max(rewards) > min(rewards)
        assert all(uid % 3 == 0 for uid in out.uids)  # only 'mixed' prompts can pass
        assert not seen_trained & set(out.uids)
        seen_trained |= set(out.uids)
        m = out.metrics
        judged = (
            m["rollout/dynamic_filter/kept_groups"] + m["rollout/dynamic_filter/dropped_groups"]
        )
        assert m["rollout/dynamic_filter/kept_groups"] == 4
        assert m["rollout/dynamic_filter/drop_ratio"] == pytest.approx(
            m["rollout/dynamic_filter/dropped_groups"] / judged
        )
        assert m["rollout/dynamic_filter/drop_zero_std_0.0"] >= 1
    assert source.count >= 3 * len(seen_trained) - 2  # over-sampled to find them


def test_rounds_are_bounded_and_a_short_batch_is_trained() -> None:
    c, engine, _ = make(dynamic_sampling_max_rounds=1, over_sampling_batch_size=4)
    out = c.collect(0)
    assert len(engine.calls) == 1
    assert out.metrics["rollout/dynamic_filter/rounds"] == 1
    kept = out.metrics["rollout/dynamic_filter/kept_groups"]
    assert kept < 4 and out.metrics["rollout/dynamic_filter/short_groups"] == 4 - kept
    assert len(out.batch) == 4 * kept


def test_without_partial_rollout_the_aborted_groups_are_discarded() -> None:
    c, _, _ = make()
    out = c.collect(0)
    assert c.paused == [] and "rollout/aborted/discarded_groups" in out.metrics


def test_custom_filter_is_called_like_miles(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_filters.py").write_text(
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Out:\n"
        "    keep: bool\n"
        "    reason: str = None\n"
        "def thirds(args, samples, **kwargs):\n"
        "    assert args.n_samples_per_prompt == len(samples)\n"
        "    total = sum(s.response_length for s in samples)\n"
        "    return Out(total % 3 == 0, None if total % 3 == 0 else 'not_thirds')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    c, _, _ = make(
        dynamic_sampling=DynamicSampling.custom,
        dynamic_sampling_filter_path="my_filters:thirds",
    )
    out = c.collect(0)
    lengths = [len(x) for x in out.batch.response_ids]
    assert len(lengths) == 16
    assert all(sum(lengths[g : g + 4]) % 3 == 0 for g in range(0, 16, 4))
    assert out.metrics["rollout/dynamic_filter/drop_not_thirds"] >= 1
    sys.modules.pop("my_filters", None)


def test_unloadable_custom_filter_names_the_key() -> None:
    r = RolloutConfig(
        dynamic_sampling=DynamicSampling.custom,
        dynamic_sampling_filter_path="no_such_module_xyz:keep",
    )
    with pytest.raises(ConfigError) as info:
        build_filter(r)
    assert info.value.key == "rollout.dynamic_sampling_filter_path"
