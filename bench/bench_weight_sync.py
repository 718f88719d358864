"""Weight sync, trainer -> rollout engine: today's path vs the mapped one (issue 22).

    python bench/bench_weight_sync.py --device cuda                  # H200: all sizes
    python bench/bench_weight_sync.py --device cpu --sizes tiny,small --repeats 5

Needs torch, transformers, omegaconf (models.model_preset), no Ray or Hydra.

Per case (model size x placement x dtype), one trainer policy in the train dtype and one
``RolloutEngine`` (its own policy, bf16 on CUDA or the rollout dtype named) on one device:

- ``today``: ``TrainerActor.engine_state_dict`` (every tensor to the CPU) then
  ``RolloutEngine.update_weights`` (copy back, cast). ``inproc``: exactly what the in-process
  actors do (bench/inproc_ray.py's ``ray.put`` is the object itself). ``two_proc``: the state
  dict pickled (protocol 5) through a pipe to the engine's process, a stand-in for Ray's
  object store (no Ray on the GPU machine).
- ``mapped``: weight_sync.py. Once: ``TrainerActor.weight_sources`` (same process: the live
  tensors; another process: CUDA IPC handles, or on CPU a shared-memory block) and
  ``RolloutEngine.attach_weights``. Per sync: ``publish_weights`` (CUDA: the trainer's stream
  drained; ``two_proc``: one pipe round trip) and ``pull_weights`` (one fused copy/cast into
  the engine's tensors, waited for).

Before each timed sync the trainer's weights change in place (``add_``, as an optimizer step
does), outside the timing. After the timed syncs the engine's weights are checked equal to the
trainer's cast to the engine dtype (``exact``). Placements: ``inproc`` (trainer and engine in
this process, as bench/inproc_ray.py runs them) and ``two_proc`` (the trainer in a
``torch.multiprocessing`` spawn child, as with Ray actors). Times: median ms per sync.
Output: a markdown table (stdout, ``--md``) and one JSON line per case (``--jsonl``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SIZES = {  # model.* overrides of tiny_dense
    "tiny": {},
    "small": {"num_layers": 8, "hidden_size": 512, "ffn_hidden_size": 1536, "vocab_size": 32000},
    # Qwen3-0.6B: 28 x 1024, FFN 3072, 16 q / 8 kv heads of 128, 151,936-token tied embedding
    "qwen3_0.6b": {
        "num_layers": 28,
        "hidden_size": 1024,
        "ffn_hidden_size": 3072,
        "num_attention_heads": 16,
        "num_query_groups": 8,
        "kv_channels": 128,
        "vocab_size": 151936,
    },
    "qwen3_1.7b": {
        "num_layers": 28,
        "hidden_size": 2048,
        "ffn_hidden_size": 6144,
        "num_attention_heads": 16,
        "num_query_groups": 8,
        "kv_channels": 128,
        "vocab_size": 151936,
    },
}
DTYPES = {"bf16": (torch.bfloat16, torch.bfloat16), "fp32": (torch.float32, torch.bfloat16)}
DTYPE_LABEL = {"bf16": "bf16→bf16", "fp32": "fp32→bf16"}


def build(size: str, dtype: torch.dtype, device: str, seed: int = 0) -> Any:
    """A random-init PolicyModel of ``size`` (initialized on ``device``: fast on a GPU)."""
    from transformers import AutoModelForCausalLM

    from miles_hydra.backends.local.models import PolicyModel, hf_config, model_preset

    cfg = model_preset("tiny_dense", **SIZES[size])
    torch.manual_seed(seed)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(hf_config(cfg), attn_implementation="sdpa")
    return cfg, PolicyModel(lm).to(dtype=dtype).eval()


def make_engine(size: str, rollout_dtype: torch.dtype, device: str) -> Any:
    from miles_hydra.backends.local.rollout import RolloutEngine
    from miles_hydra.config.precision import DType, PrecisionConfig
    from miles_hydra.config.speculative import SpeculativeConfig

    cfg, policy = build(size, rollout_dtype, device, seed=1)
    name = DType.bfloat16 if rollout_dtype == torch.bfloat16 else DType.float32
    return RolloutEngine(
        cfg, SpeculativeConfig(), PrecisionConfig(rollout_dtype=name), device, policy=policy
    )


def _trainer(policy: Any) -> Any:
    """A stand-in with the trainer's weight methods bound (they use ``self.policy`` and
    ``self._weight_export`` only)."""
    from miles_hydra.backends.local.trainer import TrainerActor

    ns = SimpleNamespace(policy=policy, _weight_export=None)
    for name in ("engine_state_dict", "weight_sources", "publish_weights"):
        setattr(ns, name, getattr(TrainerActor, name).__get__(ns))
    return ns


@torch.no_grad()
def _step(policy: Any) -> None:
    """An in-place change of every weight, like an optimizer step; waited for."""
    torch._foreach_add_(list(policy.parameters()), 1e-3)
    if next(policy.parameters()).is_cuda:
        torch.cuda.synchronize()


def _wait(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _exact(engine: Any, state: dict[str, torch.Tensor]) -> bool:
    got = engine.policy.state_dict()
    return all(torch.equal(got[k].cpu(), v.to(got[k].dtype).cpu()) for k, v in state.items())


# --------------------------------------------------------------------------- the trainer child
def trainer_worker(conn: Any, device: str) -> None:
    """The trainer's process (``two_proc``): builds a policy and answers the parent's calls."""
    policy = trainer = None
    while True:
        cmd, *args = conn.recv()
        if cmd == "threads":
            torch.set_num_threads(args[0])
            conn.send(None)
        elif cmd == "build":
            policy = trainer = None
            _, policy = build(args[0], args[1], device)
            trainer = _trainer(policy)
            conn.send(sum(p.numel() for p in policy.parameters()))
        elif cmd == "sources":
            conn.send(trainer.weight_sources(args[0]))
        elif cmd == "step":
            _step(policy)
            conn.send(None)
        elif cmd == "publish":
            trainer.publish_weights()
            conn.send(None)
        elif cmd == "state":  # today's path: the CPU state dict, pickled as Ray would
            conn.send_bytes(pickle.dumps(trainer.engine_state_dict(), protocol=5))
        elif cmd == "exit":
            conn.send(None)
            return


class _Remote:
    """The parent's handle on the trainer child."""

    def __init__(self, device: str, start_method: str = "spawn") -> None:
        """start_method: "spawn" (CUDA needs it), or "fork" (CPU: no re-import, quick)."""
        import torch.multiprocessing as mp

        ctx = mp.get_context(start_method)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=trainer_worker, args=(child, device), daemon=True)
        self.proc.start()

    def call(self, *msg: Any) -> Any:
        self.conn.send(msg)
        return self.conn.recv()

    def state(self) -> dict[str, torch.Tensor]:
        self.conn.send(("state",))
        return pickle.loads(self.conn.recv_bytes())

    def close(self) -> None:
        self.call("exit")
        self.proc.join(timeout=60)


