"""The batched decode loop of the RolloutEngine (plain decoding, no R3 recording): the GPU path.

Every step decodes ALL `S` slots of the cache with one fixed-shape forward (`graphs.DecodeStep`,
a CUDA graph on CUDA); idle slots run too and their results are ignored, so there is no row
gather and no data-dependent shape. The per-slot state lives on the device: the pending token,
its position, an active flag, and the response tokens / log-probs written in place column by
column. The host mirrors the counts (each active slot emits exactly one token per step), so it
knows, without reading the device, when a slot reaches its token cap and which kv bucket a
step needs. The device is read only at a sync point: when some slot reaches its cap, every
`sync_every` steps when stop tokens are set (a sequence that stopped earlier runs on until the
sync; its extra tokens are cut at the stop token), and to hand finished responses back.

Continuous batching: freed slots are refilled from the waiting prompts in batches (when at
least `refill_min` slots are free, or the batch ran dry), with one prefill forward per batch at
a prompt width rounded up to `width_multiple` (fewer distinct shapes).

Positions of idle slots stay where they were (inside the cache), so their dummy writes touch
only positions a refilled sequence overwrites before reading (see kv.py).
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import torch
from transformers import PreTrainedModel

from miles_hydra.engine.rollout.graphs import DecodeStep
from miles_hydra.engine.rollout.kv import StaticKVCache, cached_forward
from miles_hydra.engine.rollout.sampling import GenOutput, SamplingParams, sample_with_log_probs


class BatchedDecoder:
    """One generate() call over `slots` cache rows; see the module docstring."""

    def __init__(
        self,
        lm: PreTrainedModel,
        cache: StaticKVCache,
        step: DecodeStep,
        slots: int,
        generator: torch.Generator,
        sync_every: int = 16,
        width_multiple: int = 16,
    ) -> None:
        self.lm, self.cache, self.step, self.slots = lm, cache, step, slots
        self.generator = generator
        self.sync_every = sync_every
        self.width_multiple = width_multiple
        self.refill_min = max(1, slots // 4)
        self.device = cache.keys[0].device

    @torch.no_grad()
    def run(
        self, prompts: list[list[int]], params: SamplingParams, caps: list[int]
    ) -> list[GenOutput]:
        """Responses for `prompts` (prompt order); response i ends at caps[i] tokens or a stop."""
        s, dev = self.slots, self.device
        width = max(caps) + 1  # + a scratch column written by idle slots
        self.pending = torch.zeros(s, dtype=torch.long, device=dev)
        self.positions = torch.zeros(s, dtype=torch.long, device=dev)
        self.active = torch.zeros(s, dtype=torch.long, device=dev)
        self.count = torch.zeros(s, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(s, width, dtype=torch.long, device=dev)
        self.log_probs = torch.zeros(s, width, dtype=torch.float32, device=dev)
        self.stops = torch.tensor(sorted(set(params.stop_token_ids)), dtype=torch.long, device=dev)
        self.rows = torch.arange(s, device=dev)
        self.index: list[Optional[int]] = [None] * s  # prompt index in each slot
        self.count_host = [0] * s
        self.prompt_len = [0] * s
        outputs: list[Optional[GenOutput]] = [None] * len(prompts)
        waiting = deque(range(len(prompts)))
        while True:
            self._collect(params, caps, outputs)
            free = [i for i in range(s) if self.index[i] is None]
            busy = s - len(free)
            if waiting and free and (not busy or len(free) >= min(len(waiting), self.refill_min)):
                admitted = [(slot, waiting.popleft()) for slot in free[: len(waiting)]]
                self._prefill(admitted, prompts, params)
                continue
            if not busy:
                break
            self._decode(params, caps)
        assert all(o is not None for o in outputs)
        return outputs  # type: ignore[return-value]

    def _busy(self) -> list[int]:
        return [i for i in range(self.slots) if self.index[i] is not None]

    def _decode(self, params: SamplingParams, caps: list[int]) -> None:
        """Steps until the first slot reaches its cap (or `sync_every` steps with stops)."""
        busy = self._busy()
        steps = min(caps[self.index[i]] - self.count_host[i] for i in busy)
        if self.stops.numel():
            steps = min(steps, self.sync_every)
        top = max(self.prompt_len[i] + self.count_host[i] - 1 for i in busy)
        for k in range(steps):
            logits = self.step(self.pending, self.positions, top + k)
            token, log_prob = sample_with_log_probs(logits, params, self.generator)
            column = self.count.clamp(max=self.tokens.shape[1] - 1)
            self.tokens[self.rows, column] = token
            self.log_probs[self.rows, column] = log_prob
            self.pending.copy_(token)
            self.positions += self.active
            self.count += self.active
        for i in busy:
            self.count_host[i] += steps

    def _prefill(
        self, admitted: list[tuple[int, int]], prompts: list[list[int]], params: SamplingParams
    ) -> None:
        lens = [len(prompts[i]) for _, i in admitted]
        multiple = self.width_multiple
        width = min(-(-max(lens) // multiple) * multiple, self.cache.max_len)
        ids = torch.zeros(len(admitted), width, dtype=torch.long)
        for r, (_, i) in enumerate(admitted):
            ids[r, : lens[r]] = torch.tensor(prompts[i])
        ids = ids.to(self.device, non_blocking=True)
        rows = torch.tensor([slot for slot, _ in admitted], device=self.device)
        positions = torch.arange(width, device=self.device).expand(len(admitted), width)
        last = torch.tensor(lens, device=self.device) - 1
        out = cached_forward(self.lm, self.cache, ids, positions, rows, last, kv_len=width)
        token, log_prob = sample_with_log_probs(out.logits, params, self.generator)
        self.pending[rows] = token
        self.positions[rows] = last + 1
        self.active[rows] = 1
        self.count[rows] = 1
        self.tokens[rows, 0] = token
        self.log_probs[rows, 0] = log_prob
        for r, (slot, index) in enumerate(admitted):
            self.index[slot], self.count_host[slot], self.prompt_len[slot] = index, 1, lens[r]

    def _collect(
        self, params: SamplingParams, caps: list[int], outputs: list[Optional[GenOutput]]
    ) -> None:
        """Hand back the responses that hit their cap or a stop token; free their slots."""
        busy = self._busy()
        if not busy:
            return
        ends = {i: self.count_host[i] for i in busy if self.count_host[i] >= caps[self.index[i]]}
        stopped: set[int] = set()
        if self.stops.numel():
            valid = torch.arange(self.tokens.shape[1], device=self.device) < self.count[:, None]
            hit = torch.isin(self.tokens, self.stops) & valid
            first = torch.where(hit.any(1), hit.float().argmax(1), -1).tolist()
            for i in busy:
                if first[i] >= 0:
                    ends[i] = first[i] + 1
                    stopped.add(i)
        if not ends:
            return
        done = sorted(ends)
        rows = torch.tensor(done, device=self.device)
        tokens, log_probs = self.tokens[rows].tolist(), self.log_probs[rows].tolist()
        for r, i in enumerate(done):
            n = ends[i]
            outputs[self.index[i]] = GenOutput(
                response_ids=tokens[r][:n], rollout_log_probs=log_probs[r][:n],
                finished=i in stopped,
            )  # fmt: skip
            self.index[i] = None
        self.active[rows] = 0
