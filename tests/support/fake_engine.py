"""A pure-Python stand-in for the rollout engine and prompt source, for collector tests.

``FakeEngine.generate`` honours the contract of ``RolloutEngine.generate(..., groups,
stop_after_groups)``: all prompts decode in lockstep, one token per step; once enough groups
are done, the rest come back ``aborted`` with their tokens so far. Prompt tokens are >= 1000,
response tokens < 1000, so a resumed prompt (prompt + partial response) splits back apart. A
sample's length is fixed by its first token (heavy-tailed), so resuming it finishes exactly the
response an uninterrupted run would have produced; token t has log-prob ``-t / 1000``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

from miles_hydra.tasks.source import Prompt

STOP = 0


@dataclass
class FakeOut:
    response_ids: list[int]
    rollout_log_probs: list[float]
    finished: bool
    aborted: bool = False
    routed_experts: Any = None


def target_length(first: int) -> int:
    """Response length a sample aims for (stop token included): mostly short, a long tail."""
    return 2 + (first % 5) if first % 7 else 30 + first % 11


@dataclass
class FakeEngine:
    seed: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def generate(
        self,
        prompts: list[list[int]],
        caps: list[int],
        groups: list[int],
        stop: Optional[int],
    ) -> list[FakeOut]:
        self.calls.append({"prompts": [list(p) for p in prompts], "caps": list(caps), "stop": stop})
        done_before = [_response_part(p) for p in prompts]
        new: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        active = list(range(len(prompts)))
        left: dict[int, int] = {}
        for g in groups:
            left[g] = left.get(g, 0) + 1
        complete = 0
        while active and (stop is None or complete < stop):
            for i in list(active):
                old = done_before[i]
                first = old[0] if old else (new[i][0] if new[i] else None)
                if first is None:
                    token = 1 + self.rng.randrange(998)
                elif len(old) + len(new[i]) + 1 >= target_length(first):
                    token = STOP
                else:
                    token = 1 + (first + len(old) + len(new[i])) % 998
                new[i].append(token)
                if token == STOP or len(new[i]) >= caps[i]:
                    finished[i] = token == STOP
                    active.remove(i)
                    left[groups[i]] -= 1
                    complete += left[groups[i]] == 0
        return [
            FakeOut(n, [-t / 1000 for t in n], finished[i], aborted=i in active)
            for i, n in enumerate(new)
        ]


def _response_part(ids: list[int]) -> list[int]:
    """The trailing response tokens (< 1000) of a resumed prompt."""
    k = len(ids)
    while k and ids[k - 1] < 1000:
        k -= 1
    return ids[k:]


@dataclass
class FakeSource:
    """Prompts with ids ``[1000 + k]``; label ``k`` (state: the counter)."""

    count: int = 0

    def next_batch(self, n: int) -> list[Prompt]:
        ks = range(self.count, self.count + n)
        out = [Prompt(f"p{k}", [1000 + k], k, {"index": k}) for k in ks]
        self.count += n
        return out


def parity_reward(prompt: Prompt, response: list[int]) -> float:
    """1 when the response length is even: groups of mixed lengths get reward variance."""
    return float(len(response) % 2 == 0)
