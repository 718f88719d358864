"""Acceptance metrics and the collapse alert on hand-made step sequences."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from miles_hydra.config.speculative import SpecMode, SpeculativeConfig
from miles_hydra.engine.spec_monitor import SpecMonitor, SpecStats, accept_collapse


def _stats_for_length(length: float, steps: int = 100, num_steps: int = 3) -> SpecStats:
    """Counters of `steps` verify steps whose accept length is `length`."""
    accepted = round((length - 1.0) * steps)
    return SpecStats(draft_tokens=num_steps * steps, accepted_tokens=accepted, verify_steps=steps)


def test_stats_from_outputs_and_formulas() -> None:
    outs = [
        SimpleNamespace(spec_draft_tokens=6, spec_accepted_tokens=4, spec_verify_steps=3),
        SimpleNamespace(spec_draft_tokens=4, spec_accepted_tokens=1, spec_verify_steps=2),
    ]
    stats = SpecStats.from_outputs(outs)
    assert (stats.draft_tokens, stats.accepted_tokens, stats.verify_steps) == (10, 5, 5)
    assert stats.accept_rate == pytest.approx(0.5)
    assert stats.accept_length == pytest.approx((5 + 5) / 5)
    assert SpecStats().accept_rate == 0.0 and SpecStats().accept_length == 0.0


def test_accept_collapse_rule() -> None:
    assert not accept_collapse([], 1.0, 0.3, 5)
    assert accept_collapse([2.0, 3.0, 2.5], 2.0, 0.3, 5)  # 2.0 < 0.7 * 3.0
    assert not accept_collapse([2.0, 3.0, 2.5], 2.2, 0.3, 5)  # 2.2 >= 2.1
    assert not accept_collapse([3.0, 1.0, 1.0], 1.0, 0.3, 2)  # the 3.0 is out of the window


def test_steady_and_slowly_drifting_runs_never_alert() -> None:
    monitor = SpecMonitor(0.3, window=5)
    lengths = [2.0, 2.2, 2.5, 2.4, 2.6, 2.5, 2.3, 2.2, 2.1, 2.0, 1.9, 1.8]  # gradual decline
    flags = [
        monitor.update(_stats_for_length(x), step)["rollout/spec_accept_collapse"]
        for step, x in enumerate(lengths)
    ]
    assert flags == [0.0] * len(lengths)


def test_sharp_drop_alerts_once_and_sets_metric(caplog: pytest.LogCaptureFixture) -> None:
    cfg = SpeculativeConfig(mode=SpecMode.mtp_online, accept_drop_alert=0.3)
    monitor = SpecMonitor.from_config(cfg, window=4)
    lengths = [2.6, 2.8, 2.9, 2.8, 1.2, 1.1, 1.1, 1.1, 1.1, 1.1]  # draft stops being synced
    with caplog.at_level(logging.WARNING, logger="miles_hydra.engine.spec_monitor"):
        metrics = [monitor.update(_stats_for_length(x), step) for step, x in enumerate(lengths)]
    flags = [m["rollout/spec_accept_collapse"] for m in metrics]
    # collapsed while the pre-collapse best (2.9) is inside the 4-step window, then re-baselined
    assert flags == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "step 4" in warnings[0].getMessage()
    assert metrics[4]["rollout/spec_accept_length"] == pytest.approx(1.2)
    assert metrics[4]["rollout/spec_accept_length_best"] == pytest.approx(2.9)
    assert metrics[4]["rollout/spec_accept_rate"] == pytest.approx(0.2 / 3)


def test_no_alert_before_min_history_and_no_metrics_without_drafting() -> None:
    monitor = SpecMonitor(0.3, window=10, min_history=3)
    assert monitor.update(SpecStats(), 0) == {}
    first = [
        monitor.update(_stats_for_length(x), s)["rollout/spec_accept_collapse"]
        for s, x in enumerate([3.0, 1.0])
    ]
    assert first == [0.0, 0.0]  # too early to judge
    assert monitor.update(_stats_for_length(1.0), 2)["rollout/spec_accept_collapse"] == 0.0
    assert monitor.update(_stats_for_length(1.0), 3)["rollout/spec_accept_collapse"] == 1.0


def test_state_round_trip_keeps_the_running_best() -> None:
    monitor = SpecMonitor(0.3, window=5)
    for step, x in enumerate([2.8, 2.9, 2.7]):
        monitor.update(_stats_for_length(x), step)
    resumed = SpecMonitor(0.3, window=5)
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.update(_stats_for_length(1.5), 3)["rollout/spec_accept_collapse"] == 1.0
