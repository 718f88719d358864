"""What one decode step of the RolloutEngine's batched loop costs, with and without drafts.

    python bench/rollout_step_probe.py --device cuda --model qwen3_0.6b --dtype bfloat16
    python bench/rollout_step_probe.py --device cuda --model tiny_dense \\
        --set num_layers=8 --set hidden_size=512 --set ffn_hidden_size=1536 \\
        --set num_attention_heads=8 --set num_query_groups=4 --set kv_channels=64

Per batch size B and draft steps k (0 = plain decoding; drafts come from an untrained MTP head,
so they are all rejected and every step emits one token: the step count is the same for
every k): one ``generate()`` of B random prompts of ``--prompt-len`` tokens and exactly
``--new-tokens`` new tokens (no stop token) warms up and captures the step's CUDA graph; then

  generate_s    a second generate() of the same prompts, wall time;
  steps         decode steps it ran (DecodeStep calls);
  step_ms       one step alone: the captured step replayed ``--reps`` times, median ms;
  host_s        generate_s - steps * step_ms: prefill, syncs, refill and Python around the steps;
  step_ratio    step_ms / (step_ms at k=0), the cost of drafting + verifying k+1 tokens;
  break_even    the accept length (tokens per step) at which speculation pays: step_ratio.

The step is the engine's own (graphs.DecodeStep over step.advance: draft chain, verify forward
through the Triton attention kernel, acceptance, sampling, bookkeeping), so this measures what
a rollout pays per step, not a stand-alone forward.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn, reps: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 4)


def kernel_table(fn, reps: int, rows: int) -> str:
    """torch.profiler's CUDA kernel table over `reps` calls of `fn`, the `rows` costliest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70
    )


class CountingStep:
    """Stands in for the engine's DecodeStep (attributes delegated) and counts its calls."""

    def __init__(self, step) -> None:
        self.step, self.calls = step, 0

    def __getattr__(self, name: str):
        return getattr(self.step, name)

    def __call__(self, *args, **kwargs) -> None:
        self.calls += 1
        self.step(*args, **kwargs)


def probe(args: argparse.Namespace, batch: int, k: int, device: torch.device) -> dict:
    from miles_hydra.backends.local.models import model_preset
    from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
    from miles_hydra.config.precision import DType, PrecisionConfig
    from miles_hydra.config.speculative import SpecMode, SpeculativeConfig

    overrides = dict(kv.split("=", 1) for kv in args.set)
    model_cfg = model_preset(args.model, hf_checkpoint=None, **overrides)
    spec = SpeculativeConfig(mode=SpecMode.mtp, num_steps=k) if k else SpeculativeConfig()
    precision = PrecisionConfig(rollout_dtype=DType(args.dtype))
    engine = RolloutEngine(model_cfg, spec, precision, str(device), 0, max_batch_size=batch,
                           compile_decode=args.compile)  # fmt: skip
    engine.policy.lm.generation_config.eos_token_id = None
    gen = torch.Generator().manual_seed(batch)
    vocab = model_cfg.vocab_size or engine.policy.lm.config.vocab_size
    prompts = torch.randint(0, vocab, (batch, args.prompt_len), generator=gen).tolist()
    params = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)
    start = time.perf_counter()
    engine.generate(prompts, params)
    torch.cuda.synchronize(device)
    first_s = time.perf_counter() - start
    step = engine._decode_step
    engine._decode_step = counter = CountingStep(step)
    start = time.perf_counter()
    outputs = engine.generate(prompts, params)
    torch.cuda.synchronize(device)
    generate_s = time.perf_counter() - start
    tokens = sum(len(o.response_ids) for o in outputs)
    (graph,) = step._graphs.values()  # one graph per slot count with the attention kernel
    step_ms = median_ms(graph.replay, args.reps, device)
    if args.profile:
        print(f"# batch {batch}, k {k}: kernels of {args.reps} replays", flush=True)
        print(kernel_table(graph.replay, args.reps, args.profile), flush=True)
    host_s = generate_s - counter.calls * step_ms / 1000
    row = {
        "batch": batch, "k": k, "first_s": round(first_s, 2), "generate_s": round(generate_s, 4),
        "tokens": tokens, "tok_s": round(tokens / generate_s), "steps": counter.calls,
        "step_ms": step_ms, "host_s": round(host_s, 4), "compiled": args.compile,
    }  # fmt: skip
    del engine, step, graph
    torch.cuda.empty_cache()
    return row


def environment(device: torch.device) -> dict:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "card": torch.cuda.get_device_name(device),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen3_0.6b", help="a conf/model preset")
    p.add_argument("--set", action="append", default=[], help="model field override key=value")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument("--draft-steps", default="0,1,2,3")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the step (rollout_compile)"
    )
    p.add_argument("--profile", type=int, default=0, help="print the N costliest kernels")
    p.add_argument("--jsonl", default="")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("rollout_step_probe.py needs --device cuda (it replays CUDA graphs)")
    print(json.dumps({**environment(device), "args": vars(args)}), flush=True)
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        base = None
        for k in (int(s) for s in args.draft_steps.split(",")):
            try:
                row = probe(args, batch, k, device)
            except Exception as err:  # report and go on to the next size
                row = {"batch": batch, "k": k, "error": f"{type(err).__name__}: {str(err)[:300]}"}
            if k == 0 and "step_ms" in row:
                base = row["step_ms"]
            if base and "step_ms" in row:
                row["step_ratio"] = row["break_even"] = round(row["step_ms"] / base, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    main()
