"""The multirun launcher: all-or-nothing validation, one directory per variant, manifests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_invalid_variant_means_nothing_runs(tmp_path):
    proc = _launch(
        "-m",
        "algorithm.lr=1e-3,-1",
        "rollout.global_batch_size=32,7",
        "mode=plan",
        f"output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "3 of 4 sweep variants are invalid; nothing was submitted" in proc.stderr
    assert "variant #2 (algorithm.lr=-1 rollout.global_batch_size=32" in proc.stderr
    assert "rollout.global_batch_size=7 breaks the batch invariant" in proc.stderr
    assert "algorithm.lr=-1.0 must be > 0" in proc.stderr
    assert not list(tmp_path.rglob("sweep.json"))
    assert "resolved config" not in proc.stdout  # no variant ran


def test_a_value_hydra_refuses_gets_our_message_and_leaves_no_sweep_dir(tmp_path):
    proc = _launch(
        "-m", "algorithm.lr=1e-4,abc", "mode=plan", f"output_root={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "1 of 2 sweep variants are invalid; nothing was submitted" in proc.stderr
    assert "variant #1 (algorithm.lr=abc " in proc.stderr
    assert "algorithm.lr='abc' is refused by Hydra: Value 'abc' of type 'str'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # no sweep dir, no multirun.yaml


@pytest.mark.slow
def test_three_launches_in_the_same_second_get_three_group_dirs(tmp_path):
    args = [sys.executable, str(REPO / "launch.py"), "-m", "mode=plan", f"output_root={tmp_path}"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    manifests = list(tmp_path.rglob("sweep.json"))
    assert len({m.parent for m in manifests}) == 3  # one sweep dir each, none shared
    for manifest in manifests:  # each holds its own launch's variant only
        assert [v["num"] for v in json.loads(manifest.read_text())["variants"]] == [0]


def test_typo_in_one_variant_is_refused_before_anything_runs(tmp_path):
    proc = _launch(
        "-m", "model=tiny_dense,tiny_dnese", "mode=plan", f"output_root={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "tiny_dnese" in proc.stderr
    assert "resolved config" not in proc.stdout


def test_sweep_preset_expands_to_its_grid_with_one_dir_per_variant(tmp_path):
    proc = _launch("-m", "+sweep=lr_tis", "mode=plan", f"output_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (manifest_path,) = tmp_path.rglob("sweep.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["experiment_name"] == "lr_tis"
    assert manifest["swept"] == ["algorithm.lr", "algorithm.correction.upper"]
    assert [v["num"] for v in manifest["variants"]] == list(range(6))
    dirs = {v["run_dir"] for v in manifest["variants"]}
    assert len(dirs) == 6  # variants never share a directory
    for d in dirs:
        assert (manifest_path.parent / d / ".hydra" / "overrides.yaml").exists()
    assert proc.stdout.count("resolved config") == 6
    assert "correction:\n    kind: tis" in proc.stdout
