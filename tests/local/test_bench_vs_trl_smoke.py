"""CPU smoke test of bench/bench_vs_trl.py: our side end to end at a tiny size (warm-start saved
as an HF dir, the driver's RL loop with its actors in-process, per-step rows, summary, table),
the summary/equal-wall arithmetic on known rows, and the TRL side's character tokenizer against
ours. The TRL run itself is benchmark-only: its test runs only where trl is installed."""

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
    return bench_import("bench_vs_trl")


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    # A subprocess: the in-process Ray stand-in must not leak into later tests of this session.
    return subprocess.run(
        [sys.executable, str(BENCH / "bench_vs_trl.py"), "--preset", "smoke", "--device", "cpu"]
        + ["--out", str(tmp_path), *argv],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.timeout(180)
def test_our_side_runs_end_to_end(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--sides", "ours", "--in-process")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "vs_trl.json").read_text())
    assert (
        json.loads((tmp_path / "warm_start" / "config.json").read_text())["num_hidden_layers"] == 2
    )
    assert result["warm_start"]["warmup/sft_loss_last"] > 0
    ours = result["sides"]["ours"]
    steps = result["workload"]["ours_steps"]
    assert [r["step"] for r in ours["rows"]] == list(range(steps))
    for row in ours["rows"]:
        assert row["wall_s"] >= row["rollout_s"] > 0 and row["train_s"] > 0
        assert 0.0 <= row["reward"] <= 1.0 and row["response_len"] > 0
    elapsed = [r["elapsed_s"] for r in ours["rows"]]
    assert elapsed == sorted(elapsed)
    summary = ours["summary"]
    samples = result["workload"]["samples"]
    assert summary["samples_per_s"] == pytest.approx(samples * steps / elapsed[-1])
    assert summary["steps"] == steps and summary["startup_s"] > 0
    # the run used the shared warm-start, no warm-start of its own
    assert f"model.hf_checkpoint={tmp_path / 'warm_start'}" in result["our_overrides"]
    assert "| ours (`backend.device=cuda`) | " in (tmp_path / "vs_trl.md").read_text()


def _rows(walls: list[float], rewards: list[float], **parts: float) -> list[dict]:
    rows, elapsed = [], 0.0
    for i, (wall, reward) in enumerate(zip(walls, rewards)):
        elapsed += wall
        rows.append(
            {"step": i, "wall_s": wall, "elapsed_s": elapsed, "reward": reward}
            | {"response_len": 4.0, **parts}
        )
    return rows


def test_summary_ratios_and_reward_at_equal_wall(bench) -> None:
    ours = {"rows": _rows([3.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5], rollout_s=0.2)}
    trl = {"rows": _rows([4.0, 2.0, 2.0], [0.1, 0.2, 0.9], rollout_s=1.5, train_s=0.4)}
    result = {"workload": {"prompts": 2, "group": 4, "max_new": 8}, "sides": {}}
    for name, side in (("ours", ours), ("trl", trl)):
        side["summary"] = bench.summarize(side, samples=8)
        result["sides"][name] = side
    s = ours["summary"]
    assert s["samples_per_s"] == pytest.approx(8 * 5 / 7.0)
    assert s["samples_per_s_steady"] == pytest.approx(8 * 4 / 4.0)  # first step left out
    assert trl["summary"]["median_other_s"] == pytest.approx(0.1)
    cmp_ = bench.compare(result, window=2)
    assert cmp_["equal_wall_s"] == 7.0  # ours ends first
    assert cmp_["ours_reward_at_wall"] == pytest.approx(0.45)  # last two of five steps
    assert cmp_["trl_steps_at_wall"] == 2 and cmp_["trl_reward_at_wall"] == pytest.approx(0.15)
    assert cmp_["ours_samples_per_s_ratio"] == pytest.approx((40 / 7) / (24 / 8))
    table = bench.render_table({**result, "comparison": cmp_})
    assert "| TRL `GRPOTrainer` | 3 | 3.0 | 4.0 | 1.500 | 0.400 |" in table
    assert "**1.90x**" in table


def test_trl_tokenizer_has_our_ids(bench_import) -> None:
    pytest.importorskip("tokenizers")
    from miles_hydra.tasks.tokenizer import CHAR_SYMBOLS, CharTokenizer

    tok, ours = bench_import("trl_side").char_tokenizer(), CharTokenizer()
    assert len(tok) == ours.vocab_size
    assert (tok.pad_token_id, tok.eos_token_id) == (ours.pad_id, ours.eos_id)
    for text in ("sort 3142:", "12+34=", CHAR_SYMBOLS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == ours.encode(text)
        assert tok.decode(ids) == text
    ids = ours.encode("123") + [ours.eos_id, ours.pad_id]
    assert tok.decode(ids, skip_special_tokens=True) == ours.decode(ids) == "123"
    batch = tok(["sort 1:", "sort 12:"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][0] == ours.pad_id  # left padding, as TRL generates


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trl_side_runs_where_trl_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    proc = _run(tmp_path, "--sides", "trl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trl = json.loads((tmp_path / "vs_trl.json").read_text())["sides"]["trl"]
    assert [r["step"] for r in trl["rows"]] == [0, 1]
    assert all(r["rollout_s"] > 0 and 0.0 <= r["reward"] <= 1.0 for r in trl["rows"])
