"""`mode=plan` and `mode=check`: what a validated run will do, where, and whether it fits.

``render_plan`` is a pure function of the RunConfig and, for a run on this machine, the device
it will use (``launch.hardware.detect_hardware``: the CPU or the detected GPU); it runs nothing
and submits nothing. ``plan_data`` is the same plan as a dict, for tests and tools.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from typing import Any

from omegaconf import OmegaConf

from miles_hydra.cluster import placement
from miles_hydra.config import RunConfig, layout
from miles_hydra.config.backend import BackendKind, Device
from miles_hydra.config.cluster import ClusterKind
from miles_hydra.config.rollout import DynamicSampling
from miles_hydra.errors import ConfigError
from miles_hydra.launch.hardware import Hardware
from miles_hydra.launch.memory import COUNTED, MemoryEstimate, estimate

SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def plan_data(run: RunConfig, hardware: Hardware | None = None) -> dict[str, Any]:
    """The plan as plain data: layout, batches and the per-GPU memory estimate; ``hardware``:
    the device of a run on this machine (None: the cluster's view, GPUs as configured)."""
    p, r = run.parallelism, run.rollout
    gpus_per_node = run.cluster.gpus_per_node or p.actor_num_gpus_per_node
    gbs = r.effective_global_batch_size
    dp = p.data_parallel_size
    on_cpu = hardware is not None and hardware.is_cpu
    mem = estimate(run, card_gb=hardware.mem_gb if hardware else None)
    # The local trainer's split (trainer._micro_batches): on the CPU one micro-batch per step.
    micro = gbs if on_cpu else None if p.use_dynamic_batch_size else p.micro_batch_size
    return {
        "device": None if hardware is None else hardware.device.value,
        "device_name": None if hardware is None else hardware.name,
        "backend": run.backend.kind.value,
        "cluster": run.cluster.kind.value,
        "nodes": _nodes(run, gpus_per_node),
        "training_gpus": p.actor_world_size,
        "critic_gpus": layout.critic_gpus(run),
        "rollout_gpus": layout.rollout_gpus(run),
        "total_gpus": layout.total_gpus(run),
        "colocate": p.colocate,
        "engines": layout.num_engines(run),
        "engine_tp": p.rollout_num_gpus_per_engine,
        "tp": p.tensor_model_parallel_size,
        "pp": p.pipeline_model_parallel_size,
        "pp_stage_layers": layout.pipeline_stage_layers(run),
        "cp": p.context_parallel_size,
        "ep": p.expert_model_parallel_size,
        "etp": p.etp,
        "dp": dp,
        "rollout_batch_size": r.rollout_batch_size,
        "n_samples_per_prompt": r.n_samples_per_prompt,
        "samples_per_rollout": r.samples_per_rollout,
        "global_batch_size": gbs,
        "num_steps_per_rollout": r.num_steps_per_rollout,
        "micro_batch_size": micro,
        "max_tokens_per_gpu": p.max_tokens_per_gpu,
        "grad_accumulation": None if micro is None else gbs // (micro * dp),
        "params_total": mem.dense_params + mem.expert_params,
        "params_experts": mem.expert_params,
        "memory": mem,
        # a GPU card's limits do not apply on the CPU
        "warnings": ([] if on_cpu else mem.warnings()) + advisories(run),
    }


def advisories(run: RunConfig) -> list[str]:
    """Valid but costly settings, with the fix (printed by the plan and logged before a run)."""
    out = []
    p = run.parallelism
    local_gpu = run.backend.kind is BackendKind.local and run.backend.device is Device.cuda
    if local_gpu and not p.use_dynamic_batch_size and p.micro_batch_size == 1:
        out.append(
            "backend.device=cuda trains one sample per forward (parallelism.micro_batch_size=1): "
            "launch-bound on a GPU (16 s per step for a 25M model on an H200); use "
            "parallelism=single_gpu (micro-batches by token budget) or raise "
            "parallelism.micro_batch_size"
        )
    return out


def _nodes(run: RunConfig, gpus_per_node: int) -> int:
    """Nodes the job takes: the Slurm allocation, or what the layout needs."""
    if run.cluster.kind is ClusterKind.slurm:
        return run.cluster.nodes
    if run.backend.kind is BackendKind.local:
        return 1
    return max(run.parallelism.actor_num_nodes, math.ceil(layout.total_gpus(run) / gpus_per_node))


def render_plan(run: RunConfig, with_command: bool = True, hardware: Hardware | None = None) -> str:
    """The resolved config as YAML, then the plan; ``with_command=False`` omits the miles argv;
    ``hardware`` as in ``plan_data``."""
    data = plan_data(run, hardware)
    on_cpu = hardware is not None and hardware.is_cpu
    parts = [
        "# ---- resolved config ----",
        OmegaConf.to_yaml(OmegaConf.structured(run)).rstrip(),
        "# ---- plan ----",
        *(_cpu_layout_lines(run, data, hardware) if on_cpu else _layout_lines(run, data, hardware)),
        *_node_lines(run),
        *_batch_lines(data, on_cpu),
        *_rollout_mode_lines(run),
        *_memory_lines(data["memory"], hardware),
    ]
    parts += [f"WARNING: {w}" for w in data["warnings"]]
    if with_command and run.backend.kind is BackendKind.miles:
        parts += _command_lines(run)
    return "\n".join(parts) + "\n"


def _cpu_layout_lines(run: RunConfig, d: dict[str, Any], hw: Hardware) -> list[str]:
    """A local run on this machine's CPU: no GPUs to count."""
    return [
        f"backend:   {d['backend']}",
        f"cluster:   {d['cluster']}, nodes={d['nodes']}",
        f"device:    CPU ({hw.note})",
        "training:  on the CPU, one process (TP=PP=CP=DP=1)",
        f"rollout:   {run.backend.num_engines} engine(s) on the CPU, taking turns with training",
    ]


def _layout_lines(run: RunConfig, d: dict[str, Any], hw: Hardware | None) -> list[str]:
    where = d["cluster"]
    if run.cluster.kind is ClusterKind.slurm:
        where += f" (partition={run.cluster.partition}, {run.cluster.gpus_per_node} GPUs/node)"
    lines = [
        f"backend:   {d['backend']}",
        f"cluster:   {where}, nodes={d['nodes']}",
        f"training:  {d['training_gpus']} GPUs = {run.parallelism.actor_num_nodes} node(s) x "
        f"{run.parallelism.actor_num_gpus_per_node}; TP={d['tp']} PP={d['pp']} CP={d['cp']} "
        f"-> DP={d['dp']}" + (f"; EP={d['ep']} ETP={d['etp']}" if run.model.is_moe else ""),
    ]
    if d["pp"] > 1:
        lines.append(f"pipeline:  decoder layers per stage {d['pp_stage_layers']}")
    if d["critic_gpus"]:
        lines.append(
            f"critic:    PPO value model on the {d['critic_gpus']} training GPUs (shared, offloaded)"
        )
    lines += [
        f"rollout:   {d['rollout_gpus']} GPUs = {d['engines']} engine(s) x TP {d['engine_tp']}",
        f"placement: {'colocated (train and rollout take turns, offloading)' if d['colocate'] else 'disaggregated'}"
        f"; {d['total_gpus']} GPUs in all",
    ]
    if hw is not None:
        mem = f", {hw.mem_gb:.1f} GiB" if hw.mem_gb else ""
        lines.append(f"device:    {hw.name}{mem} ({hw.note}; embedded engine, one device)")
    elif run.backend.kind is BackendKind.local:
        lines.append(f"device:    {run.backend.device.value} (embedded engine, one device)")
    return lines


def _node_lines(run: RunConfig) -> list[str]:
    """The local backend on several nodes: which node runs which actor (cluster.placement)."""
    if run.backend.kind is not BackendKind.local or run.cluster.nodes == 1:
        return []
    place = placement.place_actors(run.cluster.nodes, run.backend.num_engines)
    return [f"nodes:     {placement.describe(place)}"]


def _batch_lines(d: dict[str, Any], on_cpu: bool = False) -> list[str]:
    lines = [
        "batch:     rollout_batch_size x n_samples_per_prompt = global_batch_size x "
        "num_steps_per_rollout",
        f"           {d['rollout_batch_size']} x {d['n_samples_per_prompt']} = "
        f"{d['global_batch_size']} x {d['num_steps_per_rollout']} = {d['samples_per_rollout']} "
        "samples per rollout",
    ]
    if on_cpu:
        lines.append(
            f"           per step: {d['global_batch_size']} samples in one micro-batch (on the CPU "
            "a global batch is one micro-batch)"
        )
    elif d["micro_batch_size"] is None:
        lines.append(
            f"           dynamic micro-batches of <= {d['max_tokens_per_gpu']} tokens per GPU"
        )
    else:
        lines.append(
            f"           per step: {d['global_batch_size']} = micro_batch_size {d['micro_batch_size']}"
            f" x DP {d['dp']} x {d['grad_accumulation']} grad-accumulation micro-batches"
        )
    return lines


def _rollout_mode_lines(run: RunConfig) -> list[str]:
    """Partial rollout, over-sampling, dynamic sampling, one-step-off: one line when any is on."""
    r = run.rollout
    modes = []
    if r.effective_over_sampling_batch_size != r.rollout_batch_size:
        modes.append(
            f"over-sampling {r.effective_over_sampling_batch_size} prompts per round "
            f"(batch {r.rollout_batch_size})"
        )
    if r.dynamic_sampling is not DynamicSampling.none:
        what = r.dynamic_sampling_filter_path or "drop groups whose rewards all agree"
        local = run.backend.kind is BackendKind.local
        rounds = f", <= {r.dynamic_sampling_max_rounds} rounds" if local else ""
        modes.append(f"dynamic sampling {r.dynamic_sampling.value} ({what}{rounds})")
    if r.partial_rollout:
        masked = "; older tokens masked" if r.mask_offpolicy_in_partial_rollout else ""
        modes.append(f"partial rollout (unfinished samples pause and resume next rollout{masked})")
    if r.async_training:
        modes.append("one-step-off pipeline (rollout n+1 generated while rollout n trains)")
    if r.max_weight_staleness is not None:
        modes.append(f"max weight staleness {r.max_weight_staleness}")
    if not modes:
        return []
    return [f"sampling:  {modes[0]}", *(f"           {m}" for m in modes[1:])]


def _memory_lines(mem: MemoryEstimate, hw: Hardware | None = None) -> list[str]:
    params = mem.dense_params + mem.expert_params
    counts = [
        f"           params {_count(params)} ({_count(mem.expert_params)} in routed experts)",
        f"           train: weights {_gib(mem.weights_gb)} + grads {_gib(mem.grads_gb)} + optimizer "
        f"{_gib(mem.optimizer_gb)} = {_gib(mem.train_gb)}",
    ]
    if hw is not None and hw.is_cpu:
        return [
            "memory:    in host RAM (the CPU)",
            *counts,
            f"           rollout: weights {_gib(mem.rollout_weights_gb)}; KV "
            f"{mem.kv_bytes_per_token / 1024:.1f} KiB/token",
            f"           counted: {COUNTED}",
        ]
    if hw is not None and hw.mem_gb:
        card = f"{mem.card_gb:.0f} GiB ({hw.name}, detected)"
    else:
        card = f"{mem.card_gb:.0f} GiB" + (
            " (assumed NVIDIA H100 80GB; the cluster does not say)" if mem.card_assumed else ""
        )
    frac = f"{mem.mem_fraction}" + (
        " (assumed; rollout.sglang_mem_fraction_static unset)" if mem.mem_fraction_assumed else ""
    )
    return [
        f"memory:    per GPU, card {card}",
        *counts,
        f"           rollout: weights {_gib(mem.rollout_weights_gb)}; KV budget "
        f"{_gib(max(mem.kv_budget_gb, 0.0))} at mem_fraction_static {frac}",
        f"           KV {mem.kv_bytes_per_token / 1024:.1f} KiB/token -> ~{mem.kv_tokens:,} tokens per GPU",
        f"           counted: {COUNTED}",
    ]


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _gib(gb: float) -> str:
    return f"{gb:.2f} GiB" if gb >= 0.1 else f"{gb * 1024:.2f} MiB"


def _command_lines(run: RunConfig) -> list[str]:
    try:
        from miles_hydra.backends.miles.compile import compile_miles
    except ImportError as exc:
        return [f"command:   (not available: {exc})"]
    try:
        cmd = compile_miles(run)
    except ConfigError as exc:
        return [f"ERROR: the miles compiler refuses this config: {exc}"]
    env = [
        f"  {k}=<redacted>" if SECRET.search(k) else f"  {k}={shlex.quote(str(v))}"
        for k, v in sorted(cmd.env.items())
    ]
    from miles_hydra.backends.miles.convert import plan_lines

    prepare = [f"  {line}" for line in plan_lines(run)]  # HF -> torch_dist conversion first
    return [
        *(["prepare (before the miles job):", *prepare] if prepare else []),
        "command:",
        *env,
        "  " + shlex.join([str(cmd.entry), *map(str, cmd.argv)]),
    ]


def run_check(run: RunConfig) -> int:
    """``mode=check``: the miles check (miles_hydra.backends.miles.check.oracle.check): flag table, miles' own
    parser, and every value miles derives against what our config plans (compile.plan_values,
    which counts GPUs with the same miles_hydra.config.layout as plan_data). 0 = accepted and
    consistent, 1 = refused or any derived value differs, 2 = cannot check here (no checker)."""
    if run.backend.kind is BackendKind.local:
        print("backend=local: nothing to check beyond validation (the config is valid)")
        return 0
    try:
        from miles_hydra.backends.miles.check.compare import check
    except ImportError as exc:
        print(
            f"mode=check needs miles_hydra.backends.miles.check.oracle, which is not available: {exc}",
            file=sys.stderr,
        )
        return 2
    return check(run)
