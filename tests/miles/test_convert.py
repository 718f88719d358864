"""HF -> torch_dist conversion as a managed step: when, where (content-addressed), reuse, plan."""

from __future__ import annotations

import os
import stat
from functools import cache
from pathlib import Path

import pytest
from support.combos import compose_run

from miles_hydra.backends.miles.compile import compile_miles
from miles_hydra.backends.miles.convert import (
    DONE_MARKER,
    cache_key,
    converter_flags,
    prepare_commands,
    run_prepare,
)
from miles_hydra.errors import ConfigError, TrainingError

BASE = ("experiment=recipe_qwen3_4b",)


@cache
def _run(*overrides: str):
    return compose_run([*BASE, *overrides], base=False)


def _ref_load(run) -> str:
    argv = compile_miles(run, "/runs/x").argv
    return argv[argv.index("--ref-load") + 1]


def test_given_torch_dist_weights_need_no_step() -> None:
    run = _run()
    assert prepare_commands(run) == []
    assert _ref_load(run) == "/root/models/Qwen3-4B_torch_dist"


def test_missing_torch_dist_weights_are_converted_into_a_content_addressed_dir() -> None:
    run = _run("model.torch_dist_checkpoint=null")
    (step,) = prepare_commands(run)
    key = cache_key(run)
    assert len(key) == 16 and step.creates == f"/root/models/Qwen3-4B_torch_dist/qwen3_4b-{key}"
    assert _ref_load(run) == step.creates  # Megatron loads what the step creates
    assert step.argv[:4] == [
        "torchrun",
        "--nproc-per-node",
        "8",
        "/root/miles/tools/convert_hf_to_torch_dist.py",
    ]
    assert step.argv[-4:] == ["--hf-checkpoint", "/root/models/Qwen3-4B", "--save", step.partial]
    # convert=always converts even when weights are given; an explicit ref_load always wins
    assert prepare_commands(_run("model.convert=always"))[0].creates == step.creates
    assert prepare_commands(_run("model.convert=always", "checkpoint.ref_load=/w")) == []
    custom = _run("model.torch_dist_checkpoint=null", "model.convert_dir=/cache")
    assert prepare_commands(custom)[0].creates == f"/cache/qwen3_4b-{key}"


def test_cache_key_follows_checkpoint_config_and_flags() -> None:
    key = cache_key(_run("model.torch_dist_checkpoint=null"))
    assert key == cache_key(_run("model.convert=always"))  # where weights are is not the key
    assert key != cache_key(_run("model.convert=always", "model.hf_checkpoint=/m/other"))
    assert key != cache_key(_run("model.convert=always", "model.rotary_base=500000"))
    assert key == cache_key(_run("model.convert=always", "parallelism=tp2"))  # training layout


def test_mtp_layers_are_converted_with_the_model() -> None:
    assert "--mtp-num-layers" not in converter_flags(_run())
    glm = compose_run(["experiment=recipe_qwen3_30b_a3b", "model=glm4.5"], base=False)
    flags = converter_flags(glm)
    assert flags[flags.index("--mtp-num-layers") + 1] == "1"


def test_convert_never_without_weights_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.convert=auto"):
        _run("model.torch_dist_checkpoint=null", "model.convert=never")


def test_plan_shows_the_prepare_step() -> None:
    from miles_hydra.launch.plan import _command_lines

    lines = _command_lines(_run("model.torch_dist_checkpoint=null"))
    text = "\n".join(lines)
    assert lines[0] == "prepare (before the miles job):"
    assert "tools/convert_hf_to_torch_dist.py" in text and "--hf-checkpoint" in text
    assert text.index("prepare") < text.index("command:")
    assert "prepare" not in "\n".join(_command_lines(_run()))


FAKE_TORCHRUN = """#!/usr/bin/env bash
# stand-in for torchrun + the converter: count the call, write the output and the marker last
echo run >> "$FAKE_CALLS"
[ -n "$FAKE_FAIL" ] && exit 3
while [ $# -gt 0 ]; do [ "$1" = --save ] && save="$2"; shift; done
mkdir -p "$save/release" && echo weights > "$save/release/shard" && echo release > "$save/MARKER"
""".replace("MARKER", DONE_MARKER)


@pytest.fixture
def fake_torchrun(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "torchrun"
    script.write_text(FAKE_TORCHRUN)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    return calls


def test_job_converts_once_then_reuses(tmp_path, fake_torchrun, monkeypatch) -> None:
    run = _run("model.torch_dist_checkpoint=null", f"model.convert_dir={tmp_path}/cache")
    (step,) = prepare_commands(run)
    Path(step.partial).mkdir(parents=True)  # a preempted earlier attempt left a partial dir
    (Path(step.partial) / "stale").write_text("x")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert run_prepare(run, run_dir) == ["convert_hf_to_torch_dist"]
    final = Path(step.creates)
    assert (final / DONE_MARKER).read_text().strip() == "release"
    assert not (final / "stale").exists() and not Path(step.partial).exists()
    assert run_prepare(run, run_dir) == ["convert_hf_to_torch_dist"]  # a requeue: reused
    assert fake_torchrun.read_text().count("run") == 1
    assert "reusing" in (run_dir / "prepare.log").read_text()
    # a failing converter fails the job and leaves no directory Megatron could load
    other = _run("model.torch_dist_checkpoint=null", f"model.convert_dir={tmp_path}/c2")
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(TrainingError, match="exited with 3"):
        run_prepare(other, run_dir)
    assert not Path(prepare_commands(other)[0].creates).exists()
