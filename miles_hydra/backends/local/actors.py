"""Ray plumbing of the driver: the Ray session, ``get`` (``ray.get`` with a timeout and our own
errors unwrapped), and ``Actors`` (one trainer and ``backend.num_engines`` rollout engines,
built from the config, with one method per call the RL loop makes)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from miles_hydra.cluster.placement import place_actors
from miles_hydra.config import RunConfig
from miles_hydra.config.model import ModelFamily
from miles_hydra.errors import ClusterError, MilesHydraError

if TYPE_CHECKING:  # imported where used: it imports torch
    from miles_hydra.backends.local.weight_sync import WeightSync

RAY_TIMEOUT_S = 1800.0  # longest single actor call (a rollout or a train step of a big model)
ACTOR_START_TIMEOUT_S = 300.0  # actor creation: process start, torch import, model build


@contextlib.contextmanager
def ray_session(cfg: RunConfig, run_dir: Path) -> Iterator[None]:
    """Join the job's Ray cluster when ``RAY_ADDRESS`` is set, else start a private local one
    (token auth off, all cores, no dashboard); shut down at the end, also on failure.

    With ``logging.verbose=false`` the actors write their output under ``<run_dir>/logs``
    (``launch.console.redirect_actor_output``) and Ray does not copy it to the console;
    verbose: Ray prints it there with its ``(TrainerActor pid=...)`` prefix."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():  # a caller (test, notebook) owns the session
        yield
        return
    from miles_hydra.launch.console import ray_driver_options

    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {
        "configure_logging": False,
        **ray_driver_options(run_dir, cfg.logging.verbose),
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Ray nices workers to 15 by default; our actors are the job itself, not background
        # work, and would starve next to any other busy process on the machine.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    from miles_hydra.cluster import preemption

    preemption.rearm()  # ray.init took SIGTERM over; the run's stop handler gets it back
    try:
        yield
    finally:
        ray.shutdown()


def get(refs: Any, timeout: float = RAY_TIMEOUT_S, what: str = "actor call") -> Any:
    """``ray.get`` with a timeout; our own errors raised in an actor come out unwrapped."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    try:
        return ray.get(refs, timeout=timeout)
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, MilesHydraError):
            raise cause from None
        raise
    except GetTimeoutError as err:
        raise ClusterError(f"{what} did not finish within {timeout:.0f}s") from err
    except RayActorError as err:
        raise ClusterError(f"{what}: a Ray actor died ({err})") from err


class Actors:
    """The trainer actor and the rollout engine actors of one run."""

    def __init__(self, cfg: RunConfig, pad_id: int) -> None:
        import ray

        from miles_hydra.backends.local.rollout import RolloutEngineActor
        from miles_hydra.backends.local.trainer import TrainerActor, resolve_device

        self.cfg = cfg
        self.record_routing = cfg.model.family is ModelFamily.qwen3_moe
        device = resolve_device(cfg.backend.device.value)
        threads = cfg.backend.num_threads or os.cpu_count() or 1
        n = cfg.backend.num_engines
        # Fractional CPUs: the actors take turns, and 2 cores must not deadlock.
        gpus = 1.0 / (n + 1) if device == "cuda" else 0.0
        env = {"env_vars": {"OMP_NUM_THREADS": str(threads), "RAY_AUTH_MODE": "disabled"}}
        # on several nodes: the trainer on node 0, the engines on the others
        place = place_actors(cfg.cluster.nodes, n)
        self.trainer = (
            ray.remote(TrainerActor)
            .options(num_cpus=0.25, num_gpus=gpus, runtime_env=env, **place.options(place.trainer))
            .remote(cfg, pad_id, threads)
        )
        self.engines = [
            RolloutEngineActor.options(
                num_cpus=0.25, num_gpus=gpus, runtime_env=env, **place.options(place.engines[i])
            ).remote(
                cfg.model,
                cfg.speculative,
                cfg.precision,
                device,
                cfg.seed + 1000 * (i + 1),
                max(64, cfg.rollout.samples_per_rollout),
                threads,
                batched_decode=cfg.backend.rollout_batched,
                cuda_graphs=cfg.backend.rollout_cuda_graphs,
                compile_decode=cfg.backend.rollout_compile,
                attn_kernel=cfg.backend.rollout_attn_kernel,
            )
            for i in range(n)
        ]
        self._weight_sync: Optional[WeightSync] = None  # routes chosen at the first sync
        # Surface start-up failures (bad checkpoint path, ...) here, with a timeout.
        get(self.trainer.__ray_ready__.remote(), ACTOR_START_TIMEOUT_S, "starting the trainer")
        get(
            [e.__ray_ready__.remote() for e in self.engines],
            ACTOR_START_TIMEOUT_S,
            "starting the rollout engines",
        )

    def generate(
        self,
        prompts: list[list[int]],
        params: Any,
        caps: Optional[list[int]] = None,
        groups: Optional[list[int]] = None,
        stop_after_groups: Optional[int] = None,
    ) -> list[Any]:
        """Split prompts over the engines in contiguous chunks; results in prompt order.
        caps: a response length cap per prompt; groups / stop_after_groups: see
        RolloutEngine.generate (chunks then hold whole groups, and each engine stops after its
        share of the groups, rounded up)."""
        n = len(self.engines)
        owner = _engine_of_each(len(prompts), n, groups)
        refs, index_of = [], []
        for e, engine in enumerate(self.engines):
            index = [i for i in range(len(prompts)) if owner[i] == e]
            if not index:
                continue
            stop = None
            if stop_after_groups is not None:
                assert groups is not None
                mine = {groups[i] for i in index}
                stop = -(-stop_after_groups * len(mine) // len(set(groups)))
            refs.append(
                engine.generate.remote(
                    [prompts[i] for i in index],
                    params,
                    self.record_routing,
                    None if caps is None else [caps[i] for i in index],
                    None if groups is None else [groups[i] for i in index],
                    stop,
                )
            )
            index_of.append(index)
        outputs: list[Any] = [None] * len(prompts)
        for index, part in zip(index_of, get(refs, what="rollout generation")):
            for i, out in zip(index, part):
                outputs[i] = out
        return outputs

    def train(self, rollout_id: int, batch: Any) -> dict[str, float]:
        return get(self.trainer.train.remote(rollout_id, batch), what="training step")

    def warmup_sft(self, examples: list[Any], batch_size: int, last: bool) -> dict[str, float]:
        return get(self.trainer.warmup_sft.remote(examples, batch_size, last), what="warm-start")

    def sync_weights(self) -> float:
        """Push the trainer's weights (incl. the draft head) to every engine; seconds taken.
        The first call maps the trainer's weights into each engine by placement (same process,
        same GPU through CUDA IPC, shared memory on one host; else the object store), so later
        calls copy device-side only (weight_sync.py)."""
        from miles_hydra.backends.local.weight_sync import WeightSync

        start = time.perf_counter()
        if self._weight_sync is None:
            self._weight_sync = WeightSync(self.trainer, self.engines, get)
        self._weight_sync.sync()
        return time.perf_counter() - start

    def save_trainer_part(self, tmp_dir: Path) -> None:
        get(self.trainer.save.remote(str(tmp_dir)), what="saving the trainer state")

    def load(self, ckpt: Path) -> None:
        get(self.trainer.load.remote(str(ckpt)), what="loading the trainer state")

    def engine_rng(self) -> list[Any]:
        """Sampling RNG states of the engines (so a resumed run samples as the original)."""
        refs = [e.__ray_call__.remote(_get_generator_state) for e in self.engines]
        return get(refs, what="reading engine RNG states")

    def set_engine_rng(self, states: list[Any] | None) -> None:
        if not states or len(states) != len(self.engines):
            return
        refs = [
            e.__ray_call__.remote(_set_generator_state, s) for e, s in zip(self.engines, states)
        ]
        get(refs, what="restoring engine RNG states")


def _engine_of_each(count: int, engines: int, groups: Optional[list[int]]) -> list[int]:
    """Engine index of each prompt: contiguous chunks, whole groups when ``groups`` is given."""
    if groups is None:
        size = -(-count // engines)
        return [i // size for i in range(count)]
    order = list(dict.fromkeys(groups))
    size = -(-len(order) // engines)
    chunk = {g: k // size for k, g in enumerate(order)}
    return [chunk[g] for g in groups]


def _get_generator_state(engine: Any) -> Any:
    return engine.generator.get_state()


def _set_generator_state(engine: Any, state: Any) -> None:
    engine.generator.set_state(state)
