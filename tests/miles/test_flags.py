"""The fast flag-table check against the dump of the pinned miles v0.1.0's parser, and the
function paths the compiler emits resolved in v0.1.0's source (check/functions.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE, check_argv, load_table
from miles_hydra.backends.miles.check.functions import (
    DEFAULT_INDEX,
    function_path_problems,
    function_paths,
    index_source,
)

NEWEST_TABLE = Path("/work/shared/reference/miles_flags.json")  # newest miles main, when present
V010_SOURCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "miles-v0.1.0"


def _whys(argv: list[str]) -> list[str]:
    return [str(p) for p in check_argv(argv)]


def test_dump_is_the_pinned_releases_parser() -> None:
    table = json.loads(DEFAULT_TABLE.read_text())
    assert table["meta"]["miles_rl_version"] == "v0.1.0"
    assert table["meta"]["miles_source"] == "miles-v0.1.0"
    flags = load_table()
    assert len(table["actions"]) == 1994
    assert flags["--rollout-batch-size"].type == "int"
    assert flags["--offload-train"].action == "BooleanOptionalAction"
    assert "--no-offload-train" in flags
    assert "grpo" in flags["--advantage-estimator"].choices
    for newer in ("--save-retain-interval", "--use-fault-tolerance", "--spec", "--eval-top-p"):
        assert newer in flags  # v0.1.0 flags the 0.0.2 wheel lacks


def test_function_index_is_the_releases_source() -> None:
    index = json.loads(DEFAULT_INDEX.read_text())
    assert index["meta"] == {"release": "v0.1.0", "source": "miles-v0.1.0"}
    if V010_SOURCE.is_dir():  # regenerated from the snapshot: the committed file is current
        fresh = index_source(V010_SOURCE, ("miles", "miles_plugins", "examples"))
        assert fresh == index["modules"]


def test_every_emitted_function_path_resolves_in_v010(miles_combos) -> None:
    """IcePop, MIS, our reward hooks, --spec: every function path of every valid combo."""
    seen = set()
    problems = {}
    for name, cmd in miles_combos.commands.items():
        seen |= {path for _, path in function_paths(cmd.argv)}
        if found := function_path_problems(cmd.argv):
            problems[name] = [str(p) for p in found]
    assert problems == {}
    assert "miles.backends.training_utils.loss_hub.corrections.icepop_function" in seen
    assert any(p.endswith("compute_mis_weights_with_cp") for p in seen)
    assert any(p.startswith("miles_hydra.backends.miles.rewards.") for p in seen)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--custom-tis-function-path", "miles.nope.fn"], "module 'miles.nope' does not exist"),
        (
            ["--custom-tis-function-path", "miles.backends.training_utils.loss_hub.corrections.x"],
            "defines no 'x'",
        ),
        (["--spec", "miles_plugins.models.qwen3_5", "get_spec"], "defines no 'get_spec'"),
        (["--custom-rm-path", "miles_hydra.backends.miles.rewards.nope"], "defines no 'nope'"),
    ],
)
def test_unresolvable_function_paths_are_reported(argv: list[str], why: str) -> None:
    (problem,) = function_path_problems(argv)
    assert why in problem.why


def test_file_paths_are_not_function_paths() -> None:
    argv = ["--custom-config-path", "cfg.yaml", "--prompt-data", "/d/p.jsonl"]
    argv += ["--dynamic-sampling-filter-path", "x.jsonl", "--spec", "miles_plugins.models.qwen3_5"]
    assert function_paths(argv[:-2] + ["--rm-type", "math"]) == []
    spec = ["--spec", "miles_plugins.models.qwen3_5", "get_qwen3_5_spec"]
    assert function_path_problems(spec) == []


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
    """Version skew guard: every flag we emit exists in newest miles main too (not just v0.1.0)."""
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
