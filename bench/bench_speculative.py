"""Speculative RL benchmark: no speculation / frozen MTP draft / online MTP draft (issue 6.7).

    python bench/bench_speculative.py --device cpu --preset tiny        # CPU (~5-8 min, 2 cores)
    python bench/bench_speculative.py --device cuda --preset small      # GPU, 8-layer 512-wide
    python bench/bench_speculative.py --device cuda --preset medium     # GPU, 16-layer 1024-wide
    python bench/bench_speculative.py --device cuda --preset small --target descending

Protocol. One supervised warm-start on task solutions (``TrainerActor.warmup_sft``, the code the
driver runs for ``data.warmup_sft_steps``: policy CE + MTP loss, so the draft head is trained
too) is saved once as an HF checkpoint dir with ``draft.safetensors``. Then the same RL run
(``miles_hydra.backends.local.loop.train``: same model, prompts, seed, GRPO, lr) is run three times
from that checkpoint (``data.warmup_sft_steps=0``): ``speculative=none``, ``mtp`` (the
warm-started draft, frozen) and ``mtp_online`` (the same draft trained by the MTP loss, scale
0.2, synced to the engines every step). Both drafts thus start identical.

``--target``: what the RL reward asks for. ``ascending`` (default) is the task the warm-start
learned, so RL sharpens the policy near its start. ``descending`` rewards the reversed order: the
policy must leave the warm-start distribution (as long RL runs leave their SFT start, the case
where miles reports frozen drafts falling behind), which is the stress test of a frozen draft.

Per rollout, from each run's metrics.jsonl: rollout tokens/s (``perf/tokens_per_gpu_per_sec``
= generated tokens / ``perf/rollout_time`` / num_engines), ``rollout/spec_accept_length``,
``rollout/spec_accept_rate``, ``train/mtp_loss``, and how far the policy moved from the
warm-start: ``drift_kl`` = mean over response tokens of log pi - log pi_warm on the policy's own
samples (a KL(pi || pi_warm) estimate; ``algorithm.use_kl_loss=true`` with coefficient 0 makes
the trainer compute the reference log-probs without changing the loss). Summaries skip the
first rollout (first-call allocations). The speculative sampler draws differently from plain
sampling (lossless in distribution, not sample for sample), so the three RL trajectories
agree in distribution only; so after the online run both drafts (warm-start = frozen, and
online) are also scored on the same samples of its final policy (``draft_hits``).

Output under ``--out`` (default ``bench/results/speculative_<device>_<preset>``): ``report.md``
(summary table, ratios, per-step curves as text), ``results.json`` and ``curves.png``.
Without Ray installed (the device machine) the actors run in this process (``inproc_ray.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):  # run as a script: the repo and this folder
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MODES = ("none", "mtp", "mtp_online")


@dataclass
class Preset:
    overrides: list[str]  # Hydra overrides of conf/ (model shape, task, rollout sizes)
    num_rollout: int  # RL rollouts per mode
    warmup_steps: int  # supervised warm-start steps (batches of samples_per_rollout)
    warmup_lr: float  # warm-start learning rate (data.warmup_sft_lr)
    lr: float  # RL learning rate (raised so the policy moves within the run)


_ROLL = "rollout.rollout_temperature=1.0 data=sorting "
_ROLL += "reward=custom reward.custom_rm_path=bench_speculative:sorting_partial_credit "
_SMALL = "model.num_layers=8 model.hidden_size=512 model.ffn_hidden_size=1536 "
_SMALL += "model.num_attention_heads=8 model.num_query_groups=4 model.kv_channels=64 "
_MEDIUM = "model.num_layers=16 model.hidden_size=1024 model.ffn_hidden_size=3072 "
_MEDIUM += "model.num_attention_heads=16 model.num_query_groups=8 model.kv_channels=64 "
# GPU: lists of up to 24 characters, so responses are long enough for drafting to matter
_BIG_ROLL = "data.task_kwargs.max_len=24 rollout.n_samples_per_prompt=8 "
_BIG_ROLL += "rollout.rollout_max_response_len=32 "
_BIG_ROLL += "rollout.eval_interval=10 data.num_eval_prompts=128 "
# GPU training: 32 samples per micro-batch (the default 1 makes a training step launch-bound:
# 180 train tok/s for the small preset on an H200, 0.05 s rollouts next to 16 s of training)
_BIG_ROLL += "parallelism.micro_batch_size=32 "
# bf16 rollout, 16 prompts x 8 = 128 samples per rollout: on an H200 one speculative step
# (2 drafts) of this model costs 1.4x a plain one at 64 slots and 1.75x at 256 in fp32
# (bench/rollout_step_probe.py), so at 256 fp32 slots an accept length of 2 did not pay (0.93x)
_BIG_ROLL += "precision=bf16_rollout "
_SMOKE = "data.task_kwargs.max_len=4 model.hidden_size=32 model.ffn_hidden_size=64 model.num_attention_heads=2 "
_SMOKE += "model.num_query_groups=1 model.kv_channels=16 rollout.rollout_batch_size=2 "
_SMOKE += "rollout.n_samples_per_prompt=2 rollout.rollout_max_response_len=6 "
_SMOKE += "rollout.eval_interval=null data.num_eval_prompts=4 "
_TINY = "data.task_kwargs.max_len=10 rollout.rollout_batch_size=8 rollout.n_samples_per_prompt=4 "
_TINY += "rollout.rollout_max_response_len=12 rollout.eval_interval=30 data.num_eval_prompts=32"
PRESETS = {  # overrides, num_rollout, warmup_steps, warmup_lr, lr
    "smoke": Preset((_ROLL + _SMOKE).split(), 2, 1, 1e-3, 1e-3),  # tests only: seconds
    "tiny": Preset((_ROLL + _TINY).split(), 60, 150, 8e-2, 5e-3),  # tiny_dense (2x128), CPU
    # GPU: 8 layers x 512 (~25M params), fp32 training, bf16 rollout
    "small": Preset(
        (_ROLL + _SMALL + _BIG_ROLL + "rollout.rollout_batch_size=16").split(), 40, 100, 1e-3, 2e-4
    ),
    # GPU: 16 layers x 1024 (~200M params), bf16 rollout
    "medium": Preset(
        (_ROLL + _MEDIUM + _BIG_ROLL + "rollout.rollout_batch_size=32").split(), 40, 150, 5e-4, 1e-4
    ),
}


TARGETS = {  # --target: what the RL reward asks for (the warm-start always learns ascending)
    "ascending": [],
    "descending": ["reward.custom_rm_path=bench_speculative:sorting_descending_partial_credit"],
}


def sorting_partial_credit(prompt_text: str, response: str, label: str) -> float:
    """Sorting reward with partial credit: positions equal to the sorted answer over the longer
    length. A weakly warm-started policy then gets graded rewards, so GRPO moves it from the
    first rollout (the exact-match verifier gives all-zero groups and no signal)."""
    text = response.strip()
    hits = sum(a == b for a, b in zip(text, str(label)))
    return hits / max(len(text), len(str(label)), 1)


def sorting_descending_partial_credit(prompt_text: str, response: str, label: str) -> float:
    """`sorting_partial_credit` against the DESCENDING order (``--target descending``): the
    warm-start learned ascending lists, so RL must move the policy far from it, as long RL runs
    move a policy away from its SFT start; a frozen draft then falls behind."""
    return sorting_partial_credit(prompt_text, response, str(label)[::-1])


# --------------------------------------------------------------------------- config
def compose_run_config(overrides: list[str]) -> Any:
    """conf/config.yaml composed with ``overrides`` and materialized (a RunConfig)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from miles_hydra.config.store import materialize, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    return materialize(cfg)


