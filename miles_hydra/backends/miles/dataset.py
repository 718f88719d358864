"""A synthetic task as miles prompt files: ``<run_dir>/data/train.jsonl`` and ``eval.jsonl``.

miles reads prompts from JSONL files, so before ``ray job submit`` the runner writes the task's
prompts with the local engine's own synthetic source (same seed, same held-out eval problems):
``num_rollout x rollout_batch_size`` training prompts (one epoch is the whole run) and
``data.num_eval_prompts`` eval prompts. Each line is ``{"prompt": text, "label": envelope}``;
the envelope is a JSON string ``{"task", "task_kwargs", "label"}`` that
``miles_hydra.backends.miles.rewards`` reads to rebuild the task's verifier inside miles.

Prompts are the raw task text: with ``data.apply_chat_template`` the compiler passes
``--apply-chat-template`` and miles applies the model's template. Lengths are checked in
characters, an upper bound on the tokens of any byte-level BPE tokenizer (the template's own
tokens are not counted), so no tokenizer is loaded here. The same config always writes the same
files, so a resumed job reads exactly the prompts its checkpointed data offset refers to.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from miles_hydra.config.data import DataSource
from miles_hydra.config.run import RunConfig

PLACEHOLDER_RUN_DIR = "<run_dir>"  # where the run directory is not known yet (mode=plan)
DATA_SUBDIR = "data"  # prompt files live in <run_dir>/data
TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
INPUT_KEY = "prompt"  # record keys of the files we write (--input-key / --label-key)
LABEL_KEY = "label"
_CHUNK = 4096  # prompts generated and written at a time


@dataclass(frozen=True)
class PromptFiles:
    """Where miles reads prompts, and under which record keys."""

    train: str  # --prompt-data
    eval: Optional[str]  # --eval-prompt-data (name "eval"); None = no eval file
    input_key: str  # --input-key
    label_key: str  # --label-key


def prompt_files(cfg: RunConfig, run_dir: Optional[str]) -> PromptFiles:
    """Ours under ``<run_dir>/data`` for a synthetic task, else the user's files. Pure."""
    d = cfg.data
    if d.source is DataSource.synthetic:
        base = f"{(run_dir or PLACEHOLDER_RUN_DIR).rstrip('/')}/{DATA_SUBDIR}"
        return PromptFiles(f"{base}/{TRAIN_FILE}", f"{base}/{EVAL_FILE}", INPUT_KEY, LABEL_KEY)
    return PromptFiles(str(d.prompt_data), d.eval_prompt_data, d.input_key, d.label_key)


def num_train_prompts(cfg: RunConfig) -> int:
    """Prompts the run consumes: one batch of rollout_batch_size per rollout."""
    return cfg.rollout.num_rollout * cfg.rollout.rollout_batch_size


def task_label(task: str, task_kwargs: dict[str, Any], label: Any) -> str:
    """The label field of one record: the task, its knobs and the answer, as a JSON string."""
    envelope = {"task": task, "task_kwargs": dict(task_kwargs), "label": label}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"))


def write_prompt_files(cfg: RunConfig, run_dir: Path) -> Optional[PromptFiles]:
    """Write a synthetic task's train/eval files under ``run_dir``; None for prompt files."""
    if cfg.data.source is not DataSource.synthetic:
        return None
    files = prompt_files(cfg, str(run_dir))
    source = _synthetic_source(cfg)
    total = num_train_prompts(cfg)

    def train_records():  # noqa: ANN202 - generator of JSONL lines
        for start in range(0, total, _CHUNK):
            yield from (_line(cfg, p) for p in source.next_batch(min(_CHUNK, total - start)))

    _write_lines(Path(files.train), train_records())
    assert files.eval is not None
    _write_lines(Path(files.eval), (_line(cfg, p) for p in source.eval_prompts()))
    return files


def _synthetic_source(cfg: RunConfig) -> Any:
    """The local engine's synthetic source on raw text (miles applies the chat template)."""
    from miles_hydra.tasks.source import SyntheticPromptSource
    from miles_hydra.tasks.tokenizer import CharTokenizer

    data = dataclasses.replace(cfg.data, apply_chat_template=False)
    r = cfg.rollout
    return SyntheticPromptSource(
        data, CharTokenizer(), cfg.seed, r.rollout_max_prompt_len, r.rollout_max_response_len
    )


def _line(cfg: RunConfig, prompt: Any) -> str:
    label = task_label(cfg.data.task, cfg.data.task_kwargs, prompt.label)
    return json.dumps({INPUT_KEY: prompt.text, LABEL_KEY: label}) + "\n"


def _write_lines(path: Path, lines: Any) -> None:
    """Write atomically: a job that dies mid-write leaves no half file for miles to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)
