"""CPU smoke test of bench/bench_rollout.py: tiny model, a few tokens, every contender runs
and the token accounting of both workloads (fixed, heavy-tailed) is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(bench_import):
    return bench_import("bench_rollout")


def test_heavy_lengths_are_deterministic_and_capped(bench) -> None:
    lengths = bench.heavy_lengths(500, cap=64, seed=3)
    assert lengths == bench.heavy_lengths(500, cap=64, seed=3)
    assert min(lengths) >= 1 and max(lengths) == 64  # the tail reaches the cap
    assert sum(lengths) / len(lengths) < 64 / 2  # heavy-tailed: most responses are short


@pytest.mark.timeout(120)
def test_tiny_cpu_run_counts_tokens_exactly(bench, tmp_path: Path) -> None:
    jsonl, md = tmp_path / "rows.jsonl", tmp_path / "table.md"
    batch, new_tokens, factor = 2, 4, 2
    results = bench.main([
        "--preset", "tiny", "--device", "cpu", "--batch-sizes", str(batch),
        "--heavy-batch-sizes", str(batch), "--heavy-factor", str(factor),
        "--prompt-len", "4", "--new-tokens", str(new_tokens), "--repeats", "1",
        "--contenders", "hf_plain,hf_static,ours,ours_spec",
        "--jsonl", str(jsonl), "--md", str(md),
    ])  # fmt: skip
    by_key = {(r.workload, r.contender): r for r in results}
    assert len(by_key) == 8 == len(results)
    for r in results:
        assert r.note == "", r.note  # nothing failed, capped or skipped
        assert r.seconds > 0 and r.tok_s == pytest.approx(r.tokens / r.seconds)
    for name in ("hf_plain", "hf_static", "ours", "ours_spec"):
        assert by_key["fixed", name].tokens == batch * new_tokens
    targets = bench.heavy_lengths(batch * factor, new_tokens, seed=0 + batch)
    for name in ("hf_plain", "hf_static", "ours", "ours_spec"):
        assert by_key["heavy", name].tokens == sum(targets)
    # HF has no per-sequence stop: every chunk runs the cap, only the targets count
    assert by_key["heavy", "hf_plain"].extra["hf_generated"] == batch * factor * new_tokens
    assert 0.0 <= by_key["fixed", "ours_spec"].extra["accept_rate"] <= 1.0
    assert by_key["fixed", "ours_spec"].extra["accept_length"] >= 1.0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["env"]["device"] == "cpu"
    table = md.read_text()
    assert "| fixed | 2 | ours |" in table and "x |" in table  # ratio columns filled
