"""Fault: malformed inputs. A corpus of bad files and paths (prompt and eval files, reward
modules, checkpoints to load), each refused by the pre-submission checks -- before anything
starts or reaches Slurm -- with the config key, the file (and line:column where there is one)
and a fix. The launcher turns any failed check into rc 2 with one line per failure
(tests/launch/test_preflight.py runs the real CLI on a subset, and the sweep launcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_fast, materialize

from miles_hydra.backends.local import checkpoint
from miles_hydra.errors import ConfigError
from miles_hydra.launch import preflight

pytestmark = pytest.mark.fault("malformed input file or path")

ROW = {"prompt": "1+2=", "label": "3"}
GOOD = json.dumps(ROW) + "\n"

# prompt-file cases: name -> (file content, or None for no file; text the failure must hold)
PROMPT_FILES: dict[str, tuple[bytes | None, str]] = {
    "missing.jsonl": (None, "prompt file not found"),
    "empty.jsonl": (b"", "the prompt file has no records"),
    "blank.jsonl": (b"\n \n\t\n", "the prompt file has no records"),
    "line1_garbage.jsonl": (b"not json\n", "line1_garbage.jsonl:1:1: invalid JSON"),
    "line3_unclosed.jsonl": (
        (GOOD * 2 + '{"prompt": "3+3=", "label": "6"\n').encode(),
        "line3_unclosed.jsonl:3:32: invalid JSON",
    ),
    "trailing_comma.jsonl": (b'{"prompt": "a", "label": "b",}\n', ":1:30: invalid JSON"),
    "single_quotes.jsonl": (b"{'prompt': 'a', 'label': 'b'}\n", ":1:2: invalid JSON"),
    "array_row.jsonl": (b'["1+2=", "3"]\n', "line 1: expected a JSON object, got list"),
    "string_row.jsonl": (b'"1+2="\n', "line 1: expected a JSON object, got str"),
    "number_row.jsonl": (b"42\n", "line 1: expected a JSON object, got int"),
    "no_prompt_key.jsonl": (b'{"question": "1+2=", "label": "3"}\n', "no 'prompt' field"),
    "no_label_key.jsonl": (b'{"prompt": "1+2="}\n', "no 'label' field"),
    "null_prompt.jsonl": (
        b'{"prompt": null, "label": "3"}\n',
        "field 'prompt' (data.input_key) is null",
    ),
    "empty_prompt.jsonl": (
        b'{"prompt": "", "label": "3"}\n',
        "field 'prompt' (data.input_key) is empty",
    ),
    "latin1.jsonl": ('{"prompt": "caf\u00e9", "label": "3"}\n'.encode("latin-1"), "not UTF-8 text"),
    "binary.jsonl": (bytes(range(256)) * 4, "not UTF-8 text"),
    "bad_second_record.jsonl": ((GOOD + '{"prompt": 1+2}\n').encode(), ":2:13: invalid JSON"),
    "prompts.csv": (b"prompt,label\n1+2=,3\n", "jsonl"),  # prompt_data: refused by validation
    "prompts.txt": (GOOD.encode(), "jsonl"),
    "fake.parquet": (b"PAR1 this is not parquet", "not a readable Parquet file"),
}

REWARD_MODULES = {
    "rm_ok": "def score(prompt, response, label):\n    return 1.0\n",
    "rm_two_args": "def score(prompt, response):\n    return 1.0\n",
    "rm_constant": "score = 1.0\n",
    "rm_raises": "raise RuntimeError('no GPU here')\n",
    "rm_syntax": "def score(prompt, response, label)\n    return 1.0\n",
}
# reward.custom_rm_path -> text the failure must hold
REWARD_PATHS = {
    "nonexistent_mod:fn": "names module 'nonexistent_mod' that cannot be imported",
    "rm_ok:missing": "names 'missing', which module",
    "rm_two_args:score": "takes (prompt, response), so it cannot be called as fn(prompt, response, label)",
    "rm_constant:score": "names float 'score', not a function",
    "rm_raises:score": "RuntimeError",
    "rm_syntax:score": "SyntaxError",
}


def _write_checkpoint_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """checkpoint.load cases: name -> (path, text the failure must hold)."""
    (root / "empty_dir").mkdir()
    (root / "a_file").write_text("not a checkpoint")
    no_driver = root / "no_driver" / "step_000002"
    (no_driver / checkpoint.MODEL_DIR).mkdir(parents=True)
    damaged = root / "damaged"

    def write(tmp: Path) -> None:
        (tmp / checkpoint.MODEL_DIR).mkdir()
        torch.save({}, tmp / checkpoint.TRAINER_FILE)

    path = checkpoint.save(damaged, 2, {}, write, keep_last=2)
    (path / checkpoint.DRIVER_FILE).write_bytes(b"x")
    truncated = root / "truncated_manifest"
    path = checkpoint.save(truncated, 2, {}, write, keep_last=2)
    manifest = path / checkpoint.MANIFEST_FILE
    manifest.write_text(manifest.read_text()[:10])
    return {
        "nonexistent": (root / "nope", "holds no checkpoint"),
        "empty_dir": (root / "empty_dir", "holds no checkpoint"),
        "a_file": (root / "a_file", "holds no checkpoint"),
        "step_dir_without_driver": (root / "no_driver", "holds no checkpoint"),
        "damaged_driver": (damaged, f"every checkpoint under {damaged} is damaged"),
        "truncated_manifest": (truncated, f"every checkpoint under {truncated} is damaged"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    for name, (content, _) in PROMPT_FILES.items():
        if content is not None:
            (root / name).write_bytes(content)
    (root / "good.jsonl").write_text(GOOD)
    (root / "a_dir.jsonl").mkdir()
    for name, text in REWARD_MODULES.items():
        (root / f"{name}.py").write_text(text)
    return root


def _failed(overrides: list[str]) -> preflight.Check:
    """The one failure of ``overrides``: refused by validation, or by a pre-submission check."""
    try:
        run = materialize(compose_fast(overrides))
    except ConfigError as exc:
        return preflight.Check(exc.key, preflight.Status.failed, str(exc))
    checks = preflight.run_checks(run)
    failed = preflight.failures(checks)
    assert len(failed) == 1, checks
    return failed[0]


def _assert_key_and_fix(check: preflight.Check, key: str, why: str) -> None:
    assert check.key == key
    assert check.detail.startswith(f"{key}=")  # the key, as the user would set it
    assert why in check.detail
    assert "; " in check.detail  # the fix follows the why


@pytest.mark.parametrize("name", sorted(PROMPT_FILES))
@pytest.mark.parametrize("key", ["data.prompt_data", "data.eval_prompt_data"])
def test_bad_prompt_file_is_refused(corpus: Path, name: str, key: str) -> None:
    data = corpus / "good.jsonl" if key == "data.eval_prompt_data" else corpus / name
    overrides = ["data=jsonl", "reward.rm_type=exact_match", f"data.prompt_data={data}"]
    if key == "data.eval_prompt_data":
        overrides.append(f"data.eval_prompt_data={corpus / name}")
    check = _failed(overrides)
    _assert_key_and_fix(check, key, PROMPT_FILES[name][1])
    assert str(corpus / name) in check.detail


def test_a_directory_as_prompt_file_is_refused(corpus: Path) -> None:
    overrides = [
        "data=jsonl",
        "reward.rm_type=exact_match",
        f"data.prompt_data={corpus}/a_dir.jsonl",
    ]
    check = _failed(overrides)
    _assert_key_and_fix(check, "data.prompt_data", "a_dir.jsonl")


@pytest.mark.parametrize("path", sorted(REWARD_PATHS))
def test_bad_reward_function_is_refused(corpus: Path, path: str, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(corpus))
    check = _failed(["reward=custom", f"reward.custom_rm_path={path}"])
    _assert_key_and_fix(check, "reward.custom_rm_path", REWARD_PATHS[path])


def test_bad_checkpoint_load_is_refused(tmp_path: Path) -> None:
    cases = _write_checkpoint_cases(tmp_path)
    for name, (path, why) in cases.items():
        check = _failed([f"checkpoint.load={path}"])
        assert check.key == "checkpoint.load", name
        assert why in check.detail and "; " in check.detail, (name, check.detail)


def test_corpus_holds_at_least_30_bad_inputs() -> None:
    """The issue asks for a corpus of at least 30 bad files/paths."""
    count = 2 * len(PROMPT_FILES) + 1 + len(REWARD_PATHS) + 6
    assert count >= 30
