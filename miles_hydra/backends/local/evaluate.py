"""Evaluation and response text: ``decode_response`` (token ids -> the text a reward reads)
and ``EvalRunner`` (mean reward of the current policy on the held-out prompts, and the sampling
params of training rollouts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miles_hydra.backends.local.actors import Actors
from miles_hydra.config import RunConfig
from miles_hydra.config.data import DataSource


def decode_response(tokenizer: Any, ids: list[int]) -> str:
    """Response text up to the first eos. Ids the tokenizer does not know (the model's vocab
    can be padded past the tokenizer's) become U+FFFD, which no verifier accepts."""
    out, run = [], []
    for token in ids:
        if token == tokenizer.eos_id:
            break
        if 0 <= token < tokenizer.vocab_size:
            run.append(token)
            continue
        out.append(tokenizer.decode(run) + "\ufffd")
        run = []
    out.append(tokenizer.decode(run))
    return "".join(out)


class EvalRunner:
    """Accuracy (mean reward) of the current policy on the held-out prompts -> ``eval/<name>``."""

    def __init__(
        self,
        cfg: RunConfig,
        actors: Actors,
        tokenizer: Any,
        reward_fn: Callable[[Any, str], float],
        source: Any,
    ) -> None:
        self.cfg, self.actors, self.tokenizer = cfg, actors, tokenizer
        self.reward_fn, self.source = reward_fn, source
        d = cfg.data
        data_file = d.eval_prompt_data or d.prompt_data
        self.name = d.task if d.source is DataSource.synthetic else Path(str(data_file)).stem

    def train_params(self) -> Any:
        r = self.cfg.rollout
        return self._params(r.rollout_temperature, r.rollout_top_p, r.rollout_top_k)

    def _params(self, temperature: float, top_p: float, top_k: int) -> Any:
        from miles_hydra.backends.local.rollout import SamplingParams

        return SamplingParams(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=self.cfg.rollout.rollout_max_response_len,
            stop_token_ids=[self.tokenizer.eos_id],
        )

    def run(self) -> dict[str, float]:
        r = self.cfg.rollout
        prompts = [
            p for p in self.source.eval_prompts() for _ in range(r.n_samples_per_eval_prompt)
        ]
        if not prompts:
            return {}
        start = time.perf_counter()
        params = self._params(r.eval_temperature, 1.0, -1)
        outputs = self.actors.generate([p.ids for p in prompts], params)
        rewards = [
            self.reward_fn(p, decode_response(self.tokenizer, o.response_ids))
            for p, o in zip(prompts, outputs)
        ]
        lengths = [len(o.response_ids) for o in outputs]
        return {
            f"eval/{self.name}": sum(rewards) / len(rewards),
            f"eval/{self.name}/response_len/mean": sum(lengths) / len(lengths),
            f"eval/{self.name}-truncated_ratio": sum(not o.finished for o in outputs)
            / len(outputs),
            "perf/eval_time": time.perf_counter() - start,
        }
