"""Prompt sources: determinism, exact resume, held-out eval, warm-start pairs, length limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miles_hydra.config.data import DataConfig, DataSource
from miles_hydra.errors import ConfigError
from miles_hydra.tasks import CharTokenizer, build_prompt_source

TOK = CharTokenizer()


def synthetic(task: str = "arithmetic", seed: int = 3, **kwargs):
    cfg = DataConfig(task=task, task_kwargs=kwargs, num_eval_prompts=16)
    return build_prompt_source(cfg, TOK, seed, max_prompt_len=64, max_response_len=16)


def texts(prompts) -> list[str]:
    return [p.text for p in prompts]


def test_synthetic_is_deterministic_per_seed() -> None:
    a, b, c = synthetic(), synthetic(), synthetic(seed=4)
    assert texts(a.next_batch(8)) == texts(b.next_batch(8))
    assert texts(a.next_batch(8)) != texts(c.next_batch(8))
    prompt = synthetic().next_batch(1)[0]
    assert prompt.ids == TOK.encode(prompt.text)
    assert prompt.meta == {
        "split": "train",
        "index": 0,
        "task": "arithmetic",
        "problem": prompt.text,
    }


@pytest.mark.parametrize("task", ["arithmetic", "countdown", "sorting"])
def test_synthetic_resume_continues_exactly(task: str) -> None:
    run = synthetic(task)
    run.next_batch(5)
    run.sft_examples(3)
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON round trip
    expected = texts(run.next_batch(6)), run.sft_examples(2)
    resumed = synthetic(task)
    resumed.load_state_dict(state)
    assert (texts(resumed.next_batch(6)), resumed.sft_examples(2)) == expected


def test_eval_prompts_are_fixed_distinct_and_held_out() -> None:
    source = synthetic(max_digits=1)  # 100 problems: collisions with eval are certain
    held = set(texts(source.eval_prompts()))
    assert len(held) == 16 and texts(source.eval_prompts()) == texts(source.eval_prompts())
    assert all(p.meta["split"] == "eval" for p in source.eval_prompts())
    train = texts(source.next_batch(300)) + [TOK.decode(p) for p, _ in source.sft_examples(100)]
    assert not held & set(train)


def test_sft_examples_are_solutions_with_eos() -> None:
    for prompt_ids, response_ids in synthetic().sft_examples(20):
        a, b = TOK.decode(prompt_ids).rstrip("=").split("+")
        assert response_ids[-1] == TOK.eos_id
        assert TOK.decode(response_ids) == str(int(a) + int(b))


def test_too_many_eval_prompts_or_too_long_answers_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="data.num_eval_prompts=16 exceeds the distinct"):
        synthetic("sorting", min_len=1, max_len=1)  # only 10 problems exist
    with pytest.raises(ConfigError, match="rollout.rollout_max_response_len=16"):
        synthetic(max_digits=9, ops="*")
    with pytest.raises(ConfigError, match="rollout.rollout_max_prompt_len=4"):
        build_prompt_source(DataConfig(), TOK, 0, max_prompt_len=4)


def write_jsonl(path: Path, n: int) -> str:
    rows = [{"prompt": f"{i}+{i}=", "label": str(2 * i)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def file_source(prompt_data: str, seed: int = 0, **kwargs):
    cfg = DataConfig(source=DataSource.file, prompt_data=prompt_data, num_eval_prompts=4, **kwargs)
    return build_prompt_source(cfg, TOK, seed, max_prompt_len=64, max_response_len=16)


def test_file_epochs_cover_every_training_prompt_once_and_reshuffle(tmp_path: Path) -> None:
    source = file_source(write_jsonl(tmp_path / "p.jsonl", 30))
    held = texts(source.eval_prompts())
    assert len(held) == 4  # min(num_eval_prompts=4, 30 // 5)
    first, second = texts(source.next_batch(26)), texts(source.next_batch(26))
    assert sorted(first) == sorted(second) and first != second
    assert len(set(first)) == 26 and not set(held) & set(first)
    assert source.state_dict() == {"kind": "file", "sft_position": 0, "epoch": 1, "offset": 26}
    batch = source.next_batch(1)[0]
    assert batch.meta["epoch"] == 2 and batch.meta["source"].startswith(str(tmp_path))


def test_file_resume_mid_epoch_and_unshuffled_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", 10)
    run = file_source(path)
    run.next_batch(13)
    state = run.state_dict()
    expected = texts(run.next_batch(9))
    resumed = file_source(path)
    resumed.load_state_dict(state)
    assert texts(resumed.next_batch(9)) == expected
    ordered = file_source(path, rollout_shuffle=False, eval_prompt_data=path)
    assert texts(ordered.next_batch(3)) == ["0+0=", "1+1=", "2+2="]
    assert len(ordered.eval_prompts()) == 10  # a separate eval file is used whole
    assert ordered.sft_examples(1) == [(TOK.encode("0+0="), TOK.encode("0") + [TOK.eos_id])]
    with pytest.raises(ConfigError, match="data.source='file' does not match"):
        ordered.load_state_dict(synthetic().state_dict())


@pytest.mark.parametrize("preset", ["arithmetic", "countdown", "sorting"])
def test_every_synthetic_preset_fits_the_default_rollout_limits(compose, preset: str) -> None:
    from miles_hydra.config.store import materialize
    from miles_hydra.tasks import build_tokenizer
    from miles_hydra.tasks.reward import build_reward_fn

    cfg = materialize(compose([f"data={preset}"]))
    tokenizer = build_tokenizer(cfg.model)
    source = build_prompt_source(
        cfg.data,
        tokenizer,
        cfg.seed,
        cfg.rollout.rollout_max_prompt_len,
        max_response_len=cfg.rollout.rollout_max_response_len,
    )
    reward = build_reward_fn(cfg.reward, cfg.data)
    assert len(source.eval_prompts()) == cfg.data.num_eval_prompts
    for (prompt_ids, response_ids), prompt in zip(source.sft_examples(32), source.next_batch(32)):
        assert len(prompt_ids) <= cfg.rollout.rollout_max_prompt_len
        assert len(response_ids) <= cfg.rollout.rollout_max_response_len
        assert reward(prompt, "") == 0.0
    prompt = source.eval_prompts()[0]
    assert reward(prompt, source.task.solution(prompt.label)) == 1.0
