"""The sweep report on hand-made sweep directories: rollout steps, seeds aggregated with 95%
confidence intervals, ties flagged instead of ranked, running/failed/pending marked."""

import csv
import json
import math
from pathlib import Path

import pytest

from miles_hydra.sweep.manifest import Manifest, Variant, write_status
from miles_hydra.sweep.report import main, report
from miles_hydra.sweep.report_plots import band
from miles_hydra.sweep.stats import Group, make_groups, rank, t_quantile


def _make_run(
    sweep: Path, num: int, finals: list[float], state: str | None, warm_start: bool = False
) -> None:
    """Records as the local engine writes them: an eval before the warm-start (eval/step -1),
    the warm-start summary, one rollout record per step and an eval record after every
    rollout (eval/step = rollouts done)."""
    run = sweep / str(num)
    run.mkdir(parents=True)
    records: list[dict] = []
    if warm_start:
        records += [{"eval/step": -1, "eval/arithmetic": 0.99}, {"warmup/steps": 10}]
    for i, v in enumerate(finals):
        records.append({"step": i, "rollout/raw_reward": v / 2})
        records.append({"eval/step": i + 1, "eval/arithmetic": v})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if state:
        write_status(run, state)


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    variants = [
        Variant(0, ["algorithm.lr=1e-4", "algorithm.correction.upper=2"], "0"),
        Variant(1, ["algorithm.lr=1e-3", "algorithm.correction.upper=2"], "1"),
        Variant(2, ["algorithm.lr=1e-2", "algorithm.correction.upper=2"], "2"),
        Variant(3, ["algorithm.lr=1e-2", "algorithm.correction.upper=5"], "3"),
    ]
    Manifest("s1", "exp", ["algorithm.lr", "algorithm.correction.upper"], variants).write(sweep)
    _make_run(sweep, 0, [0.1, 0.2, 0.3], "completed")
    _make_run(sweep, 1, [0.1, 0.5, 0.7], "completed")
    _make_run(sweep, 2, [0.1, 0.9], "failed")  # best value, but failed: not the winner
    return sweep  # variant 3 never started: pending


def _seeded_sweep(tmp_path: Path, finals: dict[tuple[str, int], float]) -> Path:
    """lr x seed: finals[(lr, seed)] is the variant's last eval."""
    sweep = tmp_path / "sweep"
    variants = [
        Variant(i, [f"algorithm.lr={lr}", f"seed={seed}"], str(i))
        for i, (lr, seed) in enumerate(finals)
    ]
    Manifest("s", "exp", ["algorithm.lr", "seed"], variants).write(sweep)
    for i, value in enumerate(finals.values()):
        _make_run(sweep, i, [value / 2, value], "completed", warm_start=True)
    return sweep


def test_report_ranks_completed_variants_and_marks_failed_and_pending(tmp_path):
    summary = report(_sweep(tmp_path))
    assert summary["metric"] == "eval/arithmetic"
    assert summary["best"] == {
        "variants": [1],
        "params": {"algorithm.lr": "1e-3", "algorithm.correction.upper": "2"},
        "value": 0.7,
        "ci95": None,
        "n": 1,
    }
    assert summary["tested"] is False  # one seed per setting: the lead is not tested
    assert "not tested against noise" in summary["verdict"]
    assert summary["states"] == {"completed": 2, "failed": 1, "pending": 1}
    out = tmp_path / "sweep" / "report"
    rows = list(csv.reader((out / "summary.csv").open()))
    assert rows[0] == [
        "variant",
        "algorithm.lr",
        "algorithm.correction.upper",
        "state",
        "rollouts",
        "at rollout",
        "eval/arithmetic",
        "final",
        "verdict",
    ]
    assert rows[2] == ["1", "1e-3", "2", "completed", "3", "3", "0.7", "yes", "best"]
    assert rows[3] == ["2", "1e-2", "2", "failed", "2", "2", "0.9", "latest", ""]
    assert rows[4] == ["3", "1e-2", "5", "pending", "0", "", "", "", ""]
    assert "| 2 | 1e-2 | 2 | failed | 2 | 2 | 0.9 | latest |  |" in (out / "summary.md").read_text()
    for name in (
        "curves.png",
        "final_vs_algorithm_lr.png",
        "final_vs_algorithm_correction_upper.png",
        "heatmap.png",  # a 2-D grid
    ):
        assert (out / name).stat().st_size > 1000


