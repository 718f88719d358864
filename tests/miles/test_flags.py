"""The fast flag-table check against the dump of miles-rl 0.0.2's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE, check_argv, load_table

NEWEST_TABLE = Path("/work/shared/reference/miles_flags.json")  # newest miles main, when present


def _whys(argv: list[str]) -> list[str]:
    return [str(p) for p in check_argv(argv)]


def test_dump_is_the_wheels_parser() -> None:
    table = json.loads(DEFAULT_TABLE.read_text())
    assert table["meta"]["miles_rl_version"] == "0.0.2"
    flags = load_table()
    assert len(table["actions"]) == 1350
    assert flags["--rollout-batch-size"].type == "int"
    assert flags["--offload-train"].action == "BooleanOptionalAction"
    assert "--no-offload-train" in flags
    assert "grpo" in flags["--advantage-estimator"].choices


def test_clean_argv_passes() -> None:
    argv = [
        "--rollout-batch-size",
        "4",
        "--colocate",
        "--advantage-estimator",
        "gspo",
        "--rollout-top-k",
        "-1",
        "--offload-rollout-level",
        "kv_cache",
        "weight",
        "--moe-layer-freq",
        "[0]*3+[1]*5",
        "--train-env-vars",
        '{"A": "1"}',
        "--lr=1e-6",
    ]
    assert check_argv(argv) == []


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (
            ["--rollout-batchsize", "4"],
            "unknown to miles' parser; did you mean --rollout-batch-size?",
        ),
        (["--rollout-batch", "4"], "unknown"),  # no prefix matching: allow_abbrev=False
        (["--rollout-batch-size"], "takes exactly one value, got 0"),
        (["--colocate", "true"], "takes no value (a switch)"),
        (["--rollout-batch-size", "four"], "'four' is not a valid int"),
        (["--lr", "fast"], "'fast' is not a valid float"),
        (["--advantage-estimator", "dpo"], "'dpo' is not one of"),
        (["--offload-rollout-level"], "takes one or more values, got none"),
        (["--train-env-vars", "{A: 1}"], "is not a valid loads"),
        (["stray", "--colocate"], "value without a flag"),
    ],
)
def test_problems_found(argv: list[str], why: str) -> None:
    found = _whys(argv)
    assert len(found) == 1 and why in found[0], found


@pytest.mark.skipif(
    not NEWEST_TABLE.exists(), reason="shared reference dump of newest miles absent"
)
def test_compiled_flags_also_exist_in_newest_miles(miles_combos) -> None:
    """Version skew guard: every flag we emit exists in newest miles main too (not just 0.0.2)."""
    problems = {n: check_argv(c.argv, NEWEST_TABLE) for n, c in miles_combos.commands.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_check_without_miles_still_runs_the_table(miles_combos, monkeypatch, tmp_path) -> None:
    from miles_hydra.backends.miles.check.compare import check_with_oracle

    monkeypatch.delenv("MILES_ORACLE_PYTHON", raising=False)
    monkeypatch.setenv("MILES_ORACLE_VENV", str(tmp_path / "absent"))
    run = miles_combos.valid["qwen3_4b__tp8__gspo__eagle__fp8"]
    report = check_with_oracle(run)
    assert report.oracle is None and report.flag_problems == [] and report.ok
    assert "miles parser: skipped" in report.render()
