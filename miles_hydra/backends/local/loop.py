"""The local engine's job process (miles ``train.py``): Ray actors and the RL loop.

``train(cfg, run_dir)`` starts (or joins, when ``RAY_ADDRESS`` is set) Ray, creates one
TrainerActor and ``backend.num_engines`` RolloutEngine actors, optionally warm-starts the
policy on task solutions, pushes the weights to the engines, then per rollout::

    generate -> reward -> train -> sync weights -> eval (every rollout.eval_interval)
             -> metrics -> checkpoint (every checkpoint.save_interval and at the end)

Rollouts come from ``collector.RolloutCollector`` (over-sampling, dynamic sampling, partial
rollout; its paused samples are checkpointed). With ``rollout.async_training`` (the one-step-off
pipeline, miles ``train_async.py``) a background thread collects rollout n+1 with the engines'
current weights (those of step n-1) while the trainer trains on rollout n; the weights are
pushed once both finished, so every rollout is generated with one version and the run is as
deterministic as the synchronous one. The off-policy gap is corrected by the configured
``algorithm.correction`` (validation requires one) and shows in
``train/train_rollout_logprob_abs_diff``; ``perf/rollout_wait_time`` is the generation time
the trainer still waited for. A checkpoint keeps the prefetched rollout, so a resumed run
trains on exactly what the original would have.

After every rollout the loop polls ``miles_hydra.cluster.preemption.requested()``: when set it saves
a checkpoint and returns ``{"preempted": True, ...}``. A run resumes from the latest checkpoint
in ``checkpoint.load`` (default ``<run_dir>/checkpoints``) at the next rollout, with the data
position, RNG states, optimizer and wandb run restored.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from miles_hydra.backends.local import checkpoint
from miles_hydra.backends.local.actors import Actors, ray_session
from miles_hydra.backends.local.collector import Collected, RolloutCollector
from miles_hydra.backends.local.evaluate import EvalRunner, decode_response
from miles_hydra.backends.local.metrics import MetricsLogger, read_records, rollout_metrics
from miles_hydra.cluster import preemption
from miles_hydra.config import RunConfig
from miles_hydra.errors import ClusterError, ConfigError
from miles_hydra.launch.console import dead_actor_note

log = logging.getLogger(__name__)


def train(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured RL job in ``run_dir``; return the final metrics. A Ray actor that
    dies makes a ClusterError naming its log file (``<run_dir>/logs``) with its last lines."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with ray_session(cfg, run_dir):
        try:
            return _Loop(cfg, run_dir).run()
        except ClusterError as exc:
            note = dead_actor_note(exc, run_dir)
            if note is None:
                raise
            raise ClusterError(f"{exc}\n{note}") from exc


class _Loop:
    """State of one run: data, reward, actors, logger, step counter."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        from miles_hydra.tasks import build_prompt_source, build_tokenizer
        from miles_hydra.tasks.reward import build_reward_fn

        self.cfg, self.run_dir = cfg, run_dir
        self.tokenizer = build_tokenizer(cfg.model)
        r = cfg.rollout
        self.source = build_prompt_source(
            cfg.data, self.tokenizer, cfg.seed, r.rollout_max_prompt_len, r.rollout_max_response_len
        )
        self.reward_fn = build_reward_fn(cfg.reward, cfg.data)
        self.ckpt_root = Path(cfg.checkpoint.save or run_dir / "checkpoints")
        self.actors = Actors(cfg, self.tokenizer.pad_id)
        self.evaluator = EvalRunner(cfg, self.actors, self.tokenizer, self.reward_fn, self.source)
        self.spec_monitor = _spec_monitor(cfg)
        self.collector = RolloutCollector(
            r, self.source.next_batch, self._generate, self._score, self.actors.record_routing
        )
        # async: the next rollout (and its generation time), already generated
        self.prefetched: tuple[Collected, float] | None = None
        self.pending: Future | None = None  # async: its collection in the background thread
        self.pool = ThreadPoolExecutor(1, "rollout") if r.async_training else None
        self.resumed = False  # set by _resume when a checkpoint was loaded
        self.start_step, wandb_id = self._resume()
        self.logger = MetricsLogger(cfg, run_dir, self.start_step, wandb_id, self.resumed)

    # ---------------------------------------------------------------- resume
    def _resume(self) -> tuple[int, str | None]:
        c = self.cfg.checkpoint
        if not c.resume and not c.load:
            return 0, None
        where = Path(c.load) if c.load else self.ckpt_root
        ckpt = checkpoint.find_latest(where)
        if ckpt is None:
            if c.load and c.load != str(self.ckpt_root):
                raise ConfigError(
                    "checkpoint.load",
                    c.load,
                    "holds no checkpoint (no step_* with driver.pt)",
                    "point it at a checkpoint directory or its parent, or set it to null",
                )
            return 0, None
        state = checkpoint.load_driver_state(ckpt)
        self.actors.load(ckpt)
        self.source.load_state_dict(state["data"])
        checkpoint.set_rng_state(state["rng"])
        self.actors.set_engine_rng(state.get("engine_rng"))
        if self.spec_monitor is not None and state.get("spec_monitor"):
            self.spec_monitor.load_state_dict(state["spec_monitor"])
        from miles_hydra.tasks.source import Prompt

        self.collector.load_state_dict(state.get("collector"), Prompt)
        self.prefetched = state.get("prefetched") if self.cfg.rollout.async_training else None
        log.info("resuming from %s at rollout %d", ckpt, state["step"])
        self.resumed = True
        return int(state["step"]), state.get("wandb_id")

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        try:
            fresh = not self.resumed
            if fresh and not self._warm_start():
                log.warning("stop requested during the warm-start; the next attempt repeats it")
                return {**self._final(), preemption.PREEMPTED_KEY: True, "step": None}
            self.actors.sync_weights()
            if fresh and cfg.rollout.eval_interval:
                self.logger.log_eval(0, self.evaluator.run())
            if fresh and cfg.data.warmup_sft_steps and cfg.checkpoint.save_interval is not None:
                self._save(0)  # the warm-started policy: a resume never repeats the warm-start
            for rollout_id in range(self.start_step, cfg.rollout.num_rollout):
                self._step(rollout_id)
                done = rollout_id + 1
                last = done == cfg.rollout.num_rollout
                preempted = not last and preemption.requested()
                if last or preempted or self._save_due(done):
                    self._save(done)
                if preempted:
                    log.warning("preemption requested: checkpointed after rollout %d", rollout_id)
                    return {**self._final(), preemption.PREEMPTED_KEY: True, "step": rollout_id}
            return {**self._final(), preemption.PREEMPTED_KEY: False}
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            self.logger.close()

    def _warm_start(self) -> bool:
        """The supervised warm-start, in ten calls; False when a stop was requested between
        two of them (a signal, a Slurm preemption): the run then ends without RL."""
        steps = self.cfg.data.warmup_sft_steps
        if steps == 0:
            return True
        if self.cfg.rollout.eval_interval:
            self.actors.sync_weights()
            self.logger.log_eval(-1, self.evaluator.run())  # accuracy before the warm-start
        batch = self.cfg.rollout.samples_per_rollout
        start = time.perf_counter()
        chunk = max(1, steps // 10)  # ten calls, so the progress bar moves
        first = None
        for done in range(0, steps, chunk):
            if preemption.requested():
                return False
            n = min(chunk, steps - done)
            examples = self.source.sft_examples(n * batch)
            metrics = self.actors.warmup_sft(examples, batch, last=done + n >= steps)
            first = metrics["warmup/sft_loss_first"] if first is None else first
            self.logger.show(
                {
                    "warm-start": f"{done + n}/{steps}",
                    "sft_loss": f"{metrics['warmup/sft_loss_last']:.3g}",
                }
            )
        metrics["warmup/sft_loss_first"] = first
        metrics["perf/warmup_time"] = time.perf_counter() - start
        self.logger.log_event({"warmup/steps": steps, **metrics})
        return True

    def _generate(
        self, prompts: list[list[int]], caps: list[int], groups: list[int], stop: int | None
    ) -> list[Any]:
        params = self.evaluator.train_params()
        return self.actors.generate(prompts, params, caps, groups, stop)

    def _score(self, prompt: Any, response_ids: list[int]) -> float:
        return self.reward_fn(prompt, decode_response(self.tokenizer, response_ids))

    def _collect(self, rollout_id: int) -> tuple[Collected, float]:
        """Rollout ``rollout_id`` and its generation wall time. Its weight version: the number of
        updates the engines' weights have seen (one behind with the one-step-off pipeline)."""
        start = time.perf_counter()
        lag = 1 if self.cfg.rollout.async_training else 0
        collected = self.collector.collect(max(0, rollout_id - lag))
        return collected, time.perf_counter() - start

    def _next_rollout(self, rollout_id: int) -> tuple[Collected, float, float]:
        """(rollout, its generation time, time waited for it). Async: the prefetched one (or
        generated now on the first rollout), and the next one starts in the background."""
        if self.pool is None:
            collected, gen_time = self._collect(rollout_id)
            return collected, gen_time, gen_time
        start = time.perf_counter()
        if self.prefetched is None:
            self.prefetched = self._collect(rollout_id)
        collected, gen_time = self.prefetched
        self.prefetched = None
        if rollout_id + 1 < self.cfg.rollout.num_rollout:
            self.pending = self.pool.submit(self._collect, rollout_id + 1)
        return collected, gen_time, time.perf_counter() - start

    def _finish_prefetch(self) -> float:
        """Wait for the background collection (before the weights change); seconds waited."""
        if self.pending is None:
            return 0.0
        start = time.perf_counter()
        self.prefetched = self.pending.result()
        self.pending = None
        return time.perf_counter() - start

    def _step(self, rollout_id: int) -> None:
        cfg, r = self.cfg, self.cfg.rollout
        start = time.perf_counter()
        collected, rollout_time, waited = self._next_rollout(rollout_id)
        batch = collected.batch
        lengths = [len(x) for x in batch.response_ids]
        metrics: dict[str, Any] = {}
        if len(batch):  # empty when dynamic sampling kept no group within its rounds
            metrics = rollout_metrics(batch.rewards, lengths, collected.finished, batch.group_size)
        metrics.update(collected.metrics)
        if self.spec_monitor is not None:  # acceptance metrics and the collapse alert
            from miles_hydra.backends.local.spec_monitor import SpecStats

            stats = SpecStats.from_outputs(collected.outputs)
            metrics.update(self.spec_monitor.update(stats, rollout_id))
        metrics["perf/rollout_time"] = rollout_time
        metrics["perf/tokens_per_gpu_per_sec"] = (
            collected.new_tokens / max(rollout_time, 1e-9) / cfg.backend.num_engines
        )
        metrics["rollout/generated_tokens"] = collected.new_tokens
        if len(batch):
            metrics.update(self.actors.train(rollout_id, batch))
        wait_next = self._finish_prefetch()
        if self.pool is not None:
            metrics["perf/rollout_wait_time"] = waited + wait_next
        metrics["perf/update_weights_time"] = self.actors.sync_weights()
        done = rollout_id + 1
        if r.eval_interval and (done % r.eval_interval == 0 or done == r.num_rollout):
            self.logger.log_eval(done, self.evaluator.run())
        metrics["perf/step_time"] = time.perf_counter() - start
        self.logger.log_rollout(rollout_id, metrics)

    # ---------------------------------------------------------------- checkpoints, result
    def _save_due(self, done: int) -> bool:
        interval = self.cfg.checkpoint.save_interval
        return interval is not None and done % interval == 0

    def _save(self, done: int) -> None:
        start = time.perf_counter()
        state = {
            "data": self.source.state_dict(),
            "rng": checkpoint.rng_state(),
            "engine_rng": self.actors.engine_rng(),
            "wandb_id": self.logger.wandb_id,
            "spec_monitor": None if self.spec_monitor is None else self.spec_monitor.state_dict(),
            "collector": self.collector.state_dict(),
            "prefetched": self.prefetched,  # async: the next rollout, generated already
        }
        path = checkpoint.save(
            self.ckpt_root,
            done,
            state,
            self.actors.save_trainer_part,
            self.cfg.checkpoint.keep_last,
        )
        log.info("checkpoint %s (%.1fs)", path, time.perf_counter() - start)

    def _final(self) -> dict[str, Any]:
        """Last rollout record merged with the last eval record."""
        records = read_records(self.logger.path)
        out: dict[str, Any] = {"run_dir": str(self.run_dir)}
        for record in records:
            if "eval/step" in record and record["eval/step"] >= 0:
                out.update(record)
        for record in records:
            if "step" in record:
                out.update(record)
        return out


def _spec_monitor(cfg: RunConfig) -> Any:
    """``spec_monitor.SpecMonitor`` (acceptance metrics, drop alert) when speculation is on."""
    if not cfg.speculative.enabled:
        return None
    from miles_hydra.backends.local.spec_monitor import SpecMonitor

    return SpecMonitor.from_config(cfg.speculative)
