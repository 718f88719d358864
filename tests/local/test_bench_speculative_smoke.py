"""CPU smoke test of bench/bench_speculative.py: a 2-rollout RL run per speculative mode (none,
frozen MTP draft, online MTP draft) from one shared warm-start, driver actors in-process (the
Ray path of the driver is covered by test_driver.py); checks the report's table, ratios and
per-step curves, the PNG, and that both drafts start identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench(bench_import):
    return bench_import("bench_speculative")


def test_partial_credit_reward(bench) -> None:
    assert bench.sorting_partial_credit("sort 312:", "123", "123") == 1.0
    assert bench.sorting_partial_credit("sort 312:", "132", "123") == pytest.approx(1 / 3)
    assert bench.sorting_partial_credit("sort 312:", "1234", "123") == 0.75
    assert bench.sorting_partial_credit("sort 312:", "", "123") == 0.0


@pytest.mark.timeout(120)
def test_smoke_run_reports_table_ratios_and_curves(bench, tmp_path: Path) -> None:
    # A subprocess: the in-process Ray stand-in must not leak into later tests of this session.
    argv = ["--preset", "smoke", "--device", "cpu", "--actors", "inproc", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_speculative.py"), *argv],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for label in ("none", "frozen", "online"):
        assert f"| {label} |" in report
    for ratio in ("frozen/none", "online/none", "online/frozen"):
        assert f"| {ratio} |" in report
    header = "| step | tok/s none | tok/s frozen | tok/s online | accept len frozen"
    assert header in report
    curves = report[report.index(header) :].splitlines()[2:]
    assert [row.split(" | ")[0] for row in curves if row] == ["| 0", "| 1"]
    assert "frozen / online hit (final policy)" in report  # same-sample draft check
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "warm_start" / "draft.safetensors").is_file()

    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert set(runs) == {"none", "mtp", "mtp_online"}
    for mode, run in runs.items():
        assert [s["step"] for s in run["steps"]] == [0, 1]
        assert all(s["tok_s"] > 0 and s["drift_kl"] is not None for s in run["steps"])
        assert all((s["accept_length"] is None) == (mode == "none") for s in run["steps"])
        assert all((s["mtp_loss"] is None) == (mode != "mtp_online") for s in run["steps"])
    # Same warm-start, weights and sampler seed: rollout 0 of both drafts is the same.
    frozen, online = runs["mtp"]["steps"][0], runs["mtp_online"]["steps"][0]
    assert frozen["accept_rate"] == online["accept_rate"]
    assert frozen["tokens"] == online["tokens"]
    check = runs["mtp_online"]["draft_check"]
    assert 0.0 <= check["final_policy"]["frozen_hit"] <= 1.0
    assert 0.0 <= check["final_policy"]["online_hit"] <= 1.0
    assert set(check["warm_policy"]) == {"frozen_hit", "frozen_ce"}
    assert "inproc" in proc.stdout + report


def test_descending_target_rewards_reversed_order(bench) -> None:
    assert bench.sorting_descending_partial_credit("sort 312:", "321", "123") == 1.0
    assert bench.sorting_descending_partial_credit("sort 312:", "123", "123") == pytest.approx(
        1 / 3
    )
    args = bench.parse_args(["--target", "descending", "--preset", "smoke"])
    cfg = bench.compose_run_config(bench.base_overrides(args, bench.PRESETS["smoke"]))
    assert cfg.reward.custom_rm_path == "bench_speculative:sorting_descending_partial_credit"
    args = bench.parse_args(["--preset", "smoke"])
    cfg = bench.compose_run_config(bench.base_overrides(args, bench.PRESETS["smoke"]))
    assert cfg.reward.custom_rm_path == "bench_speculative:sorting_partial_credit"
