"""One decode step of the batched loop as pure tensor code over device-side state.

`advance` decodes every slot of the cache at once: with `k` draft steps it first drafts k
tokens per slot with the MTP head (greedy chain), then runs ONE target forward over
[pending token, drafts] at each slot's next positions, keeps the accepted prefix of the drafts
by the speculative-sampling rule (draft d_i accepted with probability p(d_i), p the target's
sampling distribution; at the first rejection the next token is drawn from p with d_i removed,
else a bonus token from the last position) and emits accepted drafts + one token; with k = 0
it is plain decoding. Stop tokens and per-slot caps are applied on the device: a slot that
emits a stop token or reaches its cap turns inactive and stays put. Idle slots run too (fixed
shapes) and their writes land outside every live response and before every live position
(see kv.py). No host sync and no data-dependent shape: the step is captured as a CUDA graph
(graphs.py); the host reads the state only between batches of steps (decode.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from miles_hydra.backends.local.rollout.step_sampler import StepSampler

MAX_STOPS = 16  # stop-token slots on the device (padded with -1)

Forward = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Propose = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DecodeState:
    """Per-slot decode state on the device, allocated once per slot count and reused across
    generate() calls (captured graphs hold these addresses)."""

    def __init__(
        self,
        slots: int,
        width: int,
        hidden_size: int,
        draft_steps: int,
        seed: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        long = dict(dtype=torch.long, device=device)
        self.slots, self.width, self.draft_steps = slots, width, draft_steps
        self.pending = torch.zeros(slots, **long)  # next input token of each slot
        self.positions = torch.zeros(slots, **long)  # its position
        self.count = torch.zeros(slots, **long)  # response tokens emitted
        self.cap = torch.ones(slots, **long)  # response length cap
        self.active = torch.zeros(slots, dtype=torch.bool, device=device)
        self.stopped = torch.zeros(slots, dtype=torch.bool, device=device)
        self.tokens = torch.zeros(slots, width, **long)  # responses, written column by column
        self.log_probs = torch.zeros(slots, width, dtype=torch.float32, device=device)
        self.hidden = torch.zeros(slots, hidden_size, dtype=dtype, device=device)  # drafts' input
        self.hist = torch.zeros(slots, draft_steps + 1, **long)  # verify steps by accepted count
        self.stops = torch.full((MAX_STOPS,), -1, **long)
        self.seed = torch.full((1,), seed, **long)  # noise key of the next draw, advanced per step
        self.rows = torch.arange(slots, device=device)
        self.offsets = torch.arange(draft_steps + 1, device=device)

    def begin(self, stop_token_ids: list[int]) -> None:
        """Reset for a generate() call: every slot idle; the stop tokens of its params."""
        stops = sorted(set(stop_token_ids))
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop tokens, got {len(stops)}")
        self.active.zero_()
        self.stopped.zero_()
        self.stops.fill_(-1)
        if stops:
            self.stops[: len(stops)] = torch.tensor(stops, device=self.stops.device)

    def snapshot(self) -> list[torch.Tensor]:
        return [t.clone() for t in self._tensors()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for t, s in zip(self._tensors(), saved):
            t.copy_(s)

    def _tensors(self) -> list[torch.Tensor]:
        return [self.pending, self.positions, self.count, self.active, self.stopped,
                self.tokens, self.log_probs, self.hidden, self.hist, self.seed]  # fmt: skip


def advance(
    state: DecodeState,
    forward: Forward,
    propose: Propose,
    sampler: StepSampler,
    kv_len: int,
    max_position: int,
) -> None:
    """One step for every slot (see the module docstring); updates `state` in place.
    forward(ids [S, T], positions [S, T], kv_len) -> (logits [S, T, V], hidden [S, T, H]);
    propose(hidden [S, H], pending [S]) -> drafts [S, k]. max_position: the cache's last index
    (idle slots' positions are clamped to it)."""
    s, k = state, state.draft_steps
    pending = s.pending[:, None]
    ids = torch.cat([pending, propose(s.hidden, s.pending)], 1) if k else pending
    positions = (s.positions[:, None] + s.offsets).clamp(max=max_position)
    logits, hidden = forward(ids, positions, kv_len)
    if k:
        drafts = ids[:, 1:]
        accepted, token, token_lp, draft_lp = _accept(logits, drafts, sampler)
        s.hidden.copy_(hidden[s.rows, accepted])
        before = s.offsets < accepted[:, None]
        emit = torch.where(before, ids.roll(-1, 1), token[:, None])  # drafts[:a], then token
        emit_lp = torch.where(
            before, torch.cat([draft_lp, token_lp[:, None]], 1), token_lp[:, None]
        )
        s.hist[s.rows, accepted] += s.active.long()
        n_new = accepted + 1
    else:
        token, token_lp, _ = sampler.sample(logits[:, 0])
        emit, emit_lp = token[:, None], token_lp[:, None]
        n_new = torch.ones_like(s.count)
    hit = (emit[..., None] == s.stops).any(-1) & (s.offsets < n_new[:, None])
    first = torch.where(hit.any(1), hit.long().argmax(1), k + 1)
    keep = torch.minimum(torch.minimum(n_new, first + 1), s.cap - s.count)
    columns = (s.count[:, None] + s.offsets).clamp(max=s.width - 1)
    s.tokens.scatter_(1, columns, emit)
    s.log_probs.scatter_(1, columns, emit_lp)
    act = s.active.long()
    s.count += keep * act
    s.positions += n_new * act
    s.pending.copy_(torch.where(s.active, token, s.pending))
    s.stopped |= s.active & (first < keep)
    s.active &= ~s.stopped & (s.count < s.cap)
    s.seed += 1


def _accept(
    logits: torch.Tensor, drafts: torch.Tensor, sampler: StepSampler
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Speculative sampling for greedy (point-mass) drafts: logits [S, k+1, V], drafts [S, k]
    -> (accepted a [S] in 0..k, next token [S], its log-prob [S], the drafts' log-probs [S, k])."""
    n, k = drafts.shape
    p_draft, draft_lp = sampler.draft_probs(logits[:, :k], drafts)
    u = sampler.uniform((n, k), logits.device)
    accepted = (u < p_draft).long().cumprod(-1).sum(-1)
    rows = torch.arange(n, device=logits.device)
    rejected = drafts.gather(1, accepted.clamp(max=k - 1)[:, None]).squeeze(1)
    exclude = torch.where(accepted < k, rejected, torch.full_like(rejected, -1))
    token, token_lp, _ = sampler.sample(logits[rows, accepted], exclude)
    return accepted, token, token_lp, draft_lp
