"""Synthetic tasks and our rewards on backend=miles: prompt files, the reward hooks, GPU counts.

miles itself is not importable here: the reward hooks get a stand-in sample (SimpleNamespace
with prompt/response/label, the fields miles' Sample has) and a stand-in args namespace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import textwrap
from types import SimpleNamespace

import pytest
import yaml
from support.combos import SYNTHETIC_BASE, compose_run

from miles_hydra.backends.miles import rewards
from miles_hydra.backends.miles.compile import compile_miles, plan_values
from miles_hydra.backends.miles.dataset import num_train_prompts, task_label, write_prompt_files
from miles_hydra.backends.miles.runner import run_miles
from miles_hydra.config.layout import critic_gpus, num_engines, rollout_gpus, total_gpus
from miles_hydra.errors import ConfigError, RewardError
from miles_hydra.launch.plan import plan_data, render_plan
from miles_hydra.tasks.synthetic import build_task

HEADLINE = [
    "model=qwen3_30b_a3b",
    "parallelism=tp4_ep8_2node",
    "precision=fp8",
    "precision.rollout_checkpoint=/root/models/Qwen3-30B-A3B-FP8",
    "speculative=eagle",  # Qwen3 checkpoints have no MTP layers for mtp_online (issue 14)
    "speculative.draft_model_path=/root/models/Qwen3-30B-A3B-EAGLE3",
    "algorithm=grpo",
]


def _run(*overrides: str):
    return compose_run([*SYNTHETIC_BASE, *overrides], base=False)


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_headline_plan_shows_placeholders_and_no_error() -> None:
    text = render_plan(_run(*HEADLINE))
    assert "ERROR" not in text
    for piece in (
        "--prompt-data '<run_dir>/data/train.jsonl' --input-key prompt --label-key label",
        "--eval-prompt-data eval '<run_dir>/data/eval.jsonl'",
        "--custom-rm-path miles_hydra.backends.miles.rewards.task_reward",
    ):
        assert piece in text
    assert "--rm-type" not in text


def test_job_writes_seeded_prompt_files(tmp_path) -> None:
    run = _run("model=qwen3_4b", "parallelism=tp2", "precision=bf16", "data=countdown")
    files = write_prompt_files(run, tmp_path)
    argv = compile_miles(run, str(tmp_path)).argv
    assert _flag(argv, "--prompt-data") == files.train == str(tmp_path / "data" / "train.jsonl")
    assert argv[argv.index("--eval-prompt-data") + 2] == files.eval
    train = [json.loads(line) for line in open(files.train)]
    evals = [json.loads(line) for line in open(files.eval)]
    assert len(train) == num_train_prompts(run) == 20 * 8 and len(evals) == 64
    task = build_task("countdown", run.data.task_kwargs)
    for record in train[:20]:
        envelope = json.loads(record["label"])
        assert envelope["task"] == "countdown" and envelope["task_kwargs"] == run.data.task_kwargs
        assert record["prompt"].startswith("make ")  # raw text: miles applies the template
        assert task.verify(envelope["label"]["solution"], envelope["label"]) == 1.0
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}  # eval held out
    again = write_prompt_files(run, tmp_path / "again")
    assert open(again.train).read() == open(files.train).read()  # same seed, same prompts
    other = write_prompt_files(
        _run("model=qwen3_4b", "precision=bf16", "data=countdown", "seed=7"), tmp_path / "s"
    )
    assert open(other.train).read() != open(files.train).read()


def test_prompt_files_for_file_data_are_none(tmp_path) -> None:
    run = compose_run(["model=qwen3_4b", "parallelism=tp2", "precision=bf16"])
    assert write_prompt_files(run, tmp_path) is None and not (tmp_path / "data").exists()


def test_runner_writes_prompts_before_submitting(tmp_path, monkeypatch) -> None:
    submitted = {}

    def fake_run_command(cmd, run_dir, address, ray_cli):  # noqa: ANN001, ANN202
        submitted["train_exists"] = (run_dir / "data" / "train.jsonl").exists()
        return SimpleNamespace(submission_id="s", log_path=run_dir / "log"), 0

    monkeypatch.setattr("miles_hydra.backends.miles.runner.run_command", fake_run_command)
    run_miles(_run("model=qwen3_4b", "parallelism=tp2", "precision=bf16"), tmp_path)
    assert submitted == {"train_exists": True}


def _sample(response: str, label, prompt: str = "12+34=") -> SimpleNamespace:
    return SimpleNamespace(prompt=prompt, response=response, label=label)


COUNTDOWN_LABEL = {"numbers": [3, 5, 17], "target": 25, "solution": "3+17+5"}


@pytest.mark.parametrize(
    ("task", "kwargs", "label", "response", "expected"),
    [
        ("arithmetic", {"max_digits": 2}, "46", " 46 ", 1.0),
        ("arithmetic", {"max_digits": 2}, "46", "46 is the answer", 0.0),  # must stop
        ("sorting", {}, "1234", "1234", 1.0),
        ("sorting", {}, "1234", "4321", 0.0),
        ("countdown", {"num_numbers": 3}, COUNTDOWN_LABEL, "17+5", 0.0),  # every number once
        ("countdown", {"num_numbers": 3}, COUNTDOWN_LABEL, "3*5+17", 0.0),  # 32, not 25
        ("countdown", {"num_numbers": 3}, COUNTDOWN_LABEL, "5+17+3", 1.0),
    ],
)
def test_task_reward_uses_the_tasks_verifier(task, kwargs, label, response, expected) -> None:
    sample = _sample(response, task_label(task, kwargs, label))
    assert asyncio.run(rewards.task_reward(None, sample)) == expected


def test_task_reward_refuses_a_label_without_task() -> None:
    with pytest.raises(RewardError, match="synthetic task's label"):
        asyncio.run(rewards.task_reward(None, _sample("46", "46")))


@pytest.fixture
def user_rewards(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            def score(prompt, response, label):
                return float(response.strip() == str(label)) + (0.5 if prompt.endswith("=") else 0)

            def broken(prompt, response, label):
                return "high"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)
    rewards._custom_reward_fn.cache_clear()


def test_custom_reward_gets_prompt_response_and_inner_label(user_rewards) -> None:
    args = SimpleNamespace(**{rewards.CUSTOM_RM_KEY: f"{user_rewards}:score"})
    wrapped = task_label("arithmetic", {}, "46")
    assert asyncio.run(rewards.custom_reward(args, _sample("46", wrapped))) == 1.5
    assert asyncio.run(rewards.custom_reward(args, _sample("46", "46", prompt="q"))) == 1.0
    bad = SimpleNamespace(**{rewards.CUSTOM_RM_KEY: f"{user_rewards}:broken"})
    with pytest.raises(RewardError, match="not a finite number"):
        asyncio.run(rewards.custom_reward(bad, _sample("46", "46")))
    with pytest.raises(ConfigError, match=rewards.CUSTOM_RM_KEY):
        asyncio.run(rewards.custom_reward(SimpleNamespace(), _sample("46", "46")))


def test_custom_reward_path_travels_in_the_inline_config() -> None:
    run = _run("model=qwen3_4b", "precision=bf16", "reward=custom", "reward.custom_rm_path=a.b:c")
    argv = compile_miles(run).argv
    assert _flag(argv, "--custom-rm-path") == "miles_hydra.backends.miles.rewards.custom_reward"
    config = yaml.safe_load(base64.b64decode(_flag(argv, "--custom-config-path")[7:]))
    assert config == {rewards.CUSTOM_RM_KEY: "a.b:c"}


def test_ppo_critic_shares_the_actor_gpus() -> None:
    """miles v0.1.0 runs "shared Actor/Critic PPO": the critic sits on the actor's placement
    group, so colocated rollout_num_gpus = the actor's GPUs and PPO needs no more GPUs than GRPO."""
    run = _run("model=qwen3_8b", "parallelism=tp8", "precision=bf16", "algorithm=ppo")
    assert (critic_gpus(run), rollout_gpus(run), total_gpus(run), num_engines(run)) == (8, 8, 8, 4)
    d = plan_data(run)
    assert (d["training_gpus"], d["critic_gpus"], d["rollout_gpus"], d["total_gpus"]) == (
        8,
        8,
        8,
        8,
    )
    assert plan_values(run)["rollout_num_gpus"] == 8
    assert "critic:    PPO value model on the 8 training GPUs" in render_plan(
        run, with_command=False
    )
    disagg = _run(
        "model=qwen3_8b",
        "parallelism=tp8",
        "precision=bf16",
        "algorithm=ppo",
        "parallelism.colocate=false",
        "parallelism.rollout_num_gpus=8",
    )
    assert (rollout_gpus(disagg), total_gpus(disagg)) == (8, 16)


