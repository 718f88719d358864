"""Acceptance metrics (overall and per draft position), the collapse alert on hand-made step
sequences, and how the per-depth rates reach the plots and the speculative bench report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from miles_hydra.backends.local.spec_monitor import (
    SpecMonitor,
    SpecStats,
    accept_collapse,
    add_hists,
    depth_accept_rates,
)
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig


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
    with caplog.at_level(logging.WARNING, logger="miles_hydra.backends.local.spec_monitor"):
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


def test_depth_rates_from_a_hand_built_histogram() -> None:
    # k = 3; 10 verify steps: 2 accepted none, 3 one, 1 two, 4 all three
    assert depth_accept_rates([2, 3, 1, 4]) == pytest.approx({1: 8 / 10, 2: 5 / 8, 3: 4 / 5})
    assert depth_accept_rates([5, 2, 0]) == pytest.approx({1: 2 / 7, 2: 0.0})  # reached, 0 accepted
    assert depth_accept_rates([0, 0, 0]) == {}  # no steps: no denominators
    assert depth_accept_rates([4, 0, 0, 0]) == {1: 0.0}  # depths 2, 3 never reached: left out
    assert depth_accept_rates([]) == {} and depth_accept_rates([7]) == {}  # k = 0


def test_hists_aggregate_elementwise_with_padding_and_empties() -> None:
    assert add_hists([1, 2], [3, 4, 5]) == [4, 6, 5] and add_hists([], []) == []
    outs = [
        SimpleNamespace(
            spec_draft_tokens=9,
            spec_accepted_tokens=4,
            spec_verify_steps=3,
            spec_accept_hist=[1, 1, 0, 1],
        ),
        SimpleNamespace(
            spec_draft_tokens=0, spec_accepted_tokens=0, spec_verify_steps=0, spec_accept_hist=[]
        ),
        SimpleNamespace(
            spec_draft_tokens=6, spec_accepted_tokens=3, spec_verify_steps=2
        ),  # no field
        SimpleNamespace(
            spec_draft_tokens=21,
            spec_accepted_tokens=9,
            spec_verify_steps=7,
            spec_accept_hist=[1, 2, 1, 3],
        ),
    ]
    stats = SpecStats.from_outputs(outs)
    assert stats.accept_hist == [2, 3, 1, 4]
    assert (stats.draft_tokens, stats.accepted_tokens, stats.verify_steps) == (36, 16, 12)
    assert SpecStats.from_outputs([outs[1], outs[2]]).accept_hist == []


def test_update_adds_depth_rates_and_keeps_the_other_metrics() -> None:
    hist = [
        2,
        3,
        1,
        4,
    ]  # consistent counters: 10 steps, 3 drafts each, 0*2+1*3+2*1+3*4 = 17 accepted
    with_hist = SpecStats(draft_tokens=30, accepted_tokens=17, verify_steps=10, accept_hist=hist)
    without = SpecStats(draft_tokens=30, accepted_tokens=17, verify_steps=10)
    metrics = SpecMonitor(0.3).update(with_hist, 0)
    base = SpecMonitor(0.3).update(without, 0)
    assert set(base) == {
        "rollout/spec_accept_rate",
        "rollout/spec_accept_length",
        "rollout/spec_accept_length_best",
        "rollout/spec_accept_collapse",
    }
    assert {k: metrics[k] for k in base} == base
    assert base["rollout/spec_accept_rate"] == pytest.approx(17 / 30)
    assert base["rollout/spec_accept_length"] == pytest.approx(2.7)
    depth = {k: v for k, v in metrics.items() if k not in base}
    assert depth == pytest.approx(
        {
            "rollout/spec_accept_rate_depth1": 0.8,
            "rollout/spec_accept_rate_depth2": 0.625,
            "rollout/spec_accept_rate_depth3": 0.8,
        }
    )
    # the product of the per-depth rates is P(all k accepted) = hist[k] / steps
    assert 0.8 * 0.625 * 0.8 == pytest.approx(4 / 10)
    assert SpecMonitor(0.3).update(SpecStats(accept_hist=[0, 0, 0, 0]), 0) == {}  # no drafting


def test_depth_rates_get_their_own_plot(tmp_path: Path) -> None:
    from miles_hydra.backends.local.metrics import write_plots

    path = tmp_path / "metrics.jsonl"
    records = [
        {
            "step": step,
            "rollout/spec_accept_length": 2.5,
            **{f"rollout/spec_accept_rate_depth{i}": 0.9 - 0.05 * i for i in (1, 2, 10)},
        }
        for step in range(2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    written = {p.name for p in write_plots(path, tmp_path / "plots")}
    assert written == {"speculative.png", "speculative_depth.png"}


@pytest.fixture(scope="module")
def report(bench_import):
    return bench_import("speculative_report")


def _bench_run(mode: str, depth: dict[int, list[float]]) -> dict:
    steps = []
    for i in range(6):
        row = {
            "step": i,
            "tokens": 100.0,
            "rollout_time": 1.0,
            "tok_s": 100.0,
            "accept_length": None if mode == "none" else 2.0,
            "accept_rate": None if mode == "none" else 0.5,
            "mtp_loss": None,
            "reward": 0.5,
            "drift_kl": 0.0,
        }
        row.update({f"accept_rate_depth{d}": rates[i] for d, rates in depth.items()})
        steps.append(row)
    return {
        "num_steps": 0 if mode == "none" else 2,
        "steps": steps,
        "eval": {},
        "wall_s": 1.0,
        "load_before": [0.0],
        "load_after": [0.0],
    }


def test_bench_report_shows_depth_rates_when_logged_and_not_otherwise(report) -> None:
    record = {"rollout/spec_accept_rate_depth1": 0.7, "rollout/spec_accept_rate_depth2": 0.4}
    assert report.depth_rates(record) == {"accept_rate_depth1": 0.7, "accept_rate_depth2": 0.4}
    assert report.depth_rates({"rollout/spec_accept_rate": 0.5}) == {}
    depth = {1: [0.0, 0.0, 0.0, 0.0, 0.8, 0.6], 2: [0.0, 0.0, 0.0, 0.0, 0.5, 0.3]}
    runs = {"none": _bench_run("none", {}), "mtp": _bench_run("mtp", depth)}
    result = {"command": "x", "environment": {"seed": 1}, "runs": runs}
    assert report.summarize(runs["mtp"])["accept_rate_depth_last"] == pytest.approx(
        {1: 0.7, 2: 0.4}
    )
    text = report.render_report(result)
    assert "| mode | depth 1 | depth 2 |" in text and "| frozen | 0.700 | 0.400 |" in text
    old = {"command": "x", "environment": {"seed": 1}, "runs": {"mtp": _bench_run("mtp", {})}}
    assert "depth 1" not in report.render_report(old)  # results from before the metric
    averaged = report.average_seeds(
        [result, old | {"runs": {**runs, "mtp": _bench_run("mtp", {})}}]
    )
    assert averaged["runs"]["mtp"]["steps"][5]["accept_rate_depth1"] is None  # one seed lacks it
