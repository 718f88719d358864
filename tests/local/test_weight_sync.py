"""Weight sync by placement (weight_sync.py): routes, exactness after training steps (same
process and Ray actors on CPU), the reallocation guard; on CUDA, graph replay after a pull and
the CUDA IPC route across processes (skipped without a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from support.tiny import TINY_RUN

from miles_hydra.backends.local import weight_sync
from miles_hydra.backends.local.models import (
    build_policy,
    load_policy_weights,
    model_preset,
    save_checkpoint_dir,
)
from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
from miles_hydra.backends.local.rollout.sampling import token_log_probs
from miles_hydra.backends.local.train_batch import RolloutBatch
from miles_hydra.backends.local.trainer import TrainerActor
from miles_hydra.backends.local.weight_sync import Place, Route, choose_route
from miles_hydra.config import RunConfig
from miles_hydra.config.precision import DType, PrecisionConfig
from miles_hydra.config.speculative import SpeculativeConfig
from miles_hydra.config.store import materialize

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=6)
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]


@pytest.fixture
def make_cfg(compose):
    def make(*overrides: str) -> RunConfig:
        return materialize(compose([*TINY_RUN, *overrides]))

    return make


def test_routes_follow_placement() -> None:
    cpu, gpu = Place("h", 1, None), Place("h", 1, "GPU-0")
    assert choose_route(cpu, cpu) is Route.same_process
    assert choose_route(gpu, gpu) is Route.same_process
    assert choose_route(cpu, Place("h", 2, None)) is Route.shared_memory
    assert choose_route(gpu, Place("h", 2, "GPU-0")) is Route.cuda_ipc
    assert choose_route(gpu, Place("h", 2, "GPU-1")) is Route.object_store  # no NCCL route yet
    assert choose_route(cpu, Place("other", 2, None)) is Route.object_store
    assert choose_route(gpu, Place("h", 2, None)) is Route.object_store


def _fresh_log_probs(policy, prompts, outs, params) -> torch.Tensor:
    """Log-probs of the sampled tokens under a full, no-cache forward of ``policy``."""
    got = []
    with torch.no_grad():
        for prompt, out in zip(prompts, outs):
            ids = torch.tensor([prompt + out.response_ids], device=policy.lm.device)
            logits = policy.lm(ids).logits[0, len(prompt) - 1 : -1].float()
            got.append(token_log_probs(logits, ids[0, len(prompt) :], params).cpu())
    return torch.cat(got)


def _rollout_batch(prompts, outs) -> RolloutBatch:
    rewards = [float(i % 2) for i in range(len(outs))]  # non-zero advantages: weights move
    return RolloutBatch(
        prompt_ids=prompts,
        response_ids=[o.response_ids for o in outs],
        rollout_log_probs=[o.rollout_log_probs for o in outs],
        rewards=rewards,
        group_size=2,
    )


def _fresh_copy(trainer_policy, dtype) -> torch.nn.Module:
    return copy.deepcopy(trainer_policy).to(dtype=dtype)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("precision", ["fp32", "bf16_rollout"])
def test_same_process_pull_is_exact_after_each_train_step(make_cfg, precision: str) -> None:
    """Three rollout -> train -> sync rounds: the engine's weights (draft head included) equal
    the trainer's cast, and its rollout log-probs equal a fresh forward of those weights."""
    cfg = make_cfg(f"precision={precision}", "speculative=mtp_online", "algorithm.lr=1e-2")
    trainer = TrainerActor(cfg, pad_id=0)
    engine = RolloutEngine(cfg.model, cfg.speculative, cfg.precision, "cpu", seed=3)
    (source,) = trainer.weight_sources([engine.weight_place()])
    assert engine.attach_weights(source) == "same_process"
    prompts = [p for p in PROMPTS for _ in range(2)]
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    for step in range(3):
        assert engine.pull_weights() == len(engine._mapped.dst)
        state = trainer.policy.state_dict()
        for key, value in engine.policy.state_dict().items():
            assert torch.equal(value, state[key].to(engine.dtype)), (step, key)
        outs = engine.generate(prompts, PARAMS)
        rollout = torch.tensor([lp for o in outs for lp in o.rollout_log_probs])
        fresh = _fresh_log_probs(_fresh_copy(trainer.policy, engine.dtype), prompts, outs, PARAMS)
        atol = 1e-4 if engine.dtype == torch.float32 else 0.1
        torch.testing.assert_close(rollout, fresh, atol=atol, rtol=0)
        trainer.train(step, _rollout_batch(prompts, outs))
    moved = trainer.policy.state_dict()
    assert any(not torch.equal(moved[k], before[k]) for k in before if k.startswith("lm."))
    assert any(not torch.equal(moved[k], before[k]) for k in before if k.startswith("draft."))


