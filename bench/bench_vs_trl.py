"""End to end against TRL: our local engine vs TRL's ``GRPOTrainer`` on one GPU (issue 20.3).

    python bench/bench_vs_trl.py --preset h200 --sides ours,trl --trl-budget 70
    python bench/bench_vs_trl.py --preset h200_long --sides ours,trl --trl-budget 70
    python bench/bench_vs_trl.py --preset smoke --device cpu --sides ours --in-process  # CPU test

On the device machine (no trl, datasets, Ray, Hydra there): carry the wheels of trl, datasets,
dill and multiprocess and copies of hydra, omegaconf and antlr4 (bench/README.md says how).
Results and their reading: ``bench/results_vs_trl_gpu.md``.

Methodology. One workload (``PRESETS``), run by both sides from the same start:

- Model: the Qwen3-0.6B transformer body (28 layers, hidden 1024, FFN 3072, 16 query / 8 kv
  heads of 128, QK-norm; 0.44B parameters, which is Qwen3-0.6B's own non-embedding count) over
  the synthetic tasks' 53-character vocabulary (embedding padded to 64 rows), random init.
  No hub access on the GPU machine and no PyPI package ships Qwen3 weights small enough to
  carry; the character vocabulary leaves the whole per-token transformer cost of the real
  model and drops only its 151,936-row embedding and LM head, which a character task never
  uses. The same warm-start for both: ``TrainerActor.warmup_sft`` (what the driver runs for
  ``data.warmup_sft_steps``) on task solutions, saved once as an HF checkpoint dir
  (``Qwen3ForCausalLM``); our run loads it through ``model.hf_checkpoint``, TRL through
  ``from_pretrained``. bf16 weights and compute on both sides (TRL: the model loaded in bf16
  plus ``bf16=True``; ours ``precision=bf16``).
- Task and reward: ``data=sorting`` (sort up to 24 digits), reward = positions equal to the
  sorted answer over the longer length (``bench_speculative.sorting_partial_credit``), so GRPO
  has a graded signal. TRL is given exactly the prompts our prompt source serves, in the same
  order (``shuffle_dataset=False``), the same reward function on the same decoded text (up to
  the first eos), and a tokenizer with the same ids (``trl_side.char_tokenizer``).
- Algorithm: GRPO with the same numbers on both sides: group of ``group`` samples of
  ``prompts`` prompts (one generation batch = one optimizer step), group mean/std advantages,
  sequence-mean token-mean loss (TRL ``loss_type="grpo"``), clip 0.2, no KL, AdamW (betas 0.9
  / 0.98, eps 1e-8, weight decay 0.1), constant LR, gradient clip 1.0, temperature 1, no
  top-k/top-p, ``max_new`` new tokens. TRL generates with HF ``generate()`` (its default; no
  vLLM on the machine), ours with ``backend.device=cuda`` (batched decode, CUDA graphs).
- Runs: each side in its own process, one after the other on the idle GPU. TRL runs
  ``steps`` steps; ours runs ``ours_steps`` (more), so that both have a reward at the same
  wall time. Our side drives the real RL loop (``backends.local.loop.train``) with its actors
  in this process (``bench/inproc_ray.py``: no Ray on the GPU machine); TRL runs
  ``GRPOTrainer.train()``.
- Per step: wall time (ours: ``perf/step_time`` = generate + reward + train + weight sync;
  TRL: a callback's step begin to step end after the optimizer step, CUDA synchronized),
  rollout time (ours ``perf/rollout_time``; TRL its ``_generate_single_turn``, i.e. HF
  ``generate``), scoring (ours: inside the step; TRL: the rest of
  ``_generate_and_score_completions``), train (ours ``perf/train_time``: old log-prob forward
  + optimizer step; TRL: the rest of the step), mean reward, mean response length.
- Summary per side: samples/s over all steps and in steady state (the first step, with CUDA
  graph capture / allocator warm-up, left out), medians of rollout / train / weight-sync /
  other time per step, time outside the steps (process start, model build and load; ours
  also the final checkpoint), peak GPU memory (``torch.cuda.max_memory_allocated``; ours:
  trainer and engine, in one process), and the reward after equal wall time W = the shorter
  total step time of ours and TRL: the mean reward of the last ``--reward-window`` steps
  finished by W on each side.
- Weight sync (ours): the engine's own route (``backends/local/weight_sync.py``); with the
  actors in one process, a device-side copy/cast from the trainer's tensors (the bench-only
  ``ours_devsync`` side that did this before is gone: the engine ships it).
- Limits: ``--trl-budget`` stops TRL after that many seconds of steps; ``--side-timeout`` kills
  a side's process (ours then counts the steps its metrics.jsonl holds).

Output: ``<out>/vs_trl.json`` (config, environment, both sides' per-step rows and summaries) and
``<out>/vs_trl.md`` (the table for README). ``--sides`` picks sides; ``--keep-warm`` reuses
``<out>/warm_start``, ``--warm-from DIR`` another run's. The TRL side (``bench/trl_side.py``)
needs trl and datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
for _path in (ROOT, BENCH):  # run as a script: the repo and this folder
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

REWARD_PATH = "bench_speculative:sorting_partial_credit"
_QWEN3_06B_BODY = {  # Qwen3-0.6B without its 151,936-row embedding (see the docstring)
    "num_layers": 28,
    "hidden_size": 1024,
    "ffn_hidden_size": 3072,
    "num_attention_heads": 16,
    "num_query_groups": 8,
    "kv_channels": 128,
}
_TINY_BODY = {  # tiny_dense's own shape (2 x 128), for the CPU smoke test
    "num_layers": 2,
    "hidden_size": 64,
    "ffn_hidden_size": 128,
    "num_attention_heads": 2,
    "num_query_groups": 1,
    "kv_channels": 32,
}


@dataclass
class Workload:
    """One comparison: the same numbers for both sides."""

    model: dict[str, int]  # model.* overrides of tiny_dense (the shape)
    max_len: int  # longest list to sort (data.task_kwargs.max_len)
    prompts: int  # prompts per step
    group: int  # samples per prompt (GRPO group)
    max_new: int  # max new tokens per response
    steps: int  # TRL steps
    ours_steps: int  # our steps (more: reward at equal wall time)
    warm_steps: int  # supervised warm-start steps (batches of prompts x group)
    warm_lr: float  # warm-start learning rate
    lr: float  # RL learning rate (both sides)
    trl_micro: int = 0  # TRL samples per forward/backward (gradient accumulation); 0 = all
    seed: int = 1
    extra: list[str] = field(default_factory=list)  # more Hydra overrides for our side

    @property
    def samples(self) -> int:
        return self.prompts * self.group


PRESETS = {
    # CPU, seconds: the smoke test of our side
    "smoke": Workload(_TINY_BODY, 4, 2, 2, 6, 2, 2, 1, 1e-3, 1e-4),
    # one H200: 32 prompts x 8 = 256 samples per step, 32 new tokens
    "h200": Workload(_QWEN3_06B_BODY, 24, 32, 8, 32, 40, 60, 120, 5e-4, 1e-4),
    # the same with a 256-token cap: the few responses that miss eos (1-4% at the start) run
    # to the cap, HF generate() keeps the whole batch stepping until the last one ends
    # (TRL in 4 micro-batches of 64: one pass over 256 x 286 tokens does not fit in 141 GB;
    # ours packs micro-batches by token count, parallelism=single_gpu)
    "h200_long": Workload(_QWEN3_06B_BODY, 24, 32, 8, 256, 10, 25, 120, 5e-4, 1e-4, 64),
}

SIDES = {  # --sides: name -> table label
    "ours": "ours (`backend.device=cuda`)",
    "trl": "TRL `GRPOTrainer`",
}


# --------------------------------------------------------------------------- our side
def our_overrides(w: Workload, device: str, steps: int, warm_dir: Optional[Path]) -> list[str]:
    """Hydra overrides of conf/ for our run of ``w`` (``warm_dir``: the shared warm-start)."""
    out = [f"model.{k}={v}" for k, v in w.model.items()]
    out += [
        f"backend.device={device}",
        "precision=bf16" if device == "cuda" else "precision=fp32",
        "parallelism=single_gpu" if device == "cuda" else "parallelism=single",
        "data=sorting",
        f"data.task_kwargs.max_len={w.max_len}",
        "reward=custom",
        f"reward.custom_rm_path={REWARD_PATH}",
        f"rollout.rollout_batch_size={w.prompts}",
        f"rollout.n_samples_per_prompt={w.group}",
        f"rollout.rollout_max_response_len={w.max_new}",
        "rollout.rollout_temperature=1.0",
        f"rollout.num_rollout={steps}",
        "rollout.eval_interval=null",
        f"algorithm.lr={w.lr}",
        "checkpoint.save_interval=null",
        "checkpoint.resume=false",
        "logging.progress_bar=false",
        f"seed={w.seed}",
        *w.extra,
    ]
    if warm_dir is not None:
        out += [f"model.hf_checkpoint={warm_dir}", "data.warmup_sft_steps=0"]
    return out


def compose(overrides: list[str]) -> Any:
    from bench_speculative import compose_run_config

    return compose_run_config(overrides)


def warm_start(w: Workload, device: str, out: Path) -> dict[str, Any]:
    """The shared start: random init + ``warm_steps`` supervised steps, saved as an HF dir."""
    import torch

    from miles_hydra.backends.local.models import save_checkpoint_dir
    from miles_hydra.backends.local.trainer import TrainerActor
    from miles_hydra.tasks import build_prompt_source, build_tokenizer

    cfg = compose([*our_overrides(w, device, 1, None), f"data.warmup_sft_lr={w.warm_lr}"])
    tokenizer = build_tokenizer(cfg.model)
    r = cfg.rollout
    # its own seed: the warm-start's problems are not the RL prompts
    source = build_prompt_source(
        cfg.data, tokenizer, cfg.seed + 12345, r.rollout_max_prompt_len, r.rollout_max_response_len
    )
    start = time.perf_counter()
    trainer = TrainerActor(cfg, tokenizer.pad_id, cfg.backend.num_threads)
    metrics = trainer.warmup_sft(source.sft_examples(w.warm_steps * w.samples), w.samples)
    path = save_checkpoint_dir(trainer.policy, out / "warm_start")
    params = sum(p.numel() for p in trainer.policy.lm.parameters())
    if device == "cuda":
        torch.cuda.synchronize()
    return {
        "dir": str(path),
        "params": params,
        "wall_s": time.perf_counter() - start,
        **{k: float(v) for k, v in metrics.items()},
    }


def rl_prompts(w: Workload, device: str, steps: int) -> list[dict[str, str]]:
    """The prompts our run serves, in order (``steps`` x ``prompts``): TRL gets the same."""
    from miles_hydra.tasks import build_prompt_source, build_tokenizer

    cfg = compose(our_overrides(w, device, steps, None))
    r = cfg.rollout
    source = build_prompt_source(
        cfg.data,
        build_tokenizer(cfg.model),
        cfg.seed,
        r.rollout_max_prompt_len,
        r.rollout_max_response_len,
    )
    return [{"prompt": p.text, "label": str(p.label)} for p in source.next_batch(steps * w.prompts)]


def run_ours(
    w: Workload, device: str, warm_dir: Path, out: Path, side: str = "ours"
) -> dict[str, Any]:
    """Our RL loop from the warm-start, actors in this process; per-step rows + peak memory."""
    import torch
    from inproc_ray import ray_or_inproc

    began = time.perf_counter()
    with ray_or_inproc("inproc"):
        from miles_hydra.backends.local import loop
        from miles_hydra.backends.local.metrics import read_records

        cfg = compose(our_overrides(w, device, w.ours_steps, warm_dir))
        run_dir = out / f"{side}_run"
        shutil.rmtree(run_dir, ignore_errors=True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        loop.train(cfg, run_dir)
        ended = time.perf_counter()
        records = [r for r in read_records(run_dir / "metrics.jsonl") if "step" in r]
    rows = our_rows(records)
    return {
        "side": side,
        "rows": rows,
        "total_s": ended - began,
        # actor build, checkpoint load, first weight sync, final save
        "startup_s": (ended - began) - (rows[-1]["elapsed_s"] if rows else 0.0),
        "peak_mem_gib": peak_memory(device),
    }


def our_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step rows of our run from its metrics.jsonl rollout records."""
    rows, elapsed = [], 0.0
    for r in records:
        elapsed += r["perf/step_time"]
        rows.append(
            {
                "step": int(r["step"]),
                "wall_s": r["perf/step_time"],
                "elapsed_s": elapsed,
                "rollout_s": r["perf/rollout_time"],
                "train_s": r["perf/train_time"],
                "logprob_s": r.get("perf/log_probs_time"),
                "sync_s": r.get("perf/update_weights_time"),
                "reward": r["rollout/raw_reward"],
                "response_len": r["rollout/response_len/mean"],
            }
        )
    return rows


