"""Local engine speed on a config: rollout tokens/s and train step time, plus one full run.

    python bench/bench_local_engine.py                       # the default config, in-process
    python bench/bench_local_engine.py model=tiny_moe precision=bf16_rollout
    python bench/bench_local_engine.py --full-run            # also time `driver.train` (Ray)

Part 1 (in-process, no Ray): one TrainerActor and one RolloutEngine of the composed config;
``--rollouts`` rollouts of rollout_batch_size x n_samples_per_prompt samples after one untimed
warm-up rollout; reports generated tokens / generate() wall time and the train() wall time
(old/ref log-probs + advantages + num_steps_per_rollout optimizer steps) per rollout.
Part 2 (``--full-run``): the whole ``driver.train`` of the config through Ray in a temporary
run dir (warm-start, eval, checkpoints included) with its wall time and first/last eval
accuracy. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from miles_hydra.config import RunConfig  # noqa: E402
from miles_hydra.config.store import materialize, register_configs  # noqa: E402


def load_config(overrides: list[str]) -> RunConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return materialize(compose("config", overrides=overrides))


def bench_steps(cfg: RunConfig, rollouts: int) -> dict[str, float]:
    """Rollout tokens/s and train step time, in-process."""
    from miles_hydra.backends.local.evaluate import decode_response
    from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
    from miles_hydra.backends.local.train_batch import RolloutBatch
    from miles_hydra.backends.local.trainer import TrainerActor, resolve_device
    from miles_hydra.tasks import build_prompt_source, build_tokenizer
    from miles_hydra.tasks.reward import build_reward_fn

    r = cfg.rollout
    device = resolve_device(cfg.backend.device.value)
    tokenizer = build_tokenizer(cfg.model)
    source = build_prompt_source(cfg.data, tokenizer, cfg.seed, r.rollout_max_prompt_len)
    reward_fn = build_reward_fn(cfg.reward, cfg.data)
    trainer = TrainerActor(cfg, tokenizer.pad_id, cfg.backend.num_threads)
    engine = RolloutEngine(
        cfg.model, cfg.speculative, cfg.precision, device, cfg.seed, max(64, r.samples_per_rollout)
    )
    params = SamplingParams(
        r.rollout_temperature,
        r.rollout_top_p,
        r.rollout_top_k,
        r.rollout_max_response_len,
        [tokenizer.eos_id],
    )
    tok_per_s, train_s, sync_s = [], [], []
    for i in range(rollouts + 1):
        start = time.perf_counter()
        engine.update_weights(trainer.engine_state_dict())
        synced = time.perf_counter()
        prompts = [
            p
            for p in source.next_batch(r.rollout_batch_size)
            for _ in range(r.n_samples_per_prompt)
        ]
        outs = engine.generate([p.ids for p in prompts], params)
        generated = time.perf_counter()
        batch = RolloutBatch(
            prompt_ids=[p.ids for p in prompts],
            response_ids=[o.response_ids for o in outs],
            rollout_log_probs=[o.rollout_log_probs for o in outs],
            rewards=[
                reward_fn(p, decode_response(tokenizer, o.response_ids))
                for p, o in zip(prompts, outs)
            ],
            group_size=r.n_samples_per_prompt,
        )
        trained_start = time.perf_counter()
        trainer.train(i, batch)
        done = time.perf_counter()
        if i == 0:
            continue  # warm-up
        tok_per_s.append(sum(len(o.response_ids) for o in outs) / (generated - synced))
        train_s.append(done - trained_start)
        sync_s.append(synced - start)
    return {
        "rollout_tokens_per_s": statistics.median(tok_per_s),
        "train_step_s": statistics.median(train_s),
        "update_weights_s": statistics.median(sync_s),
        "samples_per_rollout": r.samples_per_rollout,
        "rollouts_timed": rollouts,
    }


def bench_full_run(cfg: RunConfig) -> dict[str, float]:
    """Wall time and eval accuracy of the whole run through Ray."""
    from miles_hydra.backends.local.loop import train
    from miles_hydra.backends.local.metrics import read_records

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(cfg, Path(tmp))
        wall = time.perf_counter() - start
        records = read_records(Path(tmp) / "metrics.jsonl")
    name = f"eval/{cfg.data.task}"
    evals = [(r["eval/step"], r[name]) for r in records if name in r]
    return {
        "full_run_wall_s": wall,
        "eval_accuracy_before_warm_start": next((a for s, a in evals if s == -1), None),
        "eval_accuracy_start_of_rl": next((a for s, a in evals if s == 0), None),
        "eval_accuracy_end": evals[-1][1] if evals else None,
        "final_raw_reward": result.get("rollout/raw_reward"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny_moe")
    parser.add_argument("--rollouts", type=int, default=5, help="timed rollouts (after 1 warm-up)")
    parser.add_argument("--full-run", action="store_true", help="also time driver.train via Ray")
    args = parser.parse_args()
    cfg = load_config(args.overrides)
    out = {
        "config": args.overrides or ["<defaults>"],
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        **bench_steps(cfg, args.rollouts),
    }
    if args.full_run:
        out.update(bench_full_run(cfg))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
