"""Partial rollout: the engine's early stop, the collector's pause/resume bookkeeping (nothing
lost, nothing trained twice, tokens and log-probs kept, off-policy tokens masked), staleness,
checkpointed paused samples, and a real run through Ray that is requeued mid-way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support.fake_engine import FakeEngine, FakeSource, parity_reward, target_length
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local.collector import RolloutCollector
from miles_hydra.backends.local.models import model_preset
from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
from miles_hydra.backends.local.train_batch import RolloutBatch, pack
from miles_hydra.config.precision import PrecisionConfig
from miles_hydra.config.rollout import RolloutConfig
from miles_hydra.config.speculative import SpeculativeConfig
from miles_hydra.tasks.source import Prompt

PARTIAL = dict(
    rollout_batch_size=4,
    n_samples_per_prompt=2,
    rollout_max_response_len=40,
    partial_rollout=True,
    over_sampling_batch_size=6,
)


def collector(seed: int = 0, **overrides) -> tuple[RolloutCollector, FakeEngine, FakeSource]:
    engine, source = FakeEngine(seed), FakeSource()
    r = RolloutConfig(**{**PARTIAL, **overrides})
    return RolloutCollector(r, source.next_batch, engine.generate, parity_reward), engine, source


# ---------------------------------------------------------------- the engine
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("batched", [False, True], ids=["per_slot", "batched"])
def test_engine_stops_after_enough_groups_and_resumes(batched: bool) -> None:
    cfg = model_preset("tiny_dense")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, cfg.vocab_size, (5,), generator=g).tolist() for _ in range(8)]
    params = SamplingParams(temperature=1.0, max_new_tokens=24, stop_token_ids=[3, 7, 11, 13])
    groups = [i // 2 for i in range(8)]
    engine = RolloutEngine(
        cfg, SpeculativeConfig(), PrecisionConfig(), seed=1, max_batch_size=8,
        batched_decode=batched,
    )  # fmt: skip
    outs = engine.generate(prompts, params, groups=groups, stop_after_groups=1)
    complete = {k for k in range(4) if not any(o.aborted for o in outs[2 * k : 2 * k + 2])}
    assert len(complete) >= 1 and any(o.aborted for o in outs)
    for o in outs:
        assert len(o.rollout_log_probs) == len(o.response_ids)
        assert not (o.aborted and o.finished)
        if o.aborted:
            assert len(o.response_ids) < 24  # neither a stop token nor the cap ended it
    # resuming an aborted sample: prompt + partial response in, the rest of the response out
    i = next(k for k, o in enumerate(outs) if o.aborted and o.response_ids)
    rest = engine.generate(
        [prompts[i] + outs[i].response_ids], params,
        max_new_tokens_per_prompt=[24 - len(outs[i].response_ids)],
    )[0]  # fmt: skip
    assert 1 <= len(rest.response_ids) <= 24 - len(outs[i].response_ids) and not rest.aborted


# ---------------------------------------------------------------- collector bookkeeping
def test_plain_mode_trains_every_drawn_group_in_order() -> None:
    c, engine, source = collector(partial_rollout=False, over_sampling_batch_size=None)
    out = c.collect(0)
    assert out.uids == [0, 1, 2, 3] and len(out.batch) == 8
    assert engine.calls[0]["stop"] is None  # nothing to stop early for
    assert out.batch.loss_masks is None and c.paused == []


def test_paused_samples_resume_first_and_nothing_is_lost_or_trained_twice() -> None:
    c, _, source = collector(mask_offpolicy_in_partial_rollout=True)
    trained: list[int] = []
    responses: dict[tuple[int, int], list[int]] = {}
    for version in range(12):
        partial_before = {
            (g.uid, k): list(s.response_ids)
            for g in c.paused for k, s in enumerate(g.samples)
        }  # fmt: skip
        out = c.collect(version)
        assert len(out.batch) == 8 and len(out.uids) == 4
        trained += out.uids
        for g_uid, samples in zip(out.uids, _chunks(out.batch.response_ids, 2)):
            for k, resp in enumerate(samples):
                responses[(g_uid, k)] = resp
                prefix = partial_before.get((g_uid, k))
                if prefix is not None:  # a resumed sample keeps its tokens and log-probs
                    assert resp[: len(prefix)] == prefix
                assert len(resp) == min(target_length(resp[0]), 40)
        masks = out.batch.loss_masks
        for i, lp in enumerate(out.batch.rollout_log_probs):
            assert lp == [-t / 1000 for t in out.batch.response_ids[i]]
            if masks is not None:
                assert len(masks[i]) == len(out.batch.response_ids[i])
        if masks is not None:  # masked exactly the tokens generated before this rollout
            g = 0
            for uid in out.uids:
                for k in range(2):
                    prefix = partial_before.get((uid, k), [])
                    assert masks[g][: len(prefix)] == [0] * len(prefix)
                    assert all(masks[g][len(prefix) :])
                    g += 1
    assert len(trained) == len(set(trained)), "a group was trained twice"
    drawn = set(range(source.count))
    assert drawn == set(trained) | set(c.paused_uids), "a drawn group was lost"
    assert not set(trained) & set(c.paused_uids)
    assert c.paused, "the heavy tail should leave paused samples behind"


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def test_resumed_first_in_the_next_rollout() -> None:
    c, engine, _ = collector()
    c.collect(0)
    paused = list(c.paused_uids)
    assert paused
    n_before = len(engine.calls)
    c.collect(1)
    heads = [p[0] - 1000 for p in engine.calls[n_before]["prompts"]]
    assert list(dict.fromkeys(heads))[: len(paused[:6])] == paused[:6]


def test_without_mask_the_correction_sees_every_token() -> None:
    c, _, _ = collector(mask_offpolicy_in_partial_rollout=False)
    for version in range(6):
        out = c.collect(version)
        assert out.batch.loss_masks is None
    assert out.metrics["rollout/partial/resumed_groups"] >= 0


def test_stale_paused_groups_restart_from_the_prompt() -> None:
    c, _, _ = collector(max_weight_staleness=1, mask_offpolicy_in_partial_rollout=True)
    c.collect(0)
    assert c.paused
    stale = list(c.paused_uids)
    out = c.collect(5)  # five weight versions later: every paused group is too old
    assert out.metrics["rollout/partial/restarted_groups"] >= 1
    assert out.metrics["rollout/partial/max_staleness"] == 0  # nothing old reaches the trainer
    assert set(stale) - set(out.uids) <= set(c.paused_uids)  # restarted, not lost


def test_paused_groups_survive_a_checkpoint_round_trip() -> None:
    """A collector restored from state_dict (plus the source position and the engine RNG, which
    the driver checkpoints separately) continues exactly as the original."""
    a, engine_a, source_a = collector(seed=3, mask_offpolicy_in_partial_rollout=True)
    for version in range(3):
        a.collect(version)
    assert a.paused
    b, engine_b, source_b = collector(seed=99, mask_offpolicy_in_partial_rollout=True)
    b.load_state_dict(a.state_dict(), Prompt)
    source_b.count = source_a.count
    engine_b.rng.setstate(engine_a.rng.getstate())
    for version in range(3, 6):
        x, y = a.collect(version), b.collect(version)
        assert x.uids == y.uids and x.batch == y.batch


def test_pack_applies_the_loss_masks() -> None:
    batch = RolloutBatch(
        prompt_ids=[[5, 6], [7]],
        response_ids=[[1, 2, 3], [4, 5]],
        rollout_log_probs=[[-0.1] * 3, [-0.2] * 2],
        rewards=[1.0, 0.0],
        group_size=2,
        loss_masks=[[0, 0, 1], [1, 1]],
    )
    packed = pack(batch, pad_id=0)
    assert packed.loss_mask.tolist() == [[0, 0, 1], [1, 1, 0]]
    assert packed.seq_loss_mask[0].tolist() == [0, 0, 0, 0, 1]


# ---------------------------------------------------------------- a real run, requeued
@pytest.fixture(scope="module")
def ray_instance():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_run_with_partial_rollout_is_requeued_without_losing_paused_samples(
    ray_instance, compose, tmp_path: Path, monkeypatch
) -> None:
    from miles_hydra.backends.local import checkpoint, loop
    from miles_hydra.backends.local.metrics import read_records
    from miles_hydra.config.store import materialize

    cfg = materialize(
        compose(
            [
                *TINY_BARE_RUN,
                "rollout.num_rollout=4",
                "rollout.rollout_max_response_len=12",
                "rollout.partial_rollout=true",
                "rollout.mask_offpolicy_in_partial_rollout=true",
                "rollout.over_sampling_batch_size=6",
                "rollout.dynamic_sampling=nonzero_std",
                "rollout.dynamic_sampling_max_rounds=2",
                "checkpoint.save_interval=2",
            ]
        )
    )
    calls = iter(range(100))
    monkeypatch.setattr(loop.preemption, "requested", lambda: next(calls) == 1)
    first = loop.train(cfg, tmp_path)
    assert first["preempted"] is True
    ckpt = checkpoint.find_latest(tmp_path / "checkpoints")
    state = checkpoint.load_driver_state(ckpt)["collector"]
    paused = [g["uid"] for g in state["paused"]]
    monkeypatch.setattr(loop.preemption, "requested", lambda: False)
    final = loop.train(cfg, tmp_path)
    assert final["preempted"] is False and final["step"] == 3
    records = [r for r in read_records(tmp_path / "metrics.jsonl") if "step" in r]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert (
            r["rollout/dynamic_filter/kept_groups"] + r["rollout/dynamic_filter/short_groups"] == 4
        )
        assert 0.0 <= r["rollout/dynamic_filter/drop_ratio"] <= 1.0
    resumed = sum(r["rollout/partial/resumed_groups"] for r in records[2:])
    assert resumed >= min(1, len(paused))  # what the checkpoint paused came back after requeue