def test_steps_are_rollouts_not_line_numbers(tmp_path):
    """20 rollouts with warm-start and evals make 42 lines; the report says 20 rollouts, and
    the eval before the warm-start is no result."""
    sweep = tmp_path / "sweep"
    Manifest("s", "exp", ["algorithm.lr"], [Variant(0, ["algorithm.lr=1e-3"], "0")]).write(sweep)
    _make_run(sweep, 0, [0.05 * i for i in range(1, 21)], "completed", warm_start=True)
    summary = report(sweep)
    row = list(csv.reader((sweep / "report" / "summary.csv").open()))[1]
    assert row[2:6] == ["completed", "20", "20", "1"]  # 20 rollouts, final eval at rollout 20
    curve_x = report(sweep, metric="rollout/raw_reward")["groups"][0]
    assert curve_x["value"] == pytest.approx(0.5)  # the last rollout record (step 19), /2
    assert summary["groups"][0]["value"] == pytest.approx(1.0)


def test_running_variant_shows_its_latest_not_the_pre_warm_start_eval(tmp_path):
    sweep = tmp_path / "sweep"
    variants = [Variant(0, ["algorithm.lr=1e-3"], "0"), Variant(1, ["algorithm.lr=2e-3"], "1")]
    Manifest("s", "exp", ["algorithm.lr"], variants).write(sweep)
    _make_run(sweep, 0, [], "running", warm_start=True)  # only the pre-warm-start eval so far
    _make_run(sweep, 1, [0.3, 0.4], "running", warm_start=True)
    summary = report(sweep)
    rows = list(csv.reader((sweep / "report" / "summary.csv").open()))
    assert rows[1] == ["0", "1e-3", "running", "0", "", "", "", ""]
    assert rows[2] == ["1", "2e-3", "running", "2", "2", "0.4", "latest", "best"]
    assert summary["provisional"] is True
    assert summary["verdict"].startswith("Provisional (no variant finished)")


