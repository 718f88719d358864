"""The sweep report on hand-made sweep directories (complete, partial, failed)."""

import json
from pathlib import Path

from miles_hydra.sweep.manifest import Manifest, Variant, write_status
from miles_hydra.sweep.report import main, report


def _make_run(sweep: Path, num: int, finals: list[float], state: str | None) -> None:
    run = sweep / str(num)
    run.mkdir(parents=True)
    lines = [
        json.dumps({"step": i, "eval/arithmetic": v, "rollout/raw_reward": v / 2})
        for i, v in enumerate(finals)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
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


def test_report_ranks_completed_variants_and_marks_failed_and_pending(tmp_path):
    summary = report(_sweep(tmp_path))
    assert summary["metric"] == "eval/arithmetic"
    assert summary["best"] == {
        "variant": 1,
        "params": {"algorithm.lr": "1e-3", "algorithm.correction.upper": "2"},
        "value": 0.7,
    }
    assert summary["states"] == {"completed": 2, "failed": 1, "pending": 1}
    out = tmp_path / "sweep" / "report"
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert (
        csv_lines[0]
        == "variant,algorithm.lr,algorithm.correction.upper,state,steps,final eval/arithmetic,best"
    )
    assert csv_lines[2] == "1,1e-3,2,completed,2,0.7,*"
    assert csv_lines[4] == "3,1e-2,5,pending,,,"
    assert "| 2 | 1e-2 | 2 | failed | 1 | 0.9 |  |" in (out / "summary.md").read_text()
    for name in (
        "curves.png",
        "final_vs_algorithm_lr.png",
        "final_vs_algorithm_correction_upper.png",
    ):
        assert (out / name).stat().st_size > 1000


def test_report_metric_and_mode_flags(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert main([str(sweep), "--metric", "rollout/raw_reward", "--mode", "min"]) == 0
    out = capsys.readouterr().out
    assert "best (min rollout/raw_reward): variant 0 " in out
    assert "pending=1" in out


def test_report_without_manifest_discovers_hydra_job_dirs(tmp_path):
    sweep = tmp_path / "multirun"
    for num, lr in enumerate(["0.1", "0.2"]):
        _make_run(sweep, num, [float(lr)], "completed")
        hydra_dir = sweep / str(num) / ".hydra"
        hydra_dir.mkdir()
        (hydra_dir / "overrides.yaml").write_text(f"- algorithm.lr={lr}\n- mode=run\n")
    summary = report(sweep)
    assert summary["best"]["variant"] == 1
    assert summary["best"]["params"] == {"algorithm.lr": "0.2"}


def test_report_on_a_missing_directory_fails_cleanly(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err