def base_overrides(args: argparse.Namespace, preset: Preset) -> list[str]:
    return [
        *preset.overrides,
        f"backend.device={args.device}",
        f"backend.num_threads={args.num_threads}",
        f"rollout.num_rollout={args.num_rollout or preset.num_rollout}",
        f"algorithm.lr={args.lr or preset.lr}",
        "algorithm.use_kl_loss=true",  # reference log-probs for drift_kl; coefficient stays 0
        "checkpoint.save_interval=null",
        "checkpoint.resume=false",
        "logging.progress_bar=false",
        *TARGETS[args.target],
        *args.set,
    ]


# --------------------------------------------------------------------------- the runs
def warm_start(overrides: list[str], steps: int, lr: float, out: Path) -> tuple[Path, dict]:
    """Run the driver's warm-start once (policy + draft head), save it as an HF dir."""
    import torch

    from miles_hydra.backends.local.models import save_checkpoint_dir
    from miles_hydra.backends.local.trainer import TrainerActor
    from miles_hydra.tasks import build_prompt_source, build_tokenizer

    cfg = compose_run_config([*overrides, "speculative=mtp", f"data.warmup_sft_lr={lr}"])
    tokenizer = build_tokenizer(cfg.model)
    r = cfg.rollout
    source = build_prompt_source(
        cfg.data, tokenizer, cfg.seed, r.rollout_max_prompt_len, r.rollout_max_response_len
    )
    trainer = TrainerActor(cfg, tokenizer.pad_id, cfg.backend.num_threads or os.cpu_count())
    batch = r.samples_per_rollout
    start = time.perf_counter()
    metrics = trainer.warmup_sft(source.sft_examples(steps * batch), batch) if steps else {}
    metrics["warmup_time_s"] = time.perf_counter() - start
    path = save_checkpoint_dir(trainer.policy, out / "warm_start")
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Path(path), metrics


