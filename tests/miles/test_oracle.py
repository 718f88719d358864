"""miles' own parse_args() on CPU (oracle venv) on every valid combination (miles-rl 0.0.2, the
wheel) and on the recipe presets (the pinned v0.1.0, its source over the wheel's).

One subprocess parses all argvs (the ~7-20 s import is paid once). Needs the oracle venv:
scripts/setup_miles_oracle.sh (about 4 minutes, once).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from miles_hydra.backends.miles.check.compare import compare, release_specific_keys
from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE
from miles_hydra.backends.miles.check.oracle import (
    PINNED_RELEASE,
    SETUP_HINT,
    dump_flags,
    oracle_python,
    parse_many,
    release_overlay,
)
from miles_hydra.backends.miles.compile import plan_values

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(oracle_python() is None, reason=f"no miles oracle venv: {SETUP_HINT}"),
]


@pytest.fixture(scope="module")
def oracle_run(miles_combos):
    argvs = {name: cmd.argv for name, cmd in miles_combos.commands.items()}
    base = miles_combos.commands["qwen3_4b__tp8__gspo__eagle__fp8"].argv
    argvs["neg_typo"] = [*base, "--rollout-batchsize", "4"]
    argvs["neg_invariant"] = [*base, "--global-batch-size", "100"]  # last one wins in argparse
    argvs["neg_tp_world"] = [*base, "--tensor-model-parallel-size", "16"]
    return parse_many(argvs)


def test_every_valid_combo_parses_and_derived_values_match_the_plan(miles_combos, oracle_run):
    results = {r.id: r for r in oracle_run.results}
    failed = {n: results[n].error for n in miles_combos.valid if not results[n].ok}
    assert failed == {}
    mismatched = {  # this run parses with the 0.0.2 wheel: see release_specific_keys
        n: compare(plan_values(run), results[n].derived, release_specific_keys(run, pinned=False))
        for n, run in miles_combos.valid.items()
    }
    assert {n: m for n, m in mismatched.items() if m} == {}
    print(
        f"\nmiles-rl 0.0.2 parsed {len(miles_combos.valid)}/{len(miles_combos.valid)} combos; "
        f"derived values agree for all; import {oracle_run.import_seconds:.1f} s, "
        f"subprocess {oracle_run.wall_seconds:.1f} s"
    )


def test_mis_keys_reach_miles_args(miles_combos, oracle_run):
    results = {r.id: r for r in oracle_run.results}
    mis = [n for n in miles_combos.valid if "__grpo_mis__" in n]
    assert mis
    for name in mis:
        derived = results[name].derived
        assert derived["use_tis"] is True and derived["use_rs"] is True
        assert derived["tis_mode"] == "mask" and derived["tis_upper_bound"] == 2.0


def test_synthetic_combos_reach_miles(miles_combos, oracle_run):
    """Our prompt-file placeholders, reward hooks and the merged inline YAML parse in miles."""
    results = {r.id: r for r in oracle_run.results}
    names = [n for n in miles_combos.valid if n.startswith("synthetic__")]
    assert len(names) == 3 and all(results[n].ok for n in names)
    custom = results["synthetic__qwen3_4b__tp2__grpo_mis__none__bf16"].derived
    assert custom["miles_hydra_custom_rm_path"] == "my_pkg.rewards:score"
    assert custom["use_rs"] is True and custom["tis_mode"] == "mask"
    ppo = results["synthetic__qwen3_8b__tp2__ppo__none__bf16"].derived
    assert ppo["use_critic"] is True and ppo["rollout_num_gpus"] == 4  # 2 actor + 2 critic


def test_miles_rejects_what_it_should(oracle_run):
    results = {r.id: r for r in oracle_run.results}
    assert not results["neg_typo"].ok
    assert "unrecognized arguments: --rollout-batchsize" in results["neg_typo"].error
    assert not results["neg_invariant"].ok and "global_batch_size" in results["neg_invariant"].error
    assert not results["neg_tp_world"].ok


@pytest.mark.skipif(release_overlay() is None, reason=f"no miles v0.1.0 overlay: {SETUP_HINT}")
def test_committed_flag_table_is_the_pinned_releases_parser(tmp_path):
    out = tmp_path / "flags.json"
    dump_flags(out)  # v0.1.0's source over the wheel's (the overlay)

    def unordered(table: dict) -> dict:  # some choices come from sets (sglang-router's parsers)
        for action in table["actions"]:
            if action["choices"]:
                action["choices"] = sorted(action["choices"], key=str)
        return table

    assert unordered(json.loads(out.read_text())) == unordered(
        json.loads(DEFAULT_TABLE.read_text())
    )


def test_launch_mode_check_cli(tmp_path):
    """`python launch.py backend=miles mode=check ...` parses with miles and prints PASSED."""
    proc = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "backend=miles",
            "mode=check",
            "model=qwen3_4b",
            "parallelism=tp2",
            "precision=bf16",
            "algorithm=grpo_tis",
            "data=jsonl",
            "data.prompt_data=/data/p.jsonl",
            "data.eval_prompt_data=/data/e.jsonl",
            "reward=math",
            f"output_root={tmp_path}",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "match the plan" in proc.stdout or "check: PASSED" in proc.stdout, proc.stdout


def test_check_with_oracle_report(miles_combos):
    from miles_hydra.backends.miles.check.compare import check_with_oracle
    from miles_hydra.backends.miles.check.oracle import release_overlay

    report = check_with_oracle(miles_combos.valid["qwen3_8b__tp8__ppo__eagle__bf16"])
    assert report.ok, report.render()
    gpus = 8 if release_overlay() else 16  # v0.1.0 shares the actor's GPUs; the 0.0.2 wheel adds
    assert (
        "miles parser: ok" in report.render() and report.oracle.derived["rollout_num_gpus"] == gpus
    )


RM_HUB_SCRIPT = """
import asyncio, json, sys
from types import SimpleNamespace
from unittest import mock