def test_shared_memory_export_keeps_tensors_separate_and_refuses_reallocation(tmp_path) -> None:
    """The trainer's tensors move into shared memory once, each with its own storage (so
    safetensors/save_pretrained still write them); a reassigned tensor stops the sync."""
    policy = build_policy(model_preset("tiny_dense"))
    original = {k: v.clone() for k, v in policy.state_dict().items()}
    export = weight_sync.WeightExport(policy)
    other_process = Place(export.place.host, export.place.pid + 1, None)
    source = export.source_for(other_process)
    assert source is not None and source.route is Route.shared_memory
    assert all(torch.equal(v, original[k]) for k, v in policy.state_dict().items())
    ptrs = {t.untyped_storage().data_ptr() for t in export.tensors}
    assert len(ptrs) == len(export.tensors)
    saved = load_policy_weights(save_checkpoint_dir(policy, tmp_path / "model"))
    assert all(torch.equal(saved[k], original[k]) for k in original)
    _, mapped = source.shm.map(export.place.pid)  # a second mapping sees the trainer's writes
    with torch.no_grad():
        export.tensors[0].add_(1.0)
    assert torch.equal(mapped[0], export.tensors[0])
    export.publish()
    first = next(policy.parameters())
    first.data = first.data.clone()
    with pytest.raises(RuntimeError, match="reallocated"):
        export.publish()


# --------------------------------------------------------------------------------- CUDA
BF16 = PrecisionConfig(rollout_dtype=DType.bfloat16)


@CUDA
def test_cuda_graph_replay_sees_pulled_weights() -> None:
    """fp32 trainer -> bf16 engine on one GPU: after a pull the captured graphs (not
    recaptured) decode with the new weights: log-probs == a fresh forward of them."""
    cfg = model_preset("tiny_dense")
    trainer = build_policy(cfg, None, torch.float32, "cuda", seed=0)
    engine = RolloutEngine(cfg, SpeculativeConfig(), BF16, "cuda", seed=0, max_batch_size=8)
    export = weight_sync.WeightExport(trainer)
    engine.attach_weights(export.source_for(engine.weight_place()))
    engine.pull_weights()
    first = engine.generate(PROMPTS, PARAMS)
    step, graphs = engine._decode_step, engine._decode_step.num_graphs
    assert graphs >= 1
    with torch.no_grad():
        for p in trainer.parameters():
            p.mul_(0.5)  # in place, as the optimizer: the exported addresses stay valid
    export.publish()
    engine.pull_weights()
    after = engine.generate(PROMPTS, PARAMS)
    assert engine._decode_step is step and step.num_graphs == graphs  # replayed, not recaptured
    fresh = _fresh_log_probs(_fresh_copy(trainer, torch.bfloat16), PROMPTS, after, PARAMS)
    rollout = torch.tensor([lp for o in after for lp in o.rollout_log_probs])
    torch.testing.assert_close(rollout, fresh, atol=0.05, rtol=0)
    stale = _fresh_log_probs(_fresh_copy(trainer, torch.bfloat16), PROMPTS, first, PARAMS)
    old = torch.tensor([lp for o in first for lp in o.rollout_log_probs])
    assert (old - stale).abs().max() > 0.05  # the first rollout's weights were really different


@pytest.mark.parametrize(
    "device, route, dtype",
    [
        ("cpu", "shared_memory", torch.float32),
        pytest.param("cuda", "cuda_ipc", torch.bfloat16, marks=CUDA),
    ],
)
@pytest.mark.usefixtures("one_thread")
def test_trainer_in_another_process(bench_import, device: str, route: str, dtype) -> None:
    """The trainer in a spawned process (as a Ray actor is): the engine maps its tensors
    (CPU: shared memory; same GPU: CUDA IPC); after each in-place update a pull gives exactly
    the trainer's weights (cast), and the engine (on CUDA: graph replay) decodes with them."""
    bench = bench_import("bench_weight_sync")
    remote = bench._Remote(device, "spawn" if device == "cuda" else "fork")
    try:
        remote.call("threads", 1)
        remote.call("build", "tiny", torch.float32)
        engine = bench.make_engine("tiny", dtype, device)
        (source,) = remote.call("sources", [engine.weight_place()])
        assert engine.attach_weights(source) == route
        for _ in range(2):
            remote.call("step")
            remote.call("publish")
            engine.pull_weights()
            state = remote.state()
            got = engine.policy.state_dict()
            assert all(torch.equal(got[k].cpu(), v.to(dtype)) for k, v in state.items())
            outs = engine.generate(PROMPTS, PARAMS)
            fresh = build_policy(model_preset("tiny_dense"), None, torch.float32, device)
            fresh.load_state_dict(state)
            want = _fresh_log_probs(fresh.to(dtype), PROMPTS, outs, PARAMS)
            rollout = torch.tensor([lp for o in outs for lp in o.rollout_log_probs])
            atol = 1e-4 if dtype == torch.float32 else 0.05
            torch.testing.assert_close(rollout, want, atol=atol, rtol=0)
    finally:
        remote.close()
