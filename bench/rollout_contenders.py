"""The timed cases of bench_rollout.py: HF generate() (plain / static cache) and RolloutEngine.

Every case warms up at full length before it is timed (first use of a new attention shape is
slow on CUDA, measured 2-3.6x on the first call). Eager contenders (HF plain, ours_spec, ours on
CPU): a short probe (8 new tokens) estimates the step time, the case is capped to `budget_s`
(fixed workload: fewer new tokens; heavy workload: skipped), then one untimed full-length
warm-up. HF static and our graph path: a first full call (compile / graph capture; reported as
first_call_s), a second full call whose time estimates the step (ours: warm_s), then the cap.
Then `repeats` timed calls; the lower median of their wall times is reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

PROBE_TOKENS = 8  # new tokens of the step-time probe


@dataclass
class Result:
    contender: str
    workload: str  # fixed | heavy
    batch: int  # slots (ours) / generate() batch (HF)
    prompts: int
    tokens: int  # generated tokens counted
    seconds: float  # wall time of the timed call (lower median over repeats)
    tok_s: float
    new_tokens: int  # per response (fixed) or cap (heavy) actually used
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Case:
    """What one contender is asked to do."""

    batch: int  # HF generate() batch / engine slots
    new_tokens: int  # fixed: tokens per response; heavy: the cap
    lengths: Optional[list[int]]  # heavy: target length per prompt; None = fixed workload
    budget_s: float  # estimated seconds a timed call may take
    repeats: int  # timed calls
    device: torch.device

    @property
    def workload(self) -> str:
        return "fixed" if self.lengths is None else "heavy"


def heavy_lengths(n: int, cap: int, seed: int, alpha: float = 1.1) -> list[int]:
    """Pareto(alpha) target lengths with scale cap/16, capped at `cap` (mean ~ cap/6)."""
    u = np.random.default_rng(seed).random(n)
    scale = max(1.0, cap / 16)
    return [int(min(cap, math.ceil(scale * (1.0 - x) ** (-1.0 / alpha)))) for x in u]


def _timed(device: torch.device, fn: Callable[[], int]) -> tuple[int, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, time.perf_counter() - start


def _repeat(case: Case, fn: Callable[[], int], extra: dict) -> tuple[int, float]:
    """Time `fn` case.repeats times -> (its last result, the lower-median seconds)."""
    runs = [_timed(case.device, fn) for _ in range(max(1, case.repeats))]
    times = sorted(s for _, s in runs)
    if len(runs) > 1:
        extra["rep_s"] = [round(s, 2) for _, s in runs]
    return runs[-1][0], times[(len(times) - 1) // 2]


def _probe_tokens(case: Case) -> int:
    return min(PROBE_TOKENS, case.new_tokens)


def _fit_budget(case: Case, step_s: float, chunks: int) -> tuple[int, str]:
    """(new tokens to run, note); 0 tokens = skip. `chunks`: sequential batches per call."""
    estimate = step_s * case.new_tokens * chunks
    if estimate <= case.budget_s:
        return case.new_tokens, ""
    if case.lengths is not None:
        return 0, f"skipped: estimate {estimate:.0f}s > --case-budget"
    capped = max(PROBE_TOKENS, int(case.budget_s / (step_s * chunks)))
    return capped, f"capped to {capped} new tokens by --case-budget"


def _skipped(name: str, case: Case, prompts: int, note: str) -> Result:
    return Result(name, case.workload, case.batch, prompts, 0, 0.0, 0.0, 0, note)


# --------------------------------------------------------------------------- HF generate
def _hf_run(lm, prompts: torch.Tensor, new_tokens: int, static: bool, batch: int) -> int:
    """generate() over `prompts` in chunks of `batch`, eos off; returns tokens generated."""
    kwargs = dict(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        pad_token_id=0, eos_token_id=None,
    )  # fmt: skip
    if static:
        kwargs["cache_implementation"] = "static"
    total = 0
    for start in range(0, prompts.shape[0], batch):
        chunk = prompts[start : start + batch]
        out = lm.generate(chunk, attention_mask=torch.ones_like(chunk), **kwargs)
        total += (out.shape[1] - chunk.shape[1]) * chunk.shape[0]
    return total


def run_hf(lm, prompts: torch.Tensor, static: bool, case: Case) -> Result:
    """HF generate(); heavy: each chunk of `batch` prompts runs the cap (no per-sequence
    stop without eos), and only the target lengths count as generated tokens."""
    name = "hf_static" if static else "hf_plain"
    chunks = math.ceil(prompts.shape[0] / case.batch)
    first = prompts[: case.batch]
    extra: dict = {}
    if static:  # first call compiles (CUDA); time it, then estimate from a warm full call
        _, first_s = _timed(
            case.device, lambda: _hf_run(lm, first, case.new_tokens, True, case.batch)
        )
        extra["first_call_s"] = round(first_s, 2)
        extra["compiled"] = hasattr(lm, "_compiled_call")
        _, warm_s = _timed(
            case.device, lambda: _hf_run(lm, first, case.new_tokens, True, case.batch)
        )
        new_tokens, note = _fit_budget(case, warm_s / case.new_tokens, chunks)
    else:
        probe = _probe_tokens(case)
        _, probe_s = _timed(case.device, lambda: _hf_run(lm, first, probe, False, case.batch))
        new_tokens, note = _fit_budget(case, probe_s / probe, chunks)
        if new_tokens:
            _hf_run(lm, first, new_tokens, False, case.batch)  # warm-up at full length
    if not new_tokens:
        return _skipped(name, case, prompts.shape[0], note)
    kept, seconds = _repeat(case, lambda: _hf_run(lm, prompts, new_tokens, static, case.batch),
                            extra)  # fmt: skip
    tokens = kept if case.lengths is None else sum(case.lengths)
    if case.lengths is not None:
        extra["hf_generated"] = kept  # what HF actually produced (every chunk runs the cap)
    extra["ms_per_step"] = round(1000 * seconds / (new_tokens * chunks), 2)
    return Result(name, case.workload, case.batch, prompts.shape[0], tokens, seconds,
                  tokens / seconds, new_tokens, note, extra)  # fmt: skip


# --------------------------------------------------------------------------- our engine
def run_ours(engine, prompts: list[list[int]], name: str, case: Case) -> Result:
    """RolloutEngine.generate() over all prompts through `batch` slots (continuous batching);
    heavy: the per-prompt caps go in through generate(max_new_tokens_per_prompt=...)."""
    from miles_hydra.backends.local.rollout import SamplingParams

    engine.max_batch_size = case.batch
    first = prompts[: case.batch]
    chunks = math.ceil(len(prompts) / case.batch)
    extra: dict = {}
    if engine.batched_decode:
        # graph path: a short probe would size a smaller cache and capture (compile) twice;
        # warm up at full length instead (first call: captures/compiles), estimate from a
        # second full call
        full = SamplingParams(temperature=1.0, max_new_tokens=case.new_tokens)
        _, first_s = _timed(case.device, lambda: len(engine.generate(first, full)))
        extra["first_call_s"] = round(first_s, 2)
        _, warm_s = _timed(case.device, lambda: len(engine.generate(first, full)))
        extra["warm_s"] = round(warm_s, 2)
        new_tokens, note = _fit_budget(case, warm_s / case.new_tokens, chunks)
    else:
        probe = SamplingParams(temperature=1.0, max_new_tokens=_probe_tokens(case))
        _, probe_s = _timed(case.device, lambda: len(engine.generate(first, probe)))
        new_tokens, note = _fit_budget(case, probe_s / probe.max_new_tokens, chunks)
        if new_tokens:  # warm-up at full length
            engine.generate(first, SamplingParams(temperature=1.0, max_new_tokens=new_tokens))
    if not new_tokens:
        return _skipped(name, case, len(prompts), note)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
    outs: list = []

    def call() -> int:
        outs[:] = engine.generate(prompts, params, max_new_tokens_per_prompt=case.lengths)
        return 0

    _, seconds = _repeat(case, call, extra)
    tokens = sum(len(o.response_ids) for o in outs)
    step = getattr(engine, "_decode_step", None)
    if step is not None and engine.batched_decode:
        extra["graphs"] = step.num_graphs
    drafted = sum(o.spec_draft_tokens for o in outs)
    if drafted:
        verify = sum(o.spec_verify_steps for o in outs)
        accepted = sum(o.spec_accepted_tokens for o in outs)
        extra["accept_rate"] = round(accepted / drafted, 4)
        extra["accept_length"] = round((accepted + verify) / max(1, verify), 3)
    return Result(name, case.workload, case.batch, len(prompts), tokens, seconds,
                  tokens / seconds, new_tokens, note, extra)  # fmt: skip


def check_log_probs(engine, prompts: list[list[int]], new_tokens: int) -> dict:
    """Log-probs the engine reports vs a no-cache full HF forward of prompt + response (the
    KV-cache exactness check, on the engine's dtype): max and mean |difference|."""
    from miles_hydra.backends.local.rollout import SamplingParams
    from miles_hydra.backends.local.rollout.sampling import token_log_probs

    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
    outs = engine.generate(prompts, params)
    diffs = []
    for prompt, out in zip(prompts, outs):
        ids = torch.tensor([prompt + out.response_ids], device=engine.device)
        with torch.no_grad():
            logits = engine.policy.lm(ids).logits[0, len(prompt) - 1 : -1]
        ref = token_log_probs(logits, ids[0, len(prompt) :], params).cpu()
        diffs.append((torch.tensor(out.rollout_log_probs) - ref).abs())
    diff = torch.cat(diffs)
    return {"max_abs_dlogp": round(float(diff.max()), 4),
            "mean_abs_dlogp": round(float(diff.mean()), 5), "tokens": int(diff.numel())}  # fmt: skip
