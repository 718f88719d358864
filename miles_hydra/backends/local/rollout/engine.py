"""RolloutEngine: batched generation with a static KV cache, continuous batching, and
speculative decoding with the policy's MTP draft head.

One generation step, for every active slot: the draft proposes `num_steps` tokens greedily
from the last verified hidden state (none when speculation is off); the target runs ONE forward
over [pending token, drafts] at the slot's next positions; `speculative_accept` keeps a prefix
of the drafts and draws the next token. Plain decoding is the same step with zero drafts.
Rejected positions are rolled back by not advancing the slot's length (see kv.py). Finished
slots are refilled from the waiting prompts (continuous batching).

GPU path (issues 6 and 8): without R3 recording, plain and speculative decoding run
`decode.BatchedDecoder` instead: all slots decoded by one fixed-shape step (draft chain,
verify forward, acceptance, sampling, bookkeeping) captured as a CUDA graph on CUDA
(graphs.py, step.py), attention through a Triton kernel that reads each slot's own length,
state on the device, few host syncs. It is the default on CUDA (`batched_decode=None`);
`batched_decode=False` selects the per-slot loop below, which CPU and R3 recording use (MoE
routing has data-dependent shapes). `cuda_graphs=False` / `compile_decode=True` /
`attn_kernel=False` switch that loop's graphs off / torch.compile on / the Triton attention
kernel off. The driver passes these four from `backend.rollout_batched`, `rollout_cuda_graphs`,
`rollout_compile` and `rollout_attn_kernel` (actors.py). The cache is preallocated and reused
across calls and weights are updated in place, so captured graphs stay valid.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from miles_hydra.backends.local import weight_sync
from miles_hydra.backends.local.models import PolicyModel, build_policy, torch_dtype
from miles_hydra.backends.local.rollout.decode import BatchedDecoder
from miles_hydra.backends.local.rollout.graphs import DecodeStep
from miles_hydra.backends.local.rollout.kv import StaticKVCache, cached_forward
from miles_hydra.backends.local.rollout.routing import RoutingRecorder
from miles_hydra.backends.local.rollout.sampling import (
    GenOutput,
    SamplingParams,
    sample,
    sampling_probs,
    speculative_accept,
    token_log_probs,
)
from miles_hydra.config.model import ModelConfig
from miles_hydra.config.precision import PrecisionConfig
from miles_hydra.config.speculative import SpeculativeConfig


def _on_own_stream(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a RolloutEngine method inside ``self._own_stream()``."""

    @functools.wraps(method)
    def wrapper(self: RolloutEngine, *args: Any, **kwargs: Any) -> Any:
        with self._own_stream():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class _Seq:
    """A prompt being generated in a cache slot."""

    index: int  # position in the generate() prompt list
    prompt_len: int
    cap: int  # response length cap
    response: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    draft_tokens: int = 0
    accepted_tokens: int = 0
    verify_steps: int = 0
    accept_hist: list[int] = field(default_factory=list)  # verify steps by accepted count
    finished: bool = False  # a stop token ended it