def peak_memory(device: str) -> Optional[float]:
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


# --------------------------------------------------------------------------- summary
def summarize(side: dict[str, Any], samples: int) -> dict[str, Any]:
    """samples/s (all steps; steady state without the first), medians per step, totals."""
    rows = side["rows"]
    if not rows:
        return {"steps": 0}
    steady = rows[1:] or rows
    med = statistics.median
    for r in rows:  # the rest of the step (ours: reward, batch; TRL: reward, advantages)
        parts = (r.get(k) or 0.0 for k in ("rollout_s", "train_s", "sync_s"))
        r["other_s"] = r["wall_s"] - sum(parts)
    keys = ("wall_s", "rollout_s", "train_s", "sync_s", "other_s", "logprob_s")
    out = {
        "steps": len(rows),
        "samples_per_s": samples * len(rows) / rows[-1]["elapsed_s"],
        "samples_per_s_steady": samples * len(steady) / sum(r["wall_s"] for r in steady),
        "first_step_s": rows[0]["wall_s"],
        "startup_s": side.get("startup_s"),
        "peak_mem_gib": side.get("peak_mem_gib"),
        "reward_first": rows[0]["reward"],
        "reward_last": rows[-1]["reward"],
        "response_len": med(
            [r["response_len"] for r in steady if r.get("response_len") is not None] or [0.0]
        ),
    }
    for key in keys:
        values = [r[key] for r in steady if r.get(key) is not None]
        if values:
            out[f"median_{key}"] = med(values)
    return out