# --------------------------------------------------------------------------- one case
def run_case(
    size: str, dtype: str, placement: str, device: str, repeats: int, remote: Optional[_Remote]
) -> dict[str, Any]:
    train_dtype, rollout_dtype = DTYPES[dtype]
    if device == "cpu" and dtype == "fp32":
        rollout_dtype = torch.float32  # the CPU default: fp32 both sides
    engine = make_engine(size, rollout_dtype, device)
    if placement == "inproc":
        _, policy = build(size, train_dtype, device)
        trainer = _trainer(policy)
        numel = sum(p.numel() for p in policy.parameters())
        step = lambda: _step(policy)  # noqa: E731
        publish = trainer.publish_weights
        state = trainer.engine_state_dict
        sources = trainer.weight_sources
    else:
        assert remote is not None
        numel = remote.call("build", size, train_dtype)
        step = lambda: remote.call("step")  # noqa: E731
        publish = lambda: remote.call("publish")  # noqa: E731
        state = remote.state
        sources = lambda places: remote.call("sources", places)  # noqa: E731
    today, mapped = [], []
    slow = numel * 4 > 2**30  # > 1 GiB in fp32: fewer repeats of today's path
    for i in range(2 + (min(repeats, 3) if slow else repeats)):
        step()
        start = time.perf_counter()
        engine.update_weights(state())
        _wait(device)
        if i >= 2:
            today.append(time.perf_counter() - start)
    begin = time.perf_counter()
    (source,) = sources([engine.weight_place()])
    route = engine.attach_weights(source)
    attach_s = time.perf_counter() - begin
    for _ in range(2 + repeats):
        step()
        start = time.perf_counter()
        publish()
        engine.pull_weights()
        mapped.append(time.perf_counter() - start)
    mapped = mapped[2:]
    exact = _exact(engine, state())
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    return {
        "size": size,
        "params": numel,
        "dtype": DTYPE_LABEL[dtype]
        if device == "cuda"
        else str(train_dtype).split(".")[1] + "→" + str(rollout_dtype).split(".")[1],
        "placement": placement,
        "route": route,
        "today_ms": ms(today),
        "mapped_ms": ms(mapped),
        "speedup": statistics.median(today) / statistics.median(mapped),
        "attach_s": attach_s,
        "exact": exact,
    }


def render(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = [
        f"{env}\n\n",
        "| size | params | placement | train→rollout dtype | route | today ms | mapped ms | "
        "speedup | attach s | exact |\n",
        "|---|---:|---|---|---|---:|---:|---:|---:|---|\n",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['placement']} | {r['dtype']} "
            f"| {r['route']} | {r['today_ms']:.1f} | {r['mapped_ms']:.2f} | "
            f"{r['speedup']:.0f}x | {r['attach_s']:.2f} | {r['exact']} |\n"
        )
    return "".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--sizes", default="tiny,qwen3_0.6b,qwen3_1.7b")
    p.add_argument("--dtypes", default="bf16,fp32", help="bf16 (bf16→bf16), fp32 (fp32→bf16)")
    p.add_argument("--placements", default="inproc,two_proc")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--md", type=Path)
    p.add_argument("--jsonl", type=Path)
    args = p.parse_args(argv)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
    }
    placements = args.placements.split(",")
    remote = _Remote(args.device) if "two_proc" in placements else None
    rows = []
    try:
        for size in args.sizes.split(","):
            for placement in placements:
                for dtype in args.dtypes.split(","):
                    row = run_case(size, dtype, placement, args.device, args.repeats, remote)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.jsonl:
                        with args.jsonl.open("a") as f:
                            f.write(json.dumps(row) + "\n")
    finally:
        if remote is not None:
            remote.close()
    table = render(rows, env)
    print(table, flush=True)
    if args.md:
        args.md.write_text(table)
    return rows


if __name__ == "__main__":
    main()