def test_slurm_allocation_for_ppo_is_the_actors() -> None:
    slurm = ["cluster=slurm", "cluster.nodes=1", "cluster.gpus_per_node=8"]
    base = ["model=qwen3_8b", "parallelism=tp8", "precision=bf16", *slurm]
    _run(*base)  # grpo: 8 GPUs fit
    assert total_gpus(_run(*base, "algorithm=ppo")) == 8  # and so does PPO: the critic shares them


def _fake_oracle(monkeypatch, derived: dict) -> None:
    """Stand-in for miles' parser (its real run is in test_oracle.py): returns `derived`."""
    from miles_hydra.backends.miles.check import compare as check
    from miles_hydra.backends.miles.check.oracle import OracleResult

    result = OracleResult(id="check", ok=True, derived=derived)
    monkeypatch.setattr(check, "oracle_python", lambda: "python3")
    monkeypatch.setattr(
        check, "parse_many", lambda argvs, python, **_: SimpleNamespace(results=[result])
    )


def test_mode_check_exit_status_follows_every_derived_value(monkeypatch, capsys) -> None:
    from miles_hydra.launch.plan import run_check

    run = _run("model=qwen3_8b", "parallelism=tp8", "precision=bf16", "algorithm=ppo")
    _fake_oracle(monkeypatch, plan_values(run))
    assert run_check(run) == 0
    assert "derived values match the plan" in capsys.readouterr().out
    _fake_oracle(monkeypatch, {**plan_values(run), "rollout_num_gpus": 16})  # critic counted twice
    assert run_check(run) == 1
    assert "derived rollout_num_gpus: plan 8 != miles 16" in capsys.readouterr().out


def test_mode_check_without_miles_parser_is_two(monkeypatch, tmp_path, capsys) -> None:
    from miles_hydra.launch.plan import run_check

    monkeypatch.delenv("MILES_ORACLE_PYTHON", raising=False)
    monkeypatch.setenv("MILES_ORACLE_VENV", str(tmp_path / "absent"))
    assert run_check(_run(*HEADLINE)) == 2
    assert "miles parser: skipped" in capsys.readouterr().out