def test_seeds_are_aggregated_with_a_t_interval(tmp_path):
    finals = {("1e-3", 1): 0.50, ("1e-3", 2): 0.60, ("1e-3", 3): 0.70}
    finals |= {("3e-3", 1): 0.10, ("3e-3", 2): 0.12, ("3e-3", 3): 0.14}
    summary = report(_seeded_sweep(tmp_path, finals))
    best = summary["best"]
    assert best["params"] == {"algorithm.lr": "1e-3"} and best["n"] == 3
    assert best["variants"] == [0, 1, 2]
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert best["value"] == pytest.approx(0.6)
    assert best["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    assert summary["tested"] is True and summary["ties"] == []
    assert "beyond the 95% intervals" in summary["verdict"]
    groups = list(csv.reader((tmp_path / "sweep" / "report" / "groups.csv").open()))
    assert groups[0][:3] == ["algorithm.lr", "n", "mean eval/arithmetic"]
    assert groups[1][0:3] == ["1e-3", "3", "0.6"] and groups[1][-2:] == ["1", "best"]
    assert groups[2][-2:] == ["2", ""]


def test_overlapping_intervals_are_a_tie_and_no_best_is_named(tmp_path, capsys):
    finals = {("1e-3", 1): 0.50, ("1e-3", 2): 0.60, ("1e-3", 3): 0.70}
    finals |= {("3e-3", 1): 0.45, ("3e-3", 2): 0.58, ("3e-3", 3): 0.66}
    finals |= {("1e-2", 1): 0.01, ("1e-2", 2): 0.02, ("1e-2", 3): 0.03}
    sweep = _seeded_sweep(tmp_path, finals)
    assert main([str(sweep)]) == 0
    summary = json.loads((sweep / "report" / "best.json").read_text())
    assert summary["best"] is None
    assert [t["params"]["algorithm.lr"] for t in summary["ties"]] == ["1e-3", "3e-3"]
    assert (
        "No best: 2 settings tie within their 95% confidence intervals" in capsys.readouterr().out
    )
    groups = list(csv.reader((sweep / "report" / "groups.csv").open()))
    assert [g[-1] for g in groups[1:]] == ["tie", "tie", ""]


def test_equal_single_seed_values_are_a_tie_not_ranked_by_order(tmp_path):
    sweep = tmp_path / "sweep"
    variants = [
        Variant(i, [f"algorithm.correction.upper={u}"], str(i)) for i, u in enumerate("125")
    ]
    Manifest("s", "exp", ["algorithm.correction.upper"], variants).write(sweep)
    for i in range(3):
        _make_run(sweep, i, [0.3, 0.5], "completed")
    summary = report(sweep)
    assert summary["best"] is None and len(summary["ties"]) == 3
    assert "3 settings tie with equal values" in summary["verdict"]


def test_stats_units():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062047)
    rows = [(0, {"lr": "1", "seed": "1"}, "completed", 1.0)]
    rows += [(1, {"lr": "1", "seed": "2"}, "failed", 9.0)]  # a failed seed does not count
    rows += [(2, {"lr": "2", "seed": "1"}, "running", 0.5)]
    groups = make_groups(rows)
    assert [(g.params, g.nums, g.values, g.partial) for g in groups] == [
        ({"lr": "1"}, [0, 1], [1.0], False),
        ({"lr": "2"}, [2], [0.5], True),
    ]
    ranking = rank(groups, "min")  # partial groups are not ranked while another finished
    assert ranking.order == [groups[0]] and ranking.best is groups[0]
    one_ci = [Group({"a": "1"}, [0], [1.0, 2.0, 3.0]), Group({"a": "2"}, [1], [2.5])]
    assert rank(one_ci, "max").ties == one_ci[::-1]  # 2.5 leads, inside [1, 3]'s interval


def test_band_is_mean_and_t_interval_per_rollout():
    points = band([[(0, 1.0), (1, 2.0)], [(0, 3.0), (1, 2.0)], [(0, 2.0)]])
    assert points[0][:2] == (0, 2.0)
    assert points[0][3] - 2.0 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert points[1] == (1, 2.0, 2.0, 2.0)


def test_report_metric_and_mode_flags(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert main([str(sweep), "--metric", "rollout/raw_reward", "--mode", "min"]) == 0
    out = capsys.readouterr().out
    assert "Best (min rollout/raw_reward): algorithm.lr=1e-4 algorithm.correction.upper=2" in out
    assert "pending=1" in out


def test_last_n_points_are_averaged_into_the_value(tmp_path, capsys):
    sweep = _sweep(tmp_path)  # rewards per rollout: 0.05 0.1 0.15 (lr 1e-4); 0.05 0.25 0.35 (1e-3)
    assert main([str(sweep), "--metric", "rollout/raw_reward", "--last", "2"]) == 0
    out = capsys.readouterr().out
    metric = "rollout/raw_reward (mean of last 2)"
    assert f"Best (max {metric}): algorithm.lr=1e-3 algorithm.correction.upper=2 -> 0.3 " in out
    row = next(r for r in csv.reader(open(sweep / "report" / "summary.csv")) if r[0] == "0")
    assert row[5:7] == ["2", "0.125"]  # at rollout 2: the mean of 0.1 and 0.15
    assert main([str(sweep), "--last", "0"]) == 2


def test_report_without_manifest_discovers_hydra_job_dirs(tmp_path):
    sweep = tmp_path / "multirun"
    for num, lr in enumerate(["0.1", "0.2"]):
        _make_run(sweep, num, [float(lr)], "completed")
        hydra_dir = sweep / str(num) / ".hydra"
        hydra_dir.mkdir()
        (hydra_dir / "overrides.yaml").write_text(f"- algorithm.lr={lr}\n- mode=run\n")
    summary = report(sweep)
    assert summary["best"]["variants"] == [1]
    assert summary["best"]["params"] == {"algorithm.lr": "0.2"}


def test_report_on_a_missing_directory_fails_cleanly(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err