class RolloutEngine:
    """Generates responses with the current policy weights; see the module docstring."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        spec_cfg: SpeculativeConfig,
        precision_cfg: PrecisionConfig,
        device: str = "cpu",
        seed: int = 0,
        max_batch_size: int = 64,
        num_threads: Optional[int] = None,
        policy: Optional[PolicyModel] = None,
        *,
        batched_decode: Optional[bool] = None,
        cuda_graphs: bool = True,
        compile_decode: bool = False,
        attn_kernel: bool = True,
    ) -> None:
        """`policy`: use this model (cast to the rollout dtype/device) instead of building one.
        batched_decode: decoding through decode.BatchedDecoder (None = on CUDA only).
        cuda_graphs / compile_decode / attn_kernel: for that loop (CUDA only);
            attn_kernel=False attends through SDPA over kv buckets."""
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.dtype = torch_dtype(precision_cfg.rollout_dtype)
        if policy is None:
            policy = build_policy(model_cfg, spec_cfg, self.dtype, self.device, seed)
        self.policy: PolicyModel = policy.to(device=self.device, dtype=self.dtype).eval()
        self.policy.requires_grad_(False)
        speculate = spec_cfg.enabled and self.policy.draft is not None
        self.num_draft_steps = spec_cfg.num_steps if speculate else 0
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.cache: Optional[StaticKVCache] = None
        self._params = self.policy.state_dict(keep_vars=True)
        on_cuda = self.device.type == "cuda"
        self.batched_decode = on_cuda if batched_decode is None else batched_decode
        self.cuda_graphs = cuda_graphs
        self.compile_decode = compile_decode
        self.attn_kernel = attn_kernel
        self._decode_step: Optional[DecodeStep] = None
        self._group_stop: Optional[_GroupStop] = None
        self._stream: Optional[torch.cuda.Stream] = None  # generate()'s CUDA stream
        self._mapped: Optional[weight_sync.MappedWeights] = None  # attach_weights()

    # ----------------------------------------------------------------- weights
    def update_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        """Copy `state_dict` (PolicyModel keys: ``lm.*``, ``draft.*``) into the engine's tensors
        in place, cast to the engine dtype. Returns the number of tensors copied."""
        unknown = sorted(set(state_dict) - set(self._params))
        if unknown:
            raise KeyError(f"update_weights: keys not in the rollout policy: {unknown[:5]}")
        with torch.no_grad():
            for name, value in state_dict.items():
                self._params[name].data.copy_(value)
        return len(state_dict)

    def weight_place(self) -> weight_sync.Place:
        """Where this engine's weights live (the trainer picks a sync route from it)."""
        return weight_sync.place_of(self.device)

    def attach_weights(self, source: weight_sync.WeightSource) -> str:
        """Map the trainer's exported weights once (``TrainerActor.weight_sources``); returns
        the route. ``pull_weights`` then copies them in place, so captured graphs stay valid."""
        self._mapped = weight_sync.MappedWeights(source, self._params)
        return self._mapped.route.value

    def pull_weights(self) -> int:
        """Copy (cast) the mapped trainer weights into the engine's; returns tensors copied."""
        assert self._mapped is not None, "attach_weights() first"
        return self._mapped.pull()

    # -------------------------------------------------------------- generation
    @contextlib.contextmanager
    def _own_stream(self) -> Iterator[None]:
        """On a CUDA device, the engine's own stream: generation in a background thread of the
        trainer's process (the one-step-off pipeline) overlaps on the GPU with training on the
        default stream. Weights written on the caller's stream come first."""
        if self.device.type != "cuda":
            yield
            return
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)
        with torch.cuda.stream(self._stream):
            yield
        caller.wait_stream(self._stream)

    @_on_own_stream
    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        record_routing: bool = False,
        max_new_tokens_per_prompt: Optional[list[int]] = None,
        groups: Optional[list[int]] = None,
        stop_after_groups: Optional[int] = None,
    ) -> list[GenOutput]:
        """Generate one response per prompt (token ids); results in prompt order.
        max_new_tokens_per_prompt: a response length cap per prompt (each capped by
        params.max_new_tokens); None = params.max_new_tokens for all.
        groups / stop_after_groups (partial rollout, over-sampling): a group id per prompt; once
        ``stop_after_groups`` groups have all their prompts done, generation stops and every
        prompt still running or waiting comes back ``aborted`` with the tokens it has so far
        (prompts are admitted in list order, so put the ones to finish first at the front).
        On CUDA it runs on the engine's own stream (``_own_stream``)."""
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("generate: every prompt needs at least one token")
        stop = None
        if stop_after_groups is not None:
            if groups is None or len(groups) != len(prompts):
                raise ValueError("generate: stop_after_groups needs one group id per prompt")
            stop = _GroupStop(groups, stop_after_groups)
        caps = [params.max_new_tokens] * len(prompts)
        if max_new_tokens_per_prompt is not None:
            if len(max_new_tokens_per_prompt) != len(prompts):
                raise ValueError("generate: max_new_tokens_per_prompt needs one cap per prompt")
            caps = [max(1, min(c, params.max_new_tokens)) for c in max_new_tokens_per_prompt]
        slots = min(len(prompts), self.max_batch_size)
        max_len = max(len(p) for p in prompts) + params.max_new_tokens + self.num_draft_steps + 1
        batched = self.batched_decode and not record_routing
        if batched:  # slots in powers of two (idle ones decode masked): few graphs to capture
            slots = min(1 << (slots - 1).bit_length(), max(slots, self.max_batch_size))
        self._ensure_cache(slots, max_len)
        if batched:
            if self._decode_step is None or self._decode_step.cache is not self.cache:
                self._decode_step = DecodeStep(
                    self.policy, self.cache, self.num_draft_steps, self.seed,
                    self.cuda_graphs, self.compile_decode, self.attn_kernel,
                )  # fmt: skip
            decoder = BatchedDecoder(self._decode_step, slots, self.generator)
            return decoder.run(prompts, params, caps, stop)
        recorder = RoutingRecorder(self.policy.lm, slots, max_len) if record_routing else None
        hidden_size = self.policy.lm.config.hidden_size
        self._pending = torch.zeros(slots, dtype=torch.long, device=self.device)
        self._lengths = torch.zeros(slots, dtype=torch.long, device=self.device)
        self._hidden = torch.zeros(slots, hidden_size, dtype=self.dtype, device=self.device)
        states: list[Optional[_Seq]] = [None] * slots
        outputs: list[Optional[GenOutput]] = [None] * len(prompts)
        waiting = deque(range(len(prompts)))
        self._group_stop = stop
        while True:
            if stop is not None and stop.reached:
                self._abort(states, outputs, waiting, recorder)
                break
            free = [s for s in range(slots) if states[s] is None]
            if free and waiting:
                admitted = [(s, waiting.popleft()) for s in free[: len(waiting)]]
                self._prefill(admitted, prompts, caps, params, states, outputs, recorder)
                continue  # sequences may end at their first token; refill again
            active = [s for s in range(slots) if states[s] is not None]
            if not active:
                break
            self._step(active, params, states, outputs, recorder)
        assert all(o is not None for o in outputs)
        return outputs  # type: ignore[return-value]

    @staticmethod
    def _recording(
        recorder: Optional[RoutingRecorder], rows: torch.Tensor, positions: torch.Tensor
    ) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if recorder is None else recorder.record(rows, positions)

    def _ensure_cache(self, slots: int, max_len: int) -> None:
        if self.cache is None or not self.cache.fits(slots, max_len, self.dtype):
            old = self.cache
            slots = max(slots, old.slots if old else 0)
            max_len = max(max_len, old.max_len if old else 0)
            self.cache = self._decode_step = None  # free the old tensors (and graphs) first
            self.cache = StaticKVCache(self.policy.lm, slots, max_len, self.dtype, self.device)

    def _prefill(
        self,
        admitted: list[tuple[int, int]],
        prompts: list[list[int]],
        caps: list[int],
        params: SamplingParams,
        states: list[Optional[_Seq]],
        outputs: list[Optional[GenOutput]],
        recorder: Optional[RoutingRecorder],
    ) -> None:
        lens = [len(prompts[i]) for _, i in admitted]
        width = max(lens)
        ids = torch.zeros(len(admitted), width, dtype=torch.long)
        for r, (_, i) in enumerate(admitted):
            ids[r, : lens[r]] = torch.tensor(prompts[i])
        ids = ids.to(self.device)
        rows = torch.tensor([s for s, _ in admitted], device=self.device)
        positions = torch.arange(width, device=self.device).expand(len(admitted), width)
        last = torch.tensor(lens, device=self.device) - 1
        with self._recording(recorder, rows, positions):
            out = cached_forward(self.policy.lm, self.cache, ids, positions, rows, logits_at=last)
        token = sample(sampling_probs(out.logits, params), self.generator)
        log_prob = token_log_probs(out.logits, token, params)
        self._pending[rows] = token
        self._lengths[rows] = last + 1
        self._hidden[rows] = out.hidden
        for r, (slot, index) in enumerate(admitted):
            states[slot] = _Seq(index=index, prompt_len=lens[r], cap=caps[index])
            done = self._emit(states[slot], [int(token[r])], [float(log_prob[r])], params)
            if done:
                self._finish(slot, states, outputs, recorder)

    def _step(
        self,
        active: list[int],
        params: SamplingParams,
        states: list[Optional[_Seq]],
        outputs: list[Optional[GenOutput]],
        recorder: Optional[RoutingRecorder],
    ) -> None:
        rows = torch.tensor(active, device=self.device)
        pending, lengths = self._pending[rows], self._lengths[rows]
        drafts = self._propose(self._hidden[rows], pending)  # [A, k]
        k = drafts.shape[1]
        ids = torch.cat([pending[:, None], drafts], dim=1)
        positions = lengths[:, None] + torch.arange(k + 1, device=self.device)
        contiguous = active == list(range(len(active)))
        with self._recording(recorder, rows, positions):
            out = cached_forward(
                self.policy.lm, self.cache, ids, positions, None if contiguous else rows
            )
        vocab = out.logits.shape[-1]
        probs = sampling_probs(out.logits.reshape(-1, vocab), params).view(
            len(active), k + 1, vocab
        )
        accepted, token = speculative_accept(probs, drafts, self.generator)
        at = torch.arange(len(active), device=self.device)
        draft_lp = token_log_probs(out.logits[:, :k], drafts, params)  # [A, k]
        token_lp = token_log_probs(out.logits[at, accepted], token, params)  # [A]
        self._pending[rows] = token
        self._lengths[rows] = lengths + accepted + 1
        self._hidden[rows] = out.hidden[at, accepted]
        accepted_list, drafts_list = accepted.tolist(), drafts.tolist()
        draft_lp_list, token_list, token_lp_list = (
            draft_lp.tolist(),
            token.tolist(),
            token_lp.tolist(),
        )
        for r, slot in enumerate(active):
            seq, a = states[slot], accepted_list[r]
            if k:
                seq.draft_tokens += k
                seq.accepted_tokens += a
                seq.verify_steps += 1
                seq.accept_hist = seq.accept_hist or [0] * (k + 1)
                seq.accept_hist[a] += 1
            tokens = drafts_list[r][:a] + [token_list[r]]
            lps = draft_lp_list[r][:a] + [token_lp_list[r]]
            if self._emit(seq, tokens, lps, params):
                self._finish(slot, states, outputs, recorder)

    def _propose(self, hidden: torch.Tensor, pending: torch.Tensor) -> torch.Tensor:
        """Greedy (top-1) draft chain of `num_draft_steps` tokens per row -> [A, k]."""
        drafts = []
        token = pending
        for _ in range(self.num_draft_steps):
            logits, hidden = self.policy.draft_step(hidden, token)
            token = logits.argmax(-1)
            drafts.append(token)
        if not drafts:
            return pending.new_zeros(pending.shape[0], 0)
        return torch.stack(drafts, dim=1)

    @staticmethod
    def _emit(seq: _Seq, tokens: list[int], log_probs: list[float], params: SamplingParams) -> bool:
        """Append tokens until a stop token or max_new_tokens; True when the sequence ended."""
        for token, lp in zip(tokens, log_probs):
            seq.response.append(token)
            seq.log_probs.append(lp)
            if token in params.stop_token_ids:
                seq.finished = True
                return True
            if len(seq.response) >= seq.cap:
                return True
        return False

    def _abort(
        self,
        states: list[Optional[_Seq]],
        outputs: list[Optional[GenOutput]],
        waiting: deque,
        recorder: Optional[RoutingRecorder],
    ) -> None:
        """Stop every running and waiting prompt; each comes back aborted, tokens so far."""
        for slot, seq in enumerate(states):
            if seq is not None:
                self._finish(slot, states, outputs, recorder, aborted=True)
        while waiting:
            outputs[waiting.popleft()] = GenOutput([], [], finished=False, aborted=True)

    def _finish(
        self,
        slot: int,
        states: list[Optional[_Seq]],
        outputs: list[Optional[GenOutput]],
        recorder: Optional[RoutingRecorder],
        aborted: bool = False,
    ) -> None:
        seq = states[slot]
        if not aborted and self._group_stop is not None:
            self._group_stop.done(seq.index)
        routed: Optional[np.ndarray] = None
        if recorder is not None:
            routed = recorder.take(slot, seq.prompt_len + len(seq.response) - 1)
        outputs[seq.index] = GenOutput(
            response_ids=seq.response,
            rollout_log_probs=seq.log_probs,
            finished=seq.finished,
            routed_experts=routed,
            spec_draft_tokens=seq.draft_tokens,
            spec_accepted_tokens=seq.accepted_tokens,
            spec_verify_steps=seq.verify_steps,
            spec_accept_hist=seq.accept_hist,
            aborted=aborted,
        )
        states[slot] = None


class _GroupStop:
    """Counts groups whose prompts are all done; ``reached`` once ``target`` of them are."""

    def __init__(self, groups: list[int], target: int) -> None:
        self.groups = groups
        self.left: dict[int, int] = {}
        for g in groups:
            self.left[g] = self.left.get(g, 0) + 1
        self.target = target
        self.complete = 0

    def done(self, index: int) -> None:
        g = self.groups[index]
        self.left[g] -= 1
        if self.left[g] == 0:
            self.complete += 1

    @property
    def reached(self) -> bool:
        return self.complete >= self.target