def torch_no_grad(fn: Any) -> Any:
    """``torch.no_grad()`` as a decorator, importing torch only when called."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapped


def run_mode(overrides: list[str], mode: str, warm_dir: Path, out: Path) -> dict[str, Any]:
    """One RL run from the warm-start with ``speculative=mode``; its records and load."""
    from miles_hydra.backends.local import checkpoint, loop
    from miles_hydra.backends.local.metrics import read_records
    from miles_hydra.backends.local.models import DRAFT_FILE

    cfg = compose_run_config(
        [
            *overrides,
            f"speculative={mode}",
            f"model.hf_checkpoint={warm_dir}",
            "data.warmup_sft_steps=0",
        ]
    )
    run_dir = out / mode
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun starts fresh (no resume, fresh log)
    load_before = os.getloadavg()
    start = time.perf_counter()
    loop.train(cfg, run_dir)
    wall = time.perf_counter() - start
    records = read_records(run_dir / "metrics.jsonl")
    samples = cfg.rollout.samples_per_rollout
    steps = [step_row(r, samples) for r in records if "step" in r]
    evals = {int(r["eval/step"]): accuracy(r) for r in records if "eval/step" in r}
    check = {}
    if mode == "mtp_online":  # both drafts on the same samples: warm-start and final policy
        final = checkpoint.find_latest(run_dir / "checkpoints") / checkpoint.MODEL_DIR
        drafts = {"frozen": warm_dir / DRAFT_FILE, "online": final / DRAFT_FILE}
        check = {
            "warm_policy": draft_hits(cfg, warm_dir, {"frozen": warm_dir / DRAFT_FILE}),
            "final_policy": draft_hits(cfg, final, drafts),
        }
    return {
        "mode": mode,
        "num_steps": cfg.speculative.num_steps if cfg.speculative.enabled else 0,
        "wall_s": wall,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "steps": steps,
        "eval": {k: v for k, v in evals.items() if v is not None},
        "draft_check": check,
    }


@torch_no_grad
def draft_hits(cfg: Any, model_dir: Path, drafts: dict[str, Path], samples: int = 4) -> dict:
    """Drafts scored on the same samples of the policy in ``model_dir`` (eval prompts x
    ``samples``, rollout temperature): ``<name>_hit`` = top-1 hit rate of token t+2 given the
    true t+1 (for a greedy draft, the expected acceptance of the first drafted token) and
    ``<name>_ce`` = the MTP loss; ``drafts`` maps a name to a draft.safetensors file."""
    import dataclasses

    from safetensors.torch import load_file

    from miles_hydra.backends.local.draft import mtp_loss
    from miles_hydra.backends.local.models import build_policy
    from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
    from miles_hydra.backends.local.train_batch import sft_batch
    from miles_hydra.backends.local.trainer import resolve_device
    from miles_hydra.config.speculative import SpeculativeConfig
    from miles_hydra.tasks import build_prompt_source, build_tokenizer

    device, r = resolve_device(cfg.backend.device.value), cfg.rollout
    model_cfg = dataclasses.replace(cfg.model, hf_checkpoint=str(model_dir))
    tok = build_tokenizer(cfg.model)
    source = build_prompt_source(
        cfg.data, tok, cfg.seed, r.rollout_max_prompt_len, r.rollout_max_response_len
    )
    prompts = [p.ids for p in source.eval_prompts() for _ in range(samples)]
    engine = RolloutEngine(model_cfg, SpeculativeConfig(), cfg.precision, device, cfg.seed + 7)
    params = SamplingParams(
        r.rollout_temperature, 1.0, -1, r.rollout_max_response_len, [tok.eos_id]
    )
    outputs = engine.generate(prompts, params)
    policy = build_policy(model_cfg, cfg.speculative, cfg.precision.train_dtype, device, cfg.seed)
    batch = sft_batch([(p, o.response_ids) for p, o in zip(prompts, outputs)], tok.pad_id)
    batch = batch.to(device)
    hidden = policy.lm.model(input_ids=batch.input_ids).last_hidden_state
    out = {}
    for name, path in drafts.items():
        policy.draft.load_state_dict(load_file(str(path)))
        _, m = mtp_loss(policy.draft, policy.lm, hidden, batch.input_ids, batch.seq_loss_mask)
        out[f"{name}_hit"], out[f"{name}_ce"] = m["train/mtp_accuracy"], m["train/mtp_loss"]
    return out


def step_row(record: dict[str, Any], samples: int) -> dict[str, Optional[float]]:
    """The per-rollout numbers the report uses (None where a mode does not log one)."""
    from speculative_report import depth_rates

    tokens = record["rollout/response_len/mean"] * samples
    drift = None
    if "rollout/ref_log_probs" in record:
        drift = record["rollout/log_probs"] - record["rollout/ref_log_probs"]
    return {
        "step": record["step"],
        "tokens": tokens,
        "rollout_time": record["perf/rollout_time"],
        "tok_s": record["perf/tokens_per_gpu_per_sec"],
        "accept_length": record.get("rollout/spec_accept_length"),
        "accept_rate": record.get("rollout/spec_accept_rate"),
        "mtp_loss": record.get("train/mtp_loss"),
        "mtp_accuracy": record.get("train/mtp_accuracy"),
        "reward": record.get("rollout/raw_reward"),
        "drift_kl": drift,
        **depth_rates(record),
    }


def accuracy(record: dict[str, Any]) -> Optional[float]:
    keys = [k for k in record if k.startswith("eval/") and k.count("/") == 1 and k != "eval/step"]
    keys = [k for k in keys if not k.endswith("-truncated_ratio")]
    return float(record[keys[0]]) if keys else None


# --------------------------------------------------------------------------- CLI
def engine_sources_sha1() -> str:
    """Hash of miles_hydra/backends/local/**/*.py (the tree is shared: flags edits during a run)."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted((ROOT / "miles_hydra" / "engine").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpus": os.cpu_count(),
        "engine_sha1": engine_sources_sha1(),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["card"] = torch.cuda.get_device_name(0)
    else:
        env["card"] = platform.processor() or platform.machine()
    return env


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {MODES}")
    p.add_argument("--num-rollout", type=int, default=0, help="0 = the preset's")
    p.add_argument("--warmup-steps", type=int, default=-1, help="-1 = the preset's")
    p.add_argument("--lr", type=float, default=0.0, help="RL lr; 0 = the preset's")
    p.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="ascending",
        help="RL reward's order; descending = a policy shift away from the warm-start",
    )
    p.add_argument("--seeds", default="1", help="comma list; several = a seed-averaged report")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads per actor")
    p.add_argument(
        "--actors",
        choices=("auto", "ray", "inproc"),
        default="auto",
        help="Ray actors, or the driver's actors in this process (auto: Ray when installed)",
    )
    p.add_argument("--set", action="append", default=[], help="extra Hydra override (repeat)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def run_seed(args: argparse.Namespace, seed: int, out: Path, actors: str) -> dict[str, Any]:
    """Warm-start + one RL run per mode for ``seed``; report, JSON and PNG written in ``out``."""
    from speculative_report import plot_curves, render_report

    preset = PRESETS[args.preset]
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*base_overrides(args, preset), f"seed={seed}"]
    steps = preset.warmup_steps if args.warmup_steps < 0 else args.warmup_steps
    env = {**environment(args.device), "actors": actors, "seed": seed, "target": args.target}
    result: dict[str, Any] = {"command": args.command, "environment": env, "overrides": overrides}
    warm_dir, result["warm_start"] = warm_start(overrides, steps, preset.warmup_lr, out)
    result["runs"] = {mode: run_mode(overrides, mode, warm_dir, out) for mode in args.modes}
    if engine_sources_sha1() != env["engine_sha1"]:
        env["engine_sha1"] += f" CHANGED DURING THE RUN to {engine_sources_sha1()}"
    (out / "report.md").write_text(render_report(result))
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    plot_curves(result["runs"], out / "curves.png")
    return result


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run every seed; with several, ``out/report.md`` is the seed-averaged report."""
    from speculative_report import average_seeds, plot_curves, render_report

    args = parse_args(argv)
    args.command = "python bench/bench_speculative.py " + " ".join(argv or sys.argv[1:])
    args.modes = args.modes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out or ROOT / "bench" / "results" / f"speculative_{args.device}_{args.preset}"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from inproc_ray import ray_or_inproc

    with ray_or_inproc(args.actors) as actors:
        per_seed = [
            run_seed(args, seed, out / f"seed_{seed}" if len(seeds) > 1 else out, actors)
            for seed in seeds
        ]
    result = per_seed[0] if len(seeds) == 1 else average_seeds(per_seed)
    report = render_report(result)
    (out / "report.md").write_text(report)
    if len(seeds) > 1:
        (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
        plot_curves(result["runs"], out / "curves.png")
    result["report"], result["plot"] = report, out / "curves.png"
    print(report)
    return result


if __name__ == "__main__":
    main()
