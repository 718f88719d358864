"""The batched decode loop of the RolloutEngine (plain and speculative decoding): the GPU path.

Every step decodes ALL `S` slots of the cache with one fixed-shape step (`graphs.DecodeStep`
running `step.advance`, a CUDA graph on CUDA); idle slots run too and their results are
ignored, so there is no row gather and no data-dependent shape. The per-slot state lives on
the device (`step.DecodeState`): pending token, position, count, cap, active/stopped flags, the
response tokens and log-probs, the drafts' input hidden state and the acceptance histogram.
Caps and stop tokens are applied on the device, so the host reads the state only at a sync:
after a batch of steps, to hand back finished responses and refill their slots.

How many steps between syncs: every active slot emits 1..k+1 tokens per step (k draft steps),
so the first slot to reach its cap does so after at most `min(cap - count)` steps. Plain
decoding without stop tokens runs exactly that many (no idle step); otherwise at most
`sync_every` (a slot that finishes earlier idles until the sync).

Continuous batching: freed slots are refilled from the waiting prompts in batches (when at
least `refill_min` slots are free, or the batch ran dry), with one prefill forward per batch at
a prompt width rounded up to `width_multiple` (fewer distinct shapes).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import torch

from miles_hydra.backends.local.rollout.graphs import DecodeStep
from miles_hydra.backends.local.rollout.kv import cached_forward
from miles_hydra.backends.local.rollout.sampling import GenOutput, SamplingParams


class BatchedDecoder:
    """One generate() call over `slots` cache rows; see the module docstring."""

    def __init__(
        self,
        step: DecodeStep,
        slots: int,
        generator: torch.Generator,
        sync_every: int = 16,
        width_multiple: int = 16,
    ) -> None:
        self.step, self.slots = step, slots
        self.lm, self.cache = step.policy.lm, step.cache
        self.k = step.draft_steps
        self.generator = generator
        self.sync_every = sync_every if not self.k else max(1, sync_every // 2)
        self.width_multiple = width_multiple
        self.refill_min = max(1, slots // 4)
        self.device = step.device

    @torch.no_grad()
    def run(
        self, prompts: list[list[int]], params: SamplingParams, caps: list[int], stop: Any = None
    ) -> list[GenOutput]:
        """Responses for `prompts` (prompt order); response i ends at caps[i] tokens or a stop.
        `stop` (engine._GroupStop): once enough groups are done, the rest come back aborted."""
        s = self.slots
        self.state = self.step.state(s)
        self.state.begin(params.stop_token_ids)
        self.sampler = self.step.sampler(self.state, params, self.generator)
        self.has_stops = bool(params.stop_token_ids)
        self.index: list[Optional[int]] = [None] * s  # prompt index in each slot
        self.count_host = [0] * s  # response tokens at least emitted (exact after a sync)
        self.prompt_len = [0] * s
        self.cap = [0] * s
        outputs: list[Optional[GenOutput]] = [None] * len(prompts)
        waiting = deque(range(len(prompts)))
        while True:
            for index in self._collect(outputs):
                if stop is not None:
                    stop.done(index)
            if stop is not None and stop.reached:
                self._collect(outputs, abort=True)
                while waiting:
                    outputs[waiting.popleft()] = GenOutput([], [], finished=False, aborted=True)
                break
            free = [i for i in range(s) if self.index[i] is None]
            busy = s - len(free)
            if waiting and free and (not busy or len(free) >= min(len(waiting), self.refill_min)):
                admitted = [(slot, waiting.popleft()) for slot in free[: len(waiting)]]
                self._prefill(admitted, prompts, caps)
                continue
            if not busy:
                break
            self._decode()
        assert all(o is not None for o in outputs)
        return outputs  # type: ignore[return-value]

    def _busy(self) -> list[int]:
        return [i for i in range(self.slots) if self.index[i] is not None]

    def _decode(self) -> None:
        """A batch of steps, up to the first possible cap (see the module docstring)."""
        busy = self._busy()
        steps = min(self.cap[i] - self.count_host[i] for i in busy)
        if self.k or self.has_stops:
            steps = min(steps, self.sync_every)
        reach = steps * (self.k + 1) + self.k  # positions a slot can touch in these steps
        top = max(self.prompt_len[i] + min(self.count_host[i] + reach, self.cap[i] + self.k)
                  for i in busy)  # fmt: skip
        for _ in range(steps):
            self.step(self.state, self.sampler, top)
        for i in busy:
            self.count_host[i] += steps

    def _prefill(self, admitted: list[tuple[int, int]], prompts: list[list[int]],
                 caps: list[int]) -> None:  # fmt: skip
        st, dev = self.state, self.device
        lens = [len(prompts[i]) for _, i in admitted]
        multiple = self.width_multiple
        width = min(-(-max(lens) // multiple) * multiple, self.cache.max_len)
        ids = torch.zeros(len(admitted), width, dtype=torch.long)
        for r, (_, i) in enumerate(admitted):
            ids[r, : lens[r]] = torch.tensor(prompts[i])
        ids = ids.to(dev, non_blocking=True)
        rows = torch.tensor([slot for slot, _ in admitted], device=dev)
        cap = torch.tensor([caps[i] for _, i in admitted], device=dev)
        positions = torch.arange(width, device=dev).expand(len(admitted), width)
        last = torch.tensor(lens, device=dev) - 1
        out = cached_forward(self.lm, self.cache, ids, positions, rows, last, kv_len=width)
        token, log_prob, _ = self.sampler.sample(out.logits)
        stopped = (token[:, None] == st.stops).any(-1)
        st.pending[rows] = token
        st.positions[rows] = last + 1
        st.count[rows] = 1
        st.cap[rows] = cap
        st.stopped[rows] = stopped
        st.active[rows] = ~stopped & (cap > 1)
        st.tokens[rows, 0] = token
        st.log_probs[rows, 0] = log_prob
        st.hidden[rows] = out.hidden.to(st.hidden.dtype)
        st.hist[rows] = 0
        st.seed += 1
        for r, (slot, index) in enumerate(admitted):
            self.index[slot], self.count_host[slot] = index, 1
            self.prompt_len[slot], self.cap[slot] = lens[r], caps[index]

    def _collect(self, outputs: list[Optional[GenOutput]], abort: bool = False) -> list[int]:
        """Read the state once; hand back the responses of slots that turned inactive (with
        `abort`, of every busy slot, the active ones marked aborted). Returns their prompt
        indices (of the finished ones only, with `abort`: none)."""
        busy = self._busy()
        if not busy:
            return []
        st = self.state
        flags = torch.stack([st.active.long(), st.count, st.stopped.long()]).tolist()
        done = busy if abort else [i for i in busy if not flags[0][i]]
        for i in busy:
            self.count_host[i] = flags[1][i]
        if not done:
            return []
        finished = [self.index[i] for i in done if not flags[0][i]]
        rows = torch.tensor(done, device=self.device)
        n_max = max(flags[1][i] for i in done)
        tokens = st.tokens[rows, :n_max].tolist()
        log_probs = st.log_probs[rows, :n_max].tolist()
        hists = st.hist[rows].tolist() if self.k else [[] for _ in done]
        for r, i in enumerate(done):
            n, hist = flags[1][i], hists[r]
            steps = sum(hist)
            accepted = sum(a * c for a, c in enumerate(hist))
            outputs[self.index[i]] = GenOutput(
                response_ids=tokens[r][:n], rollout_log_probs=log_probs[r][:n],
                finished=bool(flags[2][i]), spec_draft_tokens=self.k * steps,
                spec_accepted_tokens=accepted, spec_verify_steps=steps, spec_accept_hist=hist,
                aborted=bool(flags[0][i]),
            )  # fmt: skip
            self.index[i] = None
        return [] if abort else finished