try:
    import pylatexenc  # noqa: F401  (miles' math RM needs it; the oracle venv may lack it)
except ImportError:
    sys.modules["pylatexenc"] = sys.modules["pylatexenc.latex2text"] = mock.MagicMock()
from miles.rollout.rm_hub import async_rm
from miles.utils.types import Sample

record = json.loads(open(sys.argv[1]).readline())
answer = json.loads(record["label"])["label"]
args = SimpleNamespace(custom_rm_path="miles_hydra.backends.miles.rewards.task_reward", rm_type=None)
scores = []
for response in (answer, answer + " and more"):
    sample = Sample(prompt=record["prompt"], label=record["label"], response=response)
    scores.append(asyncio.run(async_rm(args, sample)))
print(json.dumps(scores))
"""


def test_task_reward_through_miles_rm_hub(tmp_path):
    """miles' own reward dispatch (rm_hub.async_rm, real Sample) calls our task_reward on a
    record of the prompt file the job writes."""
    from support.combos import SYNTHETIC_BASE, compose_run

    from miles_hydra.backends.miles.dataset import write_prompt_files

    run = compose_run([*SYNTHETIC_BASE, "model=qwen3_4b", "precision=bf16"], base=False)
    files = write_prompt_files(run, tmp_path)
    proc = subprocess.run(
        [oracle_python(), "-c", RM_HUB_SCRIPT, files.train],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [1.0, 0.0]


RECIPE_PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("recipe_*.yaml"))


@pytest.mark.skipif(release_overlay() is None, reason=f"no miles v0.1.0 overlay: {SETUP_HINT}")
def test_recipe_presets_parse_in_v010_with_the_planned_values():
    """The official-recipe presets (tests/miles/test_recipe_parity.py) in miles v0.1.0's own
    parser, with their verbatim v0.1.0-only flags (--save-retain-interval, --spec, ...)."""
    from support.combos import compose_run

    from miles_hydra.backends.miles.compile import compile_miles

    runs = {name: compose_run([f"experiment={name}"], base=False) for name in RECIPE_PRESETS}
    argvs = {name: compile_miles(run).argv for name, run in runs.items()}
    results = {r.id: r for r in parse_many(argvs, release=PINNED_RELEASE).results}
    assert {n: r.error for n, r in results.items() if not r.ok} == {}
    mismatched = {n: compare(plan_values(runs[n]), results[n].derived) for n in runs}
    assert {n: m for n, m in mismatched.items() if m} == {}
    assert len(RECIPE_PRESETS) >= 6