def reward_at(rows: list[dict[str, Any]], wall: float, window: int) -> Optional[float]:
    """Mean reward of the last ``window`` steps finished by elapsed time ``wall``."""
    done = [r["reward"] for r in rows if r["elapsed_s"] <= wall + 1e-9]
    return statistics.fmean(done[-window:]) if done else None


def compare(result: dict[str, Any], window: int) -> dict[str, Any]:
    """Ratios of each of our sides over TRL, and every side's reward after equal wall time
    (W = the shorter total step time of ours and TRL; a side that ended earlier counts with
    its last steps)."""
    sides = {k: v for k, v in result["sides"].items() if v.get("rows")}
    if len(sides) < 2:
        return {}
    main_sides = [sides[k] for k in ("ours", "trl") if k in sides]
    wall = min(v["rows"][-1]["elapsed_s"] for v in (main_sides or sides.values()))
    out: dict[str, Any] = {"equal_wall_s": wall, "reward_window": window}
    for name, side in sides.items():
        out[f"{name}_reward_at_wall"] = reward_at(side["rows"], wall, window)
        out[f"{name}_steps_at_wall"] = sum(r["elapsed_s"] <= wall + 1e-9 for r in side["rows"])
    trl = sides.get("trl")
    for name, side in sides.items():
        if trl is None or name == "trl":
            continue
        so, st = side["summary"], trl["summary"]
        out[f"{name}_samples_per_s_ratio"] = so["samples_per_s"] / st["samples_per_s"]
        out[f"{name}_samples_per_s_steady_ratio"] = (
            so["samples_per_s_steady"] / st["samples_per_s_steady"]
        )
    return out


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def render_table(result: dict[str, Any]) -> str:
    """The README table: one row per side (medians per steady-state step), then the ratios."""
    w = result["workload"]
    head = (
        "| side | steps | samples/s | steady samples/s | rollout s | train s | weight sync s "
        "| other s | first step s | outside steps s | peak GiB | reward first→last "
        "| reward at equal wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    cmp_ = result.get("comparison", {})
    lines = [head]
    for name, label in SIDES.items():
        side = result["sides"].get(name)
        if not side or not side["rows"]:
            continue
        s = side["summary"]
        at = cmp_.get(f"{name}_reward_at_wall")
        lines.append(
            f"| {label} | {s['steps']} | {_fmt(s['samples_per_s'], '.1f')} "
            f"| {_fmt(s['samples_per_s_steady'], '.1f')} "
            f"| {_fmt(s.get('median_rollout_s'), '.3f')} "
            f"| {_fmt(s.get('median_train_s'), '.3f')} | {_fmt(s.get('median_sync_s'), '.3f')} "
            f"| {_fmt(s.get('median_other_s'), '.3f')} | {_fmt(s['first_step_s'])} "
            f"| {_fmt(s['startup_s'], '.1f')} "
            f"| {_fmt(s['peak_mem_gib'], '.1f')} | {s['reward_first']:.3f}→{s['reward_last']:.3f} "
            f"| {_fmt(at, '.3f')} ({cmp_.get(f'{name}_steps_at_wall', '–')} steps) |\n"
        )
    ratios = [
        f"{SIDES[n]}: **{cmp_[f'{n}_samples_per_s_ratio']:.2f}x** (steady "
        f"{cmp_[f'{n}_samples_per_s_steady_ratio']:.2f}x)"
        for n in SIDES
        if f"{n}_samples_per_s_ratio" in cmp_
    ]
    if ratios:
        lines.append("\nsamples/s over TRL: " + "; ".join(ratios) + ".\n")
    if cmp_:
        lines.append(
            f"Equal wall time {cmp_['equal_wall_s']:.1f} s (reward = mean of the last "
            f"{cmp_['reward_window']} steps finished by then). {w['prompts']} prompts x "
            f"{w['group']} samples per step, at most {w['max_new']} new tokens.\n"
        )
    return "".join(lines)


# --------------------------------------------------------------------------- orchestration
def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpus": os.cpu_count(),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        env["card"] = torch.cuda.get_device_name(0)
    return env


def _child(args: argparse.Namespace, side: str, out: Path, timeout: float) -> dict[str, Any]:
    """Run one side in a fresh process (clean peak memory, no shared allocator state)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--out",
        str(out),
        "--only",
        side,
        "--trl-budget",
        str(args.trl_budget),
    ]
    if args.warm_from:
        cmd += ["--warm-from", str(args.warm_from)]
    path = out / f"{side}.json"
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"[vs_trl] {side}: stopped at the {timeout:.0f}s limit", flush=True)
    except subprocess.CalledProcessError as err:
        print(f"[vs_trl] {side}: exited with {err.returncode}", flush=True)
    if path.is_file():
        return json.loads(path.read_text())
    if side.startswith("ours"):  # killed mid-run: the steps it logged still count
        return partial_ours(out, side, time.perf_counter() - start)
    return {"side": side, "rows": [], "error": "no result"}


def partial_ours(out: Path, side: str, total: float) -> dict[str, Any]:
    from miles_hydra.backends.local.metrics import read_records

    path = out / f"{side}_run" / "metrics.jsonl"
    records = [r for r in read_records(path) if "step" in r] if path.is_file() else []
    rows = our_rows(records)
    return {"side": side, "rows": rows, "total_s": total, "partial": True}


def run_only(args: argparse.Namespace, w: Workload, out: Path) -> None:
    """``--only``: one step of the protocol in this process, its JSON in ``out``."""
    warm_dir = args.warm_from or out / "warm_start"
    if args.only == "warm":
        result = warm_start(w, args.device, out)
    elif args.only.startswith("ours"):
        result = run_ours(w, args.device, warm_dir, out, args.only)
    else:
        from trl_side import run_trl

        prompts = rl_prompts(w, args.device, w.steps)
        result = run_trl(w, args.device, warm_dir, prompts, out, REWARD_PATH, args.trl_budget)
    (out / f"{args.only}.json").write_text(json.dumps(result, indent=1, default=str))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="h200")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--sides", default="ours,trl", help=f"comma list of {', '.join(SIDES)}")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vs_trl")
    p.add_argument("--keep-warm", action="store_true", help="reuse <out>/warm_start")
    p.add_argument("--reward-window", type=int, default=5, help="steps averaged at equal wall")
    p.add_argument("--side-timeout", type=float, default=420.0, help="seconds per side process")
    p.add_argument("--trl-budget", type=float, default=float("inf"), help="TRL: stop after s")
    p.add_argument("--in-process", action="store_true", help="no child processes (tests)")
    p.add_argument("--warm-from", type=Path, help="an earlier warm_start dir (same model)")
    p.add_argument("--only", choices=("warm", *SIDES), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    w = PRESETS[args.preset]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.only:
        run_only(args, w, out)
        return {}
    sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        raise SystemExit(f"--sides: unknown {unknown}; use {sorted(SIDES)}")
    warm_dir = args.warm_from or out / "warm_start"
    result: dict[str, Any] = {
        "command": "python bench/bench_vs_trl.py " + " ".join(argv or sys.argv[1:]),
        "environment": environment(args.device),
        "preset": args.preset,
        "workload": {**asdict(w), "samples": w.samples},
        "our_overrides": our_overrides(w, args.device, w.ours_steps, warm_dir),
        "sides": {},
    }
    if not args.warm_from and not (args.keep_warm and warm_dir.is_dir()):
        if args.in_process:
            result["warm_start"] = warm_start(w, args.device, out)
        else:
            result["warm_start"] = _child(args, "warm", out, args.side_timeout)
    for side in sides:
        if args.in_process:
            if side == "trl":
                raise SystemExit("--in-process runs our sides only")
            data = run_ours(w, args.device, warm_dir, out, side)
        else:
            data = _child(args, side, out, args.side_timeout)
        data["summary"] = summarize(data, w.samples)
        result["sides"][side] = data
        print(f"[vs_trl] {side}: {json.dumps(data['summary'])}", flush=True)
    result["comparison"] = compare(result, args.reward_window)
    (out / "vs_trl.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "vs_trl.md").write_text(render_table(result))
    print(render_table(result), flush=True)
    return result


if __name__ == "__main__":
    main()
