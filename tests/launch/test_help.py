"""`python launch.py --help` teaches the groups, modes and overrides; `+describe` the fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from miles_hydra.config.docs import field_docs
from miles_hydra.config.rollout import RolloutConfig
from miles_hydra.launch import help as launch_help
from miles_hydra.launch.hints import typo_hints

REPO = Path(__file__).resolve().parents[2]


def _launch(*args: str) -> subprocess.CompletedProcess:
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['launch.py', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_path('launch.py', run_name='__main__')\n"
        "finally:\n"
        "    print('HYDRA_IMPORTED' if 'hydra' in sys.modules else 'NO_HYDRA', file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_group_option_with_its_line_and_the_modes() -> None:
    proc = _launch("--help")
    assert proc.returncode == 0, proc.stderr
    assert "NO_HYDRA" in proc.stderr  # answered before Hydra is imported
    page = proc.stdout
    for group, options in launch_help._options().items():
        for option in options:
            assert f"    {option} " in page or f"  {option} " in page, (group, option)
    assert "model  (default: tiny_dense)" in page
    assert "algorithm/correction  (default: none)" in page
    assert "Qwen3-4B (miles scripts/models/qwen3-4B.py)" in page  # the preset's own comment
    for mode in ("mode=plan", "mode=check", "-m key=a,b", "+describe=<group>"):
        assert mode in page
    assert "lr_tis" in page and "conf/local/default.yaml" in page
    assert "is powered by Hydra" not in page and "schema" not in page  # no internal group


def test_common_overrides_on_the_page_name_real_keys() -> None:
    for override, _ in launch_help.COMMON_OVERRIDES:
        for arg in override.split():
            if "<" in arg:
                arg = arg.split("=")[0] + "=x"
            assert typo_hints([arg]) == [], arg


def test_describe_group_prints_each_field_with_doc_type_and_default() -> None:
    proc = _launch("+describe=rollout")
    assert proc.returncode == 0, proc.stderr
    for doc in field_docs(RolloutConfig):
        assert f"rollout.{doc.name} " in proc.stdout
        assert doc.doc in proc.stdout
    assert "responses sampled per prompt (the GRPO group size)" in proc.stdout
    assert "int; default 4" in proc.stdout
    assert "presets (rollout=<option>): default, large" in proc.stdout


def test_describe_subgroup_and_preset() -> None:
    text, ok = launch_help.describe("algorithm.correction")
    assert ok and "algorithm.correction.upper" in text
    assert "one of: none, tis, mis, icepop; default none" in text
    text, ok = launch_help.describe("experiment/tiny_moe_r3")
    assert ok
    assert "selects: model=tiny_moe  precision=bf16_rollout  algorithm=grpo_tis" in text
    assert "use_rollout_routing_replay: true" in text
    text, ok = launch_help.describe("model/qwen3_0.6b")  # a dot inside an option name
    assert ok and "selects: backend=miles" in text and "hidden_size: 1024" in text


def test_describe_unknown_names_the_closest_and_exits_2() -> None:
    proc = _launch("+describe=rolout")
    assert proc.returncode == 2
    assert "did you mean rollout" in proc.stdout


@pytest.mark.parametrize("schema", list(launch_help._schemas().values()))
def test_every_field_has_a_doc_line(schema: type) -> None:
    assert all(doc.doc for doc in field_docs(schema)), schema.__name__
