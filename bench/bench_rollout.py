"""Rollout throughput: our RolloutEngine against HF generate(), same model, process and card.

    python bench/bench_rollout.py --preset tiny --device cpu            # CPU, tiny sizes (~1 min)
    python bench/bench_rollout.py --preset qwen3_0.6b --device cuda     # issue 8's GPU run

Contenders (all share one random-init policy, so the weights are identical):
  hf_plain   HF generate(), default dynamic cache, eager.
  hf_static  HF generate(cache_implementation="static"); on CUDA, HF then torch.compiles the
             decode forward itself (mode reduce-overhead = CUDA graphs); on CPU no compile.
  ours       miles_hydra.engine.rollout.RolloutEngine, speculative decoding off.
  ours_spec  RolloutEngine with speculative.mode=mtp and an UNTRAINED draft head (worst case:
             acceptance near 0); acceptance is reported.
Workloads: `fixed` (batch B, prompt P, exactly N new tokens, eos disabled) and `heavy`
(`--heavy-factor`*B prompts, Pareto-distributed target lengths capped at N, through B slots).
HF generate has no per-sequence stop, so in `heavy` it runs each chunk of B prompts for N
steps and only the target lengths count as generated tokens (what static batching pays).
Our engine gets the per-prompt cap through a bench-only `_emit` hook (see `_cap_per_prompt`).
Sampling: temperature 1, no top-k/top-p. tok/s = generated tokens / wall seconds of the timed
call, after an untimed warm-up of the same shapes (HF static: of the same length, so its
compile is outside the timing and reported as first_call_s).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONTENDERS = ("hf_plain", "hf_static", "ours", "ours_spec")


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


@dataclass
class Result:
    contender: str
    workload: str  # fixed | heavy
    batch: int  # slots (ours) / generate() batch (HF)
    prompts: int
    tokens: int  # generated tokens counted
    seconds: float  # wall time of the timed call
    tok_s: float
    new_tokens: int  # per response (fixed) or cap (heavy) actually used
    note: str = ""
    extra: dict = field(default_factory=dict)


def _allow_engine_imports() -> None:
    """The device image lacks ray; rollout/__init__ imports the Ray actor eagerly. Register a
    minimal stand-in (ray.remote = identity) so RolloutEngine itself imports. Bench only."""
    if importlib.util.find_spec("ray") is None and "ray" not in sys.modules:
        stub = types.ModuleType("ray")
        stub.remote = lambda cls=None, **_: cls if cls is not None else (lambda c: c)
        sys.modules["ray"] = stub


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], int]) -> tuple[int, float]:
    _sync(device)
    start = time.perf_counter()
    tokens = fn()
    _sync(device)
    return tokens, time.perf_counter() - start


def heavy_lengths(n: int, cap: int, seed: int, alpha: float = 1.1) -> list[int]:
    """Pareto(alpha) target lengths with scale cap/16, capped at `cap` (mean ~ cap/6)."""
    u = np.random.default_rng(seed).random(n)
    scale = max(1.0, cap / 16)
    return [int(min(cap, math.ceil(scale * (1.0 - x) ** (-1.0 / alpha)))) for x in u]


# --------------------------------------------------------------------------- contenders
def _hf_run(lm, prompts: torch.Tensor, new_tokens: int, static: bool, batch: int) -> int:
    """generate() over `prompts` in chunks of `batch`; returns generated tokens (all kept)."""
    total = 0
    kwargs = dict(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        pad_token_id=0, eos_token_id=None,
    )
    if static:
        kwargs["cache_implementation"] = "static"
    for start in range(0, prompts.shape[0], batch):
        chunk = prompts[start : start + batch]
        out = lm.generate(chunk, attention_mask=torch.ones_like(chunk), **kwargs)
        total += (out.shape[1] - chunk.shape[1]) * chunk.shape[0]
    return total


def run_hf(
    lm, prompts: torch.Tensor, batch: int, new_tokens: int, static: bool,
    lengths: Optional[list[int]], budget_s: float, device: torch.device,
) -> Result:
    """One HF case: warm-up (static: full length, compiles), budget check, timed call."""
    name = "hf_static" if static else "hf_plain"
    workload = "fixed" if lengths is None else "heavy"
    note, extra = "", {}
    warm_tokens = new_tokens if static else min(8, new_tokens)
    first_prompts = prompts[:batch]
    _, warm_s = _timed(device, lambda: _hf_run(lm, first_prompts, warm_tokens, static, batch))
    if static:
        extra["first_call_s"] = round(warm_s, 2)
        extra["compiled"] = hasattr(lm, "_compiled_call")
        _, warm_s = _timed(device, lambda: _hf_run(lm, first_prompts, 8, static, batch))
        warm_tokens = 8  # second warm-up: per-step estimate without compile time
    chunks = math.ceil(prompts.shape[0] / batch)
    step_s = warm_s / warm_tokens
    if lengths is None and step_s * new_tokens * chunks > budget_s:
        new_tokens = max(8, int(budget_s / (step_s * chunks)))
        note = f"capped to {new_tokens} new tokens by --case-budget"
    elif lengths is not None and step_s * new_tokens * chunks > budget_s:
        return Result(name, workload, batch, prompts.shape[0], 0, 0.0, 0.0, new_tokens,
                      f"skipped: estimate {step_s * new_tokens * chunks:.0f}s > budget")
    kept, seconds = _timed(device, lambda: _hf_run(lm, prompts, new_tokens, static, batch))
    tokens = kept if lengths is None else sum(lengths)
    extra["ms_per_step"] = round(1000 * seconds / (new_tokens * chunks), 2)
    return Result(name, workload, batch, prompts.shape[0], tokens, seconds, tokens / seconds,
                  new_tokens, note, extra)


def _cap_per_prompt(engine, caps: list[int]) -> None:
    """Bench-only hook: end response i at caps[i] tokens (the engine's own stop rule is one
    max_new_tokens per call). Replicates RolloutEngine._emit with a per-prompt cap."""

    def emit(seq, tokens, log_probs, params) -> bool:
        for token, lp in zip(tokens, log_probs):
            seq.response.append(token)
            seq.log_probs.append(lp)
            if token in params.stop_token_ids:
                seq.finished = True
                return True
            if len(seq.response) >= caps[seq.index]:
                return True
        return False

    engine._emit = emit


def run_ours(
    engine, prompts: list[list[int]], batch: int, new_tokens: int,
    lengths: Optional[list[int]], budget_s: float, device: torch.device, name: str,
) -> Result:
    """One RolloutEngine case: warm-up with the same slots, budget check, timed call."""
    from miles_hydra.engine.rollout import SamplingParams

    workload = "fixed" if lengths is None else "heavy"
    engine.max_batch_size = batch
    engine.__dict__.pop("_emit", None)
    warm = SamplingParams(temperature=1.0, max_new_tokens=min(8, new_tokens))
    _, warm_s = _timed(device, lambda: len(engine.generate(prompts[:batch], warm)))
    note = ""
    steps = new_tokens * math.ceil(len(prompts) / batch)
    step_s = warm_s / warm.max_new_tokens
    if lengths is None and step_s * steps > budget_s:
        new_tokens = max(8, int(budget_s / step_s))
        note = f"capped to {new_tokens} new tokens by --case-budget"
    elif lengths is not None and step_s * steps > budget_s:
        return Result(name, workload, batch, len(prompts), 0, 0.0, 0.0, new_tokens,
                      f"skipped: estimate {step_s * steps:.0f}s > budget")
    if lengths is not None:
        _cap_per_prompt(engine, lengths)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
    outs = []
    _, seconds = _timed(device, lambda: outs.extend(engine.generate(prompts, params)) or 0)
    engine.__dict__.pop("_emit", None)
    tokens = sum(len(o.response_ids) for o in outs)
    drafted = sum(o.spec_draft_tokens for o in outs)
    extra = {}
    if drafted:
        verify = sum(o.spec_verify_steps for o in outs)
        accepted = sum(o.spec_accepted_tokens for o in outs)
        extra = {"accept_rate": round(accepted / drafted, 4),
                 "accept_length": round((accepted + verify) / max(1, verify), 3)}
    return Result(name, workload, batch, len(prompts), tokens, seconds, tokens / seconds,
                  new_tokens, note, extra)


# --------------------------------------------------------------------------- driver
def build_models(preset: Preset, device: torch.device, seed: int, spec_steps: int):
    """(policy with an untrained MTP draft, engine without / with speculation)."""
    _allow_engine_imports()
    from miles_hydra.config.precision import DType, PrecisionConfig
    from miles_hydra.config.speculative import SpecMode, SpeculativeConfig
    from miles_hydra.engine.models import build_policy, model_preset
    from miles_hydra.engine.rollout import RolloutEngine

    model_cfg = model_preset(preset.model, hf_checkpoint=None)
    spec = SpeculativeConfig(name="mtp", mode=SpecMode.mtp, num_steps=spec_steps)
    precision = PrecisionConfig(rollout_dtype=DType(preset.dtype))
    try:
        policy = build_policy(model_cfg, spec, preset.dtype, device, seed)
        draft_error = ""
    except Exception as err:  # the draft head is another helper's module; bench the rest
        policy = build_policy(model_cfg, SpeculativeConfig(), preset.dtype, device, seed)
        draft_error = f"{type(err).__name__}: {err}"
    policy.lm.generation_config.eos_token_id = None
    engines = {"ours": RolloutEngine(model_cfg, SpeculativeConfig(), precision, str(device),
                                     seed, policy=policy)}
    if not draft_error:
        engines["ours_spec"] = RolloutEngine(model_cfg, spec, precision, str(device), seed,
                                             policy=policy)
    return model_cfg, policy, engines, draft_error


def environment(device: torch.device) -> dict:
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": str(device),
           "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(card=props.name, sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        env["card"] = platform.processor() or platform.machine()
    return env


def run_all(args: argparse.Namespace) -> tuple[dict, list[Result]]:
    preset = PRESETS[args.preset]
    if args.batch_sizes:
        preset.batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        preset.heavy_batch_sizes = tuple(b for b in preset.heavy_batch_sizes
                                         if b in preset.batch_sizes)
    for key in ("prompt_len", "new_tokens"):
        if getattr(args, key):
            setattr(preset, key, getattr(args, key))
    if args.no_heavy:
        preset.heavy_batch_sizes = ()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model_cfg, policy, engines, draft_error = build_models(preset, device, args.seed,
                                                           args.spec_steps)
    env = environment(device) | {"preset": args.preset, "model": preset.model,
                                 "params": model_cfg.param_count(), "dtype": preset.dtype,
                                 "prompt_len": preset.prompt_len,
                                 "new_tokens": preset.new_tokens, "draft_error": draft_error}
    print(json.dumps(env), flush=True)
    results: list[Result] = []
    wanted = [c for c in args.contenders.split(",") if c]
    for batch in preset.batch_sizes:
        for workload in ("fixed", "heavy"):
            if workload == "heavy" and batch not in preset.heavy_batch_sizes:
                continue
            n = batch if workload == "fixed" else batch * args.heavy_factor
            lengths = (None if workload == "fixed"
                       else heavy_lengths(n, preset.new_tokens, args.seed + batch))
            gen = torch.Generator().manual_seed(args.seed + n)
            ids = torch.randint(0, model_cfg.vocab_size, (n, preset.prompt_len), generator=gen)
            for name in wanted:
                result = _one_case(name, policy, engines, ids, batch, preset, lengths, args,
                                   device, draft_error)
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as fh:
                        fh.write(json.dumps({"env": env, **asdict(result)}) + "\n")
    return env, results


def _one_case(name, policy, engines, ids, batch, preset, lengths, args, device,
              draft_error) -> Result:
    workload = "fixed" if lengths is None else "heavy"
    try:
        if name in ("hf_plain", "hf_static"):
            return run_hf(policy.lm, ids.to(device), batch, preset.new_tokens,
                          name == "hf_static", lengths, args.case_budget, device)
        if name not in engines:
            return Result(name, workload, batch, ids.shape[0], 0, 0.0, 0.0, 0,
                          f"not run: {draft_error or 'unknown contender'}")
        return run_ours(engines[name], ids.tolist(), batch, preset.new_tokens, lengths,
                        args.case_budget, device, name)
    except Exception as err:  # record and go on: one broken contender must not hide the rest
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Result(name, workload, batch, ids.shape[0], 0, 0.0, 0.0, 0,
                      f"failed: {type(err).__name__}: {str(err)[:300]}")


def markdown(env: dict, results: list[Result]) -> str:
    """Table of tok/s per case plus ratios of ours to the HF contenders."""
    by_key = {(r.workload, r.batch, r.contender): r for r in results}
    lines = [f"card: {env.get('card')} | torch {env['torch']} | transformers "
             f"{env['transformers']} | model {env['model']} ({env['params'] / 1e6:.0f}M, "
             f"{env['dtype']}) | prompt {env['prompt_len']} | new {env['new_tokens']}", "",
             "| workload | batch | contender | tokens | s | tok/s | ours/plain | ours/static "
             "| note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        plain = by_key.get((r.workload, r.batch, "hf_plain"))
        static = by_key.get((r.workload, r.batch, "hf_static"))
        ratio_p = ratio_s = ""
        if r.contender.startswith("ours") and r.tok_s:
            ratio_p = f"{r.tok_s / plain.tok_s:.2f}x" if plain and plain.tok_s else ""
            ratio_s = f"{r.tok_s / static.tok_s:.2f}x" if static and static.tok_s else ""
        info = "; ".join(filter(None, [r.note] + [f"{k}={v}" for k, v in r.extra.items()]))
        lines.append(f"| {r.workload} | {r.batch} | {r.contender} | {r.tokens} | "
                     f"{r.seconds:.2f} | {r.tok_s:,.0f} | {ratio_p} | {ratio_s} | {info} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma list of {CONTENDERS}")
    p.add_argument("--batch-sizes", default="", help="comma list; default: the preset's")
    p.add_argument("--prompt-len", type=int, default=0, help="0 = the preset's")
    p.add_argument("--new-tokens", type=int, default=0, help="0 = the preset's")
    p.add_argument("--heavy-factor", type=int, default=2, help="heavy mix: prompts per slot")
    p.add_argument("--no-heavy", action="store_true", help="skip the heavy-tailed mix")
    p.add_argument("--spec-steps", type=int, default=2, help="draft tokens per verify step")
    p.add_argument("--case-budget", type=float, default=60.0,
                   help="seconds a timed call may take (estimated from the warm-up); longer "
                        "fixed cases are capped in tokens, longer heavy cases skipped")
    p.add_argument("--seed", type=int, default=0)
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
