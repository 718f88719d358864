"""Rollout throughput: our RolloutEngine against HF generate(), same model, process and card.

    python bench/bench_rollout.py --preset tiny --device cpu            # CPU, tiny sizes (~2 min)
    python bench/bench_rollout.py --preset qwen3_0.6b --device cuda     # issue 8's GPU run

Contenders (all share one random-init policy, so the weights are identical):
  hf_plain   HF generate(), default dynamic cache, eager.
  hf_static  HF generate(cache_implementation="static"); on CUDA, HF then torch.compiles the
             decode forward itself (mode reduce-overhead = CUDA graphs); on CPU no compile.
  ours       miles_hydra.backends.local.rollout.RolloutEngine, speculative decoding off (on CUDA: the
             batched decode loop with CUDA graphs, decode.py / graphs.py).
  ours_compiled  the same with compile_decode=True (torch.compile before capture; CUDA only,
             one compile per batch size, reported as warmup_s).
  ours_sdpa  ours with attn_kernel=False: SDPA over kv buckets of 64 positions instead of the
             Triton decode-attention kernel (the A/B of the kernel; CUDA only).
  ours_spec  RolloutEngine with speculative.mode=mtp and an UNTRAINED draft head (worst case:
             acceptance near 0); acceptance is reported.
Workloads: `fixed` (batch B, prompt P, exactly N new tokens, eos disabled) and `heavy`
(`--heavy-factor`*B prompts, Pareto-distributed target lengths capped at N, through B slots).
HF generate has no per-sequence stop, so in `heavy` it runs each chunk of B prompts for N
steps and only the target lengths count as generated tokens (what static batching pays).
Our engine gets the per-prompt caps through generate(max_new_tokens_per_prompt=...).
Sampling: temperature 1, no top-k/top-p. tok/s = generated tokens / wall seconds of the timed
call, after an untimed full-length warm-up (rollout_contenders.py says exactly how; HF
static's first call, compile included, is reported as first_call_s).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):  # run as a script: the repo and this folder
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from rollout_contenders import (  # noqa: E402
    Case,
    Result,
    check_log_probs,
    heavy_lengths,
    run_hf,
    run_ours,
)

CONTENDERS = ("hf_plain", "hf_static", "ours", "ours_sdpa", "ours_spec", "ours_compiled")


@dataclass
class Preset:
    model: str  # conf/model/<model>.yaml (weights: random init)
    prompt_len: int  # tokens per prompt
    new_tokens: int  # fixed workload: tokens per response; heavy workload: the cap
    batch_sizes: tuple[int, ...]  # slots / HF batch sizes
    heavy_batch_sizes: tuple[int, ...]  # batch sizes that also run the heavy-tailed mix
    dtype: str  # policy dtype on the device


PRESETS = {
    "tiny": Preset("tiny_dense", 16, 32, (1, 8, 32), (8, 32), "float32"),
    "qwen3_0.6b": Preset("qwen3_0.6b", 128, 256, (1, 64, 256), (64, 256), "bfloat16"),
}


# --------------------------------------------------------------------------- driver
def build_models(
    preset: Preset, device: torch.device, seed: int, spec_steps: int, compiled: bool = False
):
    """(policy with an untrained MTP draft, engines: plain, speculative, compiled if asked)."""
    from miles_hydra.backends.local.models import build_policy, model_preset
    from miles_hydra.backends.local.rollout import RolloutEngine
    from miles_hydra.config.precision import DType, PrecisionConfig
    from miles_hydra.config.speculative import SpecMode, SpeculativeConfig

    model_cfg = model_preset(preset.model, hf_checkpoint=None)
    spec = SpeculativeConfig(mode=SpecMode.mtp, num_steps=spec_steps)
    precision = PrecisionConfig(rollout_dtype=DType(preset.dtype))
    try:
        policy = build_policy(model_cfg, spec, preset.dtype, device, seed)
        draft_error = ""
    except Exception as err:  # the draft head is another helper's module; bench the rest
        policy = build_policy(model_cfg, SpeculativeConfig(), preset.dtype, device, seed)
        draft_error = f"{type(err).__name__}: {err}"
    policy.lm.generation_config.eos_token_id = None
    engines = {
        "ours": RolloutEngine(
            model_cfg, SpeculativeConfig(), precision, str(device), seed, policy=policy
        )
    }
    if not draft_error:
        engines["ours_spec"] = RolloutEngine(
            model_cfg, spec, precision, str(device), seed, policy=policy
        )
    if device.type == "cuda":
        engines["ours_sdpa"] = RolloutEngine(
            model_cfg, SpeculativeConfig(), precision, str(device), seed, policy=policy,
            attn_kernel=False,
        )  # fmt: skip
    if compiled and device.type == "cuda":
        engines["ours_compiled"] = RolloutEngine(
            model_cfg, SpeculativeConfig(), precision, str(device), seed, policy=policy,
            compile_decode=True,
        )  # fmt: skip
    return model_cfg, policy, engines, draft_error


def environment(device: torch.device) -> dict:
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            card=props.name,
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    else:
        env["card"] = platform.processor() or platform.machine()
    return env


def _apply_overrides(preset: Preset, args: argparse.Namespace) -> Preset:
    if args.batch_sizes:
        preset.batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        preset.heavy_batch_sizes = tuple(
            b for b in preset.heavy_batch_sizes if b in preset.batch_sizes
        )
    if args.prompt_len:
        preset.prompt_len = args.prompt_len
    if args.new_tokens:
        preset.new_tokens = args.new_tokens
    if args.heavy_batch_sizes:
        preset.heavy_batch_sizes = tuple(int(b) for b in args.heavy_batch_sizes.split(","))
    if args.no_heavy:
        preset.heavy_batch_sizes = ()
    return preset


def run_all(args: argparse.Namespace) -> tuple[dict, list[Result]]:
    """Every (batch, workload, contender) case in order; one JSON line per case."""
    preset = _apply_overrides(replace(PRESETS[args.preset]), args)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    compiled = "ours_compiled" in args.contenders.split(",")
    model_cfg, policy, engines, draft_error = build_models(
        preset, device, args.seed, args.spec_steps, compiled
    )
    env = environment(device) | {
        "preset": args.preset,
        "model": preset.model,
        "params": model_cfg.param_count(),
        "dtype": preset.dtype,
        "prompt_len": preset.prompt_len,
        "new_tokens": preset.new_tokens,
        "repeats": args.repeats,
        "draft_error": draft_error,
    }
    if args.check_tokens:  # our log-probs vs a no-cache recompute, before any timing
        gen = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, model_cfg.vocab_size, (4, preset.prompt_len), generator=gen)
        env["logprob_check"] = check_log_probs(engines["ours"], ids.tolist(), args.check_tokens)
    print(json.dumps(env), flush=True)
    results: list[Result] = []
    for batch in preset.batch_sizes:
        for heavy in (False, True):
            if heavy and batch not in preset.heavy_batch_sizes:
                continue
            n = batch * args.heavy_factor if heavy else batch
            lengths = heavy_lengths(n, preset.new_tokens, args.seed + batch) if heavy else None
            budget = (args.heavy_case_budget or args.case_budget) if heavy else args.case_budget
            case = Case(batch, preset.new_tokens, lengths, budget, args.repeats, device)
            gen = torch.Generator().manual_seed(args.seed + n)
            ids = torch.randint(0, model_cfg.vocab_size, (n, preset.prompt_len), generator=gen)
            for name in (c for c in args.contenders.split(",") if c):
                if not _wanted(name, batch, args.only_batch):
                    continue
                result = _one_case(name, policy, engines, ids, case, draft_error)
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as fh:
                        fh.write(json.dumps({"env": env, **asdict(result)}) + "\n")
    return env, results


def _wanted(name: str, batch: int, only: str) -> bool:
    """--only-batch "ours_compiled=256;hf_plain=1,256": restrict contenders to batch sizes."""
    for rule in filter(None, only.split(";")):
        who, sizes = rule.split("=")
        if who == name:
            return str(batch) in sizes.split(",")
    return True


def _one_case(name: str, policy, engines: dict, ids: torch.Tensor, case: Case,
              draft_error: str) -> Result:  # fmt: skip
    """One contender on one case; a failure is recorded as a row, not raised."""
    try:
        if name in ("hf_plain", "hf_static"):
            return run_hf(policy.lm, ids.to(case.device), name == "hf_static", case)
        if name not in engines:
            why = f"unknown contender (choose from {CONTENDERS})"
            if name == "ours_spec" and draft_error:
                why = draft_error
            elif name in ("ours_compiled", "ours_sdpa"):
                why = "needs CUDA"
            return Result(name, case.workload, case.batch, ids.shape[0], 0, 0.0, 0.0, 0,
                          f"not run: {why}")  # fmt: skip
        return run_ours(engines[name], ids.tolist(), name, case)
    except Exception as err:  # one broken contender must not hide the others' numbers
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
        return Result(name, case.workload, case.batch, ids.shape[0], 0, 0.0, 0.0, 0,
                      f"failed: {type(err).__name__}: {str(err)[:300]}")  # fmt: skip


def markdown(env: dict, results: list[Result]) -> str:
    """Table of tok/s per case plus ratios of ours to the HF contenders."""
    by_key = {(r.workload, r.batch, r.contender): r for r in results}
    lines = [
        f"card: {env.get('card')} | torch {env['torch']} | transformers "
        f"{env['transformers']} | model {env['model']} ({env['params'] / 1e6:.0f}M, "
        f"{env['dtype']}) | prompt {env['prompt_len']} | new {env['new_tokens']}",
        "",
        "| workload | batch | contender | tokens | s | tok/s | ours/plain | ours/static | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        plain = by_key.get((r.workload, r.batch, "hf_plain"))
        static = by_key.get((r.workload, r.batch, "hf_static"))
        ratio_p = ratio_s = ""
        if r.contender.startswith("ours") and r.tok_s:
            ratio_p = f"{r.tok_s / plain.tok_s:.2f}x" if plain and plain.tok_s else ""
            ratio_s = f"{r.tok_s / static.tok_s:.2f}x" if static and static.tok_s else ""
        info = "; ".join(filter(None, [r.note] + [f"{k}={v}" for k, v in r.extra.items()]))
        lines.append(
            f"| {r.workload} | {r.batch} | {r.contender} | {r.tokens} | "
            f"{r.seconds:.2f} | {r.tok_s:,.0f} | {ratio_p} | {ratio_s} | {info} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma list of {CONTENDERS}")
    p.add_argument("--batch-sizes", default="", help="comma list; default: the preset's")
    p.add_argument("--prompt-len", type=int, default=0, help="0 = the preset's")
    p.add_argument("--new-tokens", type=int, default=0, help="0 = the preset's")
    p.add_argument("--heavy-factor", type=int, default=2, help="heavy mix: prompts per slot")
    p.add_argument("--heavy-batch-sizes", default="", help="comma list; default: the preset's")
    p.add_argument("--no-heavy", action="store_true", help="skip the heavy-tailed mix")
    p.add_argument("--spec-steps", type=int, default=2, help="draft tokens per verify step")
    p.add_argument(
        "--case-budget",
        type=float,
        default=60.0,
        help="seconds a timed call may take (estimated from the warm-up); longer "
        "fixed cases are capped in tokens, longer heavy cases skipped",
    )
    p.add_argument(
        "--heavy-case-budget", type=float, default=0.0, help="heavy mix; 0 = --case-budget"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed calls per case (lower median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-batch", default="", help="contender=B[,B]: run it at these B only")
    p.add_argument(
        "--check-tokens",
        type=int,
        default=0,
        help="first check ours' log-probs vs a no-cache recompute over N tokens",
    )
    p.add_argument("--jsonl", default="", help="append one JSON line per case here")
    p.add_argument("--md", default="", help="write the markdown table here")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> list[Result]:
    args = parse_args(argv)
    env, results = run_all(args)
    table = markdown(env, results)
    if args.md:
        Path(args.md).write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
