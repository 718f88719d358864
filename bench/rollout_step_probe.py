"""Where a decode step of the RolloutEngine spends its time, and what a CUDA graph would save.

    python bench/rollout_step_probe.py --preset qwen3_0.6b --device cuda [--batch-sizes 1,64,256]

Per batch size B (one token per row, context = the preset's prompt length):
  eager_fwd   kv.cached_forward as the engine calls it (its int(positions.max()) syncs).
  fixed_fwd   the same layers with kv_len fixed to the cache length (no host sync), eager.
  graph_fwd   fixed_fwd captured once in a torch.cuda.CUDAGraph and replayed.
  compile_fwd fixed_fwd under torch.compile (inductor, default mode) then captured in a CUDA
              graph (only for B in --compile-batch-sizes; costs one compile per B).
  sample      the engine's sampling math on [B, V] logits: sampling_probs + multinomial +
              token_log_probs (temperature 1).
Times are medians over `--reps` steps, after warm-up, with the device synchronized around each
step. This is a probe for issue 8's suggestions, not a contender: it computes what a
graph-captured decode step of the same math costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_rollout import PRESETS, build_models, environment  # noqa: E402


def fixed_decode_forward(lm, cache, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """kv.cached_forward for rows 0..B-1 with kv_len = cache.max_len: no host sync, so it can
    be graph-captured. Returns the logits [B, T, V]."""
    from miles_hydra.engine.rollout.kv import cached_forward

    return cached_forward(lm, cache, ids, positions, kv_len=cache.max_len).logits


def median_ms(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 3)


def probe_batch(
    policy,
    batch: int,
    prompt_len: int,
    reps: int,
    compile_: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    from miles_hydra.engine.rollout.kv import StaticKVCache, cached_forward
    from miles_hydra.engine.rollout.sampling import (
        SamplingParams,
        sample,
        sampling_probs,
        token_log_probs,
    )

    lm = policy.lm
    cache = StaticKVCache(lm, batch, prompt_len + 64, dtype, device)
    vocab = lm.config.vocab_size
    prompt = torch.randint(0, vocab, (batch, prompt_len), device=device)
    pos = torch.arange(prompt_len, device=device).expand(batch, prompt_len)
    with torch.no_grad():
        cached_forward(
            lm, cache, prompt, pos, logits_at=torch.full((batch,), prompt_len - 1, device=device)
        )
        ids = torch.randint(0, vocab, (batch, 1), device=device)
        positions = torch.full((batch, 1), prompt_len, device=device)
        row = {"batch": batch}
        row["eager_fwd_ms"] = median_ms(
            lambda: cached_forward(lm, cache, ids, positions), reps, device
        )
        row["fixed_fwd_ms"] = median_ms(
            lambda: fixed_decode_forward(lm, cache, ids, positions), reps, device
        )
        row["graph_fwd_ms"] = _graph_ms(
            lambda: fixed_decode_forward(lm, cache, ids, positions), reps, device
        )
        if compile_:
            compiled = torch.compile(fixed_decode_forward)
            start = time.perf_counter()
            compiled(lm, cache, ids, positions)
            row["compile_s"] = round(time.perf_counter() - start, 1)
            row["compile_graph_fwd_ms"] = _graph_ms(
                lambda: compiled(lm, cache, ids, positions), reps, device
            )
        logits = torch.randn(batch, vocab, device=device, dtype=dtype)
        params = SamplingParams(temperature=1.0)
        gen = torch.Generator(device).manual_seed(0)

        def sampling() -> None:
            token = sample(sampling_probs(logits, params), gen)
            token_log_probs(logits, token, params)

        row["sample_ms"] = median_ms(sampling, reps, device)
    return row


def _graph_ms(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_ms(graph.replay, reps, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="qwen3_0.6b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument(
        "--compile-batch-sizes",
        default="256",
        help="batch sizes that also time torch.compile + CUDA graph ('' = none)",
    )
    p.add_argument("--jsonl", default="")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("rollout_step_probe.py needs --device cuda (it captures CUDA graphs)")
    preset = PRESETS[args.preset]
    _, policy, _, _ = build_models(preset, device, 0, 2)
    dtype = next(policy.lm.parameters()).dtype
    print(json.dumps(environment(device)), flush=True)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        try:
            compile_ = str(batch) in args.compile_batch_sizes.split(",")
            row = probe_batch(policy, batch, preset.prompt_len, args.reps, compile_, device, dtype)
        except Exception as err:  # report and go on to the next size
            row = {"batch": batch, "error": f"{type(err).__name__}: {str(err)[:300]}"}
        torch.cuda.empty_cache()  # the probe's KV cache of this size is garbage now
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
