"""The decode step of the batched loop (step.advance), eager or replayed as CUDA graphs.

`DecodeStep` owns, per slot count, the device-side `DecodeState` and runs `step.advance` on it.
On CUDA the whole step (draft chain, target forward, acceptance, sampling, bookkeeping) is
captured once per (slots, temperature, kv_len) as a `torch.cuda.CUDAGraph` and replayed: one
launch per step instead of hundreds. Sampling noise comes from a seed tensor the step advances
in place (step_sampler.py), so replays draw fresh noise without a host sync.

Attention: on CUDA (with Triton) every query reads exactly its slot's positions 0..p through
`attn_kernel.decode_attention`, so one graph per slot count serves every context length
(kv_len = the cache length, unused). Without the kernel (`decode_kernel=False`, set by
`backend.rollout_attn_kernel=false`, or no Triton) SDPA attends a fixed `kv_len` bucket (a
multiple of `bucket_size` covering every active position; one graph per bucket). With `compile_step` the whole step (draft chain,
verify forward, acceptance, sampling bookkeeping; the Triton kernels stay opaque custom ops) is
torch.compile'd (inductor, one graph) before capture, which fuses its small element-wise
kernels: one compile per slot count (tens of seconds).

Capture needs two warm-up runs of the step (kernel compilation, allocator); they run on a
snapshot of the state that is restored afterwards, so capturing emits no tokens. Their KV
writes land at positions the real steps write again before reading them (see kv.py).

Graphs hold pointers to the state, the cache and the weights: weights must be updated in place
(RolloutEngine.update_weights does) and a new cache needs a new DecodeStep. Top-k/top-p
sampling (torch sampler, not capturable) and CPU run the same step eagerly.
"""

from __future__ import annotations

import torch

from miles_hydra.backends.local.models import PolicyModel
from miles_hydra.backends.local.rollout import attn_kernel
from miles_hydra.backends.local.rollout.kv import StaticKVCache, cached_forward
from miles_hydra.backends.local.rollout.step import DecodeState, advance
from miles_hydra.backends.local.rollout.step_sampler import StepSampler


def _is_moe(policy: PolicyModel) -> bool:
    """MoE blocks route with data-dependent shapes (not capturable); they stay eager."""
    cfg = policy.lm.config
    return bool(getattr(cfg, "num_experts", 0) or getattr(cfg, "num_local_experts", 0))


class DecodeStep:
    """`advance` over the cache's slots, eager or as CUDA graphs; see the module docstring."""

    def __init__(
        self,
        policy: PolicyModel,
        cache: StaticKVCache,
        draft_steps: int,
        seed: int,
        use_graphs: bool,
        compile_step: bool = False,
        decode_kernel: bool = True,
        bucket_size: int = 64,
    ) -> None:
        self.policy, self.cache, self.draft_steps = policy, cache, draft_steps
        self.seed = seed
        self.device = cache.keys[0].device
        on_cuda = self.device.type == "cuda"
        self.use_graphs = use_graphs and on_cuda and not _is_moe(policy)
        self.compile_step = compile_step and self.use_graphs
        self.kernels = on_cuda and attn_kernel.triton_available()
        self.decode_kernel = self.kernels and decode_kernel
        self.bucket_size = bucket_size
        self._step_fn = self._eager_step
        if self.compile_step:
            self._step_fn = torch.compile(self._eager_step, dynamic=False)
        self._states: dict[int, DecodeState] = {}
        self._graphs: dict[tuple[int, float, int], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def state(self, slots: int) -> DecodeState:
        """The device-side state of `slots` slots (made once, reused across calls)."""
        if slots not in self._states:
            lm = self.policy.lm
            self._states[slots] = DecodeState(
                slots, self.cache.max_len, lm.config.hidden_size, self.draft_steps,
                self.seed * 1_000_003 + slots, self.cache.keys[0].dtype, self.device,
            )  # fmt: skip
        return self._states[slots]

    def sampler(self, state: DecodeState, params, generator: torch.Generator) -> StepSampler:
        return StepSampler(params, state.seed, generator, use_kernels=self.kernels)

    def kv_bucket(self, max_position: int) -> int:
        """Attended length for steps whose positions are at most `max_position`."""
        if self.decode_kernel or self.compile_step:
            return self.cache.max_len
        size = self.bucket_size * (max_position // self.bucket_size + 1)
        return min(size, self.cache.max_len)

    def __call__(self, state: DecodeState, sampler: StepSampler, max_position: int) -> None:
        """One step of every slot; `max_position` bounds the positions the step touches."""
        kv_len = self.kv_bucket(max_position)
        if not (self.use_graphs and sampler.capturable):
            self._advance(state, sampler, kv_len)
            return
        key = (state.slots, sampler.temperature, kv_len)
        graph = self._graphs.get(key)
        if graph is None:
            self._graphs[key] = graph = self._capture(state, sampler, kv_len)
        graph.replay()

    def _advance(self, state: DecodeState, sampler: StepSampler, kv_len: int) -> None:
        self._step_fn(state, sampler, kv_len)

    def _eager_step(self, state: DecodeState, sampler: StepSampler, kv_len: int) -> None:
        advance(state, self._eager_forward, self._propose, sampler, kv_len, self.cache.max_len - 1)

    def _eager_forward(
        self, ids: torch.Tensor, positions: torch.Tensor, kv_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = cached_forward(self.policy.lm, self.cache, ids, positions, kv_len=kv_len,
                             decode_kernel=self.decode_kernel)  # fmt: skip
        return out.logits, out.hidden

    def _propose(self, hidden: torch.Tensor, pending: torch.Tensor) -> torch.Tensor:
        """Greedy (top-1) draft chain of `draft_steps` tokens per slot -> [S, k]."""
        drafts, token = [], pending
        for _ in range(self.draft_steps):
            logits, hidden = self.policy.draft_step(hidden, token)
            token = logits.argmax(-1)
            drafts.append(token)
        return torch.stack(drafts, 1)

    def _capture(
        self, state: DecodeState, sampler: StepSampler, kv_len: int
    ) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (compiles if asked) on a snapshot of the state, restore it,
        capture. The caller replays the graph for the real step."""
        saved = state.snapshot()
        current = torch.cuda.current_stream(self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._advance(state, sampler, kv_len)
        current.wait_stream(stream)
        state.restore(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._advance(state, sampler, kv_len)
        return graph
