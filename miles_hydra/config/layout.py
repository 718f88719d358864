"""GPU accounting of a run: the one place that counts training, critic and rollout GPUs.

``ParallelismConfig`` knows the layout of one model; what the job's placement group holds also
depends on the algorithm and the backend. miles v0.1.0 (``miles_validate_args`` and
``miles/ray/placement_group.py``) runs PPO as "shared Actor/Critic PPO": the critic is laid out
like the actor on the actor's own placement group (offloaded in turn), so it adds no GPUs:

- colocated: ``rollout_num_gpus = actor GPUs``; the rollout engines share the trained GPUs;
- disaggregated: actor (+ critic on the same GPUs) + rollout bundles.

The local backend trains actor and critic on its one device. plan.py (``plan_data``),
validate.py (``_check_resources``) and the miles compiler (``plan_values``) all count with these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miles_hydra.config.algorithm import AdvantageEstimator
from miles_hydra.config.backend import BackendKind

if TYPE_CHECKING:
    from miles_hydra.config.run import RunConfig


def pipeline_stage_layers(cfg: RunConfig) -> list[int]:
    """Decoder layers on each pipeline stage: an even split, or the first / last stage as
    set and the middle stages sharing the rest evenly (Megatron's rule; validate.py checks it)."""
    p, layers = cfg.parallelism, cfg.model.num_layers
    pp = p.pipeline_model_parallel_size
    first, last = p.decoder_first_pipeline_num_layers, p.decoder_last_pipeline_num_layers
    middle = pp - (first is not None) - (last is not None)
    rest = layers - (first or 0) - (last or 0)
    each = rest // middle if middle > 0 else 0
    stages = [each] * middle
    if first is not None:
        stages.insert(0, first)
    if last is not None:
        stages.append(last)
    return stages


def critic_gpus(cfg: RunConfig) -> int:
    """GPUs miles' PPO critic trains on: the actor's own (shared, not added); 0 without a critic
    or on local."""
    ppo = cfg.algorithm.advantage_estimator is AdvantageEstimator.ppo
    if cfg.backend.kind is not BackendKind.miles or not ppo:
        return 0
    return cfg.parallelism.actor_world_size


def rollout_gpus(cfg: RunConfig) -> int:
    """miles' rollout_num_gpus: colocated engines span the trained GPUs."""
    p = cfg.parallelism
    return p.actor_world_size if p.colocate else p.total_rollout_gpus


def num_engines(cfg: RunConfig) -> int:
    """SGLang engines miles starts: rollout GPUs / GPUs per engine."""
    return rollout_gpus(cfg) // cfg.parallelism.rollout_num_gpus_per_engine


def total_gpus(cfg: RunConfig) -> int:
    """GPUs the job's placement group holds (what the allocation must provide)."""
    p = cfg.parallelism
    return p.actor_world_size if p.colocate else p.actor_world_size + p.total_rollout_gpus


def gpu_breakdown(cfg: RunConfig) -> str:
    """``8 training (actor + critic) + 16 rollout`` (colocated rollout shares the trained GPUs)."""
    p = cfg.parallelism
    parts = [f"{p.actor_world_size} training" + (" (actor + critic)" if critic_gpus(cfg) else "")]
    if not p.colocate:
        parts.append(f"{p.total_rollout_gpus} rollout")
    return " + ".join(parts)
