"""Prompt sources: the stream of training prompts, the held-out eval prompts, warm-start pairs.

Both sources are pure functions of (config, seed, position): ``state_dict()`` is the position, so
a resumed run continues with exactly the prompts it would have seen.

- Synthetic tasks: prompt i comes from ``random.Random(f"train:{seed}:{i}:{attempt}")``; problems
  whose text is in the eval set are regenerated (next attempt), so eval stays held out.
- Prompt files: eval prompts come from data.eval_prompt_data, or else a seeded
  ``min(data.num_eval_prompts, len // 5)`` records are held out of data.prompt_data. The rest
  is visited once per epoch, reshuffled each epoch (seeded by seed and epoch) when
  data.rollout_shuffle, else in file order. Warm-start responses are ``str(label)``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.errors import ConfigError, DataError
from miles_hydra.tasks.files import PromptRecord, read_prompt_file
from miles_hydra.tasks.synthetic import Task, build_task
from miles_hydra.tasks.tokenizer import Tokenizer

_MAX_ATTEMPTS = 1000


@dataclass
class Prompt:
    text: str  # prompt text as fed to the model (chat template applied if configured)
    ids: list[int]  # token ids of `text`
    label: Any  # what the verifier compares against
    meta: dict[str, Any] = field(default_factory=dict)  # split, index, task or file:line


class PromptSource(ABC):
    """Common part: tokenization, length checks and the warm-start pairs."""

    kind = ""

    def __init__(
        self,
        data_cfg: Any,
        tokenizer: Tokenizer,
        seed: int,
        max_prompt_len: int,
        max_response_len: Optional[int],
    ) -> None:
        self.cfg, self.tokenizer, self.seed = data_cfg, tokenizer, seed
        self.max_prompt_len, self.max_response_len = max_prompt_len, max_response_len
        self.sft_position = 0

    @abstractmethod
    def next_batch(self, n: int) -> list[Prompt]:
        """The next `n` training prompts; advances the position."""

    def eval_prompts(self) -> list[Prompt]:
        """The held-out eval prompts (the same list on every call)."""
        return list(self._eval)

    def sft_examples(self, n: int) -> list[tuple[list[int], list[int]]]:
        """`n` (prompt ids, solution ids + eos) pairs for the supervised warm-start."""
        pairs = []
        for _ in range(n):
            prompt, response = self._sft_item(self.sft_position)
            self.sft_position += 1
            ids = self.tokenizer.encode(response) + [self.tokenizer.eos_id]
            self._check_response_len(ids, prompt)
            pairs.append((list(prompt.ids), ids))
        return pairs

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sft_position": self.sft_position, **self._position()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ConfigError(
                "data.source",
                self.kind,
                f"does not match the checkpoint's data state {state}",
                "resume with the data config the run was started with",
            )
        self.sft_position = int(state["sft_position"])
        self._load_position(state)

    def _prompt(self, raw: str, label: Any, meta: dict[str, Any]) -> Prompt:
        text = self.tokenizer.apply_chat_template(raw) if self.cfg.apply_chat_template else raw
        try:
            ids = self.tokenizer.encode(text)
        except DataError as exc:
            raise DataError(f"{meta.get('source', 'data')}: {exc}") from None
        if len(ids) > self.max_prompt_len:
            self._too_long(
                f"prompt {text[:40]!r} has {len(ids)} tokens, more than "
                f"rollout.rollout_max_prompt_len={self.max_prompt_len}",
                meta,
            )
        return Prompt(text=text, ids=ids, label=label, meta=meta)

    def _check_response_len(self, ids: list[int], prompt: Prompt) -> None:
        if self.max_response_len is not None and len(ids) > self.max_response_len:
            self._too_long(
                f"solution of {prompt.text!r} has {len(ids)} tokens incl. eos, more than "
                f"rollout.rollout_max_response_len={self.max_response_len}",
                prompt.meta,
            )

    @abstractmethod
    def _too_long(self, what: str, meta: dict[str, Any]) -> None:
        """Raise the error for a prompt or solution over the rollout length limits."""

    @abstractmethod
    def _sft_item(self, index: int) -> tuple[Prompt, str]:
        """The `index`-th warm-start prompt and its reference response text."""

    @abstractmethod
    def _position(self) -> dict[str, Any]:
        """The training-stream position, for state_dict()."""

    @abstractmethod
    def _load_position(self, state: dict[str, Any]) -> None:
        """Restore the training-stream position from state_dict() output."""


class SyntheticPromptSource(PromptSource):
    kind = "synthetic"

    def __init__(
        self,
        data_cfg: Any,
        tokenizer: Tokenizer,
        seed: int,
        max_prompt_len: int,
        max_response_len: Optional[int] = None,
    ) -> None:
        super().__init__(data_cfg, tokenizer, seed, max_prompt_len, max_response_len)
        self.task: Task = build_task(data_cfg.task, data_cfg.task_kwargs)
        self.position = 0
        self._eval = self._make_eval(int(data_cfg.num_eval_prompts))
        self._eval_texts = {p.meta["problem"] for p in self._eval}
        for prompt in self._eval:  # an impossible length fails at build time, not mid-run
            ids = self.tokenizer.encode(self.task.solution(prompt.label)) + [tokenizer.eos_id]
            self._check_response_len(ids, prompt)

    def next_batch(self, n: int) -> list[Prompt]:
        batch = [self._draw("train", self.position + i) for i in range(n)]
        self.position += n
        return batch

    def _make_eval(self, count: int) -> list[Prompt]:
        prompts = []
        for index, (text, label) in enumerate(held_out_problems(self.cfg, self.task, self.seed)):
            meta = {"split": "eval", "index": index, "task": self.task.name, "problem": text}
            prompts.append(self._prompt(text, label, meta))
        return prompts

    def _draw(self, stream: str, index: int) -> Prompt:
        text, label = draw_problem(self.cfg, self.task, self.seed, self._eval_texts, stream, index)
        meta = {"split": stream, "index": index, "task": self.task.name, "problem": text}
        return self._prompt(text, label, meta)

    def _sft_item(self, index: int) -> tuple[Prompt, str]:
        prompt = self._draw("sft", index)
        return prompt, self.task.solution(prompt.label)

    def _too_long(self, what: str, meta: dict[str, Any]) -> None:
        raise ConfigError(
            "data.task_kwargs",
            dict(self.cfg.task_kwargs),
            f"make a task whose {what}",
            "make the task easier or raise the rollout length limits",
        )

    def _position(self) -> dict[str, Any]:
        return {"position": self.position}

    def _load_position(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class FilePromptSource(PromptSource):
    kind = "file"

    def __init__(
        self,
        data_cfg: Any,
        tokenizer: Tokenizer,
        seed: int,
        max_prompt_len: int,
        max_response_len: Optional[int] = None,
    ) -> None:
        super().__init__(data_cfg, tokenizer, seed, max_prompt_len, max_response_len)
        self.epoch, self.offset = 0, 0
        records = self._read(data_cfg.prompt_data, "train")
        if data_cfg.eval_prompt_data:
            self._eval = self._read(data_cfg.eval_prompt_data, "eval")
            self._train = records
        else:
            held = min(int(data_cfg.num_eval_prompts), len(records) // 5)
            order = list(range(len(records)))
            random.Random(f"holdout:{seed}").shuffle(order)
            held_out = set(order[:held])
            self._eval = [records[i] for i in sorted(held_out)]
            self._train = [r for i, r in enumerate(records) if i not in held_out]
        for prompt in self._eval:
            prompt.meta["split"] = "eval"
        self._order = self._epoch_order(0)

    def _read(self, path: str, split: str) -> list[Prompt]:
        cfg = self.cfg
        rows: list[PromptRecord] = read_prompt_file(path, cfg.input_key, cfg.label_key)
        return [
            self._prompt(r.text, r.label, {"split": split, "index": i, "source": r.where})
            for i, r in enumerate(rows)
        ]

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self._train)))
        if self.cfg.rollout_shuffle:
            random.Random(f"epoch:{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self, n: int) -> list[Prompt]:
        batch = []
        for _ in range(n):
            if self.offset == len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            source = self._train[self._order[self.offset]]
            self.offset += 1
            batch.append(
                Prompt(
                    source.text,
                    list(source.ids),
                    source.label,
                    {**source.meta, "epoch": self.epoch},
                )
            )
        return batch

    def _sft_item(self, index: int) -> tuple[Prompt, str]:
        prompt = self._train[index % len(self._train)]
        return prompt, str(prompt.label)

    def _too_long(self, what: str, meta: dict[str, Any]) -> None:
        raise DataError(
            f"{meta.get('source', 'data')}: {what}; shorten it or raise the rollout length limit"
        )

    def _position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}

    def _load_position(self, state: dict[str, Any]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._epoch_order(self.epoch)


def held_out_problems(data_cfg: Any, task: Task, seed: int) -> list[tuple[str, Any]]:
    """The ``data.num_eval_prompts`` distinct (text, label) problems held out for evaluation;
    ConfigError when the task has fewer (also run before submission: launch/preflight.py)."""
    count = int(data_cfg.num_eval_prompts)
    problems: dict[str, Any] = {}
    for i in range(4 * count + 100):
        if len(problems) == count:
            break
        text, label = task.generate(random.Random(f"eval:{seed}:{i}"))
        problems.setdefault(text, label)
    if len(problems) < count:
        raise ConfigError(
            "data.num_eval_prompts",
            count,
            f"exceeds the distinct problems task {task.name} with {data_cfg.task_kwargs} "
            f"yields (found {len(problems)})",
            "lower data.num_eval_prompts or make the task harder in data.task_kwargs",
        )
    return list(problems.items())


def draw_problem(
    data_cfg: Any, task: Task, seed: int, held_out: set[str], stream: str, index: int
) -> tuple[str, Any]:
    """Problem ``index`` of ``stream`` (train, sft): seeded draws that skip held-out ones."""
    for attempt in range(_MAX_ATTEMPTS):
        text, label = task.generate(random.Random(f"{stream}:{seed}:{index}:{attempt}"))
        if text not in held_out:
            return text, label
    raise ConfigError(
        "data.num_eval_prompts",
        data_cfg.num_eval_prompts,
        "holds out (almost) every problem of the task",
        "lower data.num_eval_prompts or make the task harder in data.task_kwargs",
    )


def build_prompt_source(
    data_cfg: Any,
    tokenizer: Tokenizer,
    seed: int,
    max_prompt_len: int,
    max_response_len: Optional[int] = None,
) -> PromptSource:
    """The prompt source data.source names; malformed files raise DataError here, up front."""
    source = getattr(data_cfg.source, "value", data_cfg.source)
    if source == "synthetic":
        return SyntheticPromptSource(data_cfg, tokenizer, seed, max_prompt_len, max_response_len)
    if source == "file":
        return FilePromptSource(data_cfg, tokenizer, seed, max_prompt_len, max_response_len)
    raise ConfigError("data.source", source, "is not a prompt source", "use synthetic or file")
