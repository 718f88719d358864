"""TrainerActor in-process (no Ray): miles' step-0 invariants, mismatch metrics, NaN guard,
checkpoint round trip, frozen/online draft, PPO critic and R3 replay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from support.tiny import TINY_MODEL

from miles_hydra.backends.local import checkpoint
from miles_hydra.backends.local.evaluate import decode_response
from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
from miles_hydra.backends.local.train_batch import RolloutBatch
from miles_hydra.backends.local.trainer import TrainerActor
from miles_hydra.config import RunConfig
from miles_hydra.config.store import materialize
from miles_hydra.errors import TrainingError
from miles_hydra.tasks import build_prompt_source, build_tokenizer
from miles_hydra.tasks.reward import build_reward_fn

TINY = [
    *TINY_MODEL,
    "rollout.rollout_batch_size=4",
    "rollout.n_samples_per_prompt=4",
    "rollout.rollout_max_response_len=8",
]


@pytest.fixture
def make_cfg(compose):
    def make(*overrides: str) -> RunConfig:
        return materialize(compose([*TINY, *overrides]))

    return make


def rollout(cfg: RunConfig, trainer: TrainerActor, seed: int = 7) -> RolloutBatch:
    """One real rollout of the engine with the trainer's current weights."""
    tokenizer = build_tokenizer(cfg.model)
    r = cfg.rollout
    source = build_prompt_source(cfg.data, tokenizer, cfg.seed, r.rollout_max_prompt_len)
    engine = RolloutEngine(cfg.model, cfg.speculative, cfg.precision, "cpu", seed)
    engine.update_weights(trainer.engine_state_dict())
    prompts = [
        p for p in source.next_batch(r.rollout_batch_size) for _ in range(r.n_samples_per_prompt)
    ]
    params = SamplingParams(
        r.rollout_temperature, 1.0, -1, r.rollout_max_response_len, [tokenizer.eos_id]
    )
    moe = cfg.model.num_experts is not None
    outs = engine.generate([p.ids for p in prompts], params, record_routing=moe)
    reward_fn = build_reward_fn(cfg.reward, cfg.data)
    # random rewards give non-zero advantages; the real reward of a random model is all zeros
    gen = torch.Generator().manual_seed(seed)
    rewards = [float(torch.rand((), generator=gen) < 0.5) for _ in outs]
    assert all(
        reward_fn(p, decode_response(tokenizer, o.response_ids)) in (0.0, 1.0)
        for p, o in zip(prompts, outs)
    )
    return RolloutBatch(
        prompt_ids=[p.ids for p in prompts],
        response_ids=[o.response_ids for o in outs],
        rollout_log_probs=[o.rollout_log_probs for o in outs],
        rewards=rewards,
        group_size=r.n_samples_per_prompt,
        routed_experts=[o.routed_experts for o in outs] if moe else None,
    )


def test_step0_invariants_without_mismatch(make_cfg) -> None:
    cfg = make_cfg("algorithm.use_kl_loss=true", "algorithm.kl_loss_coef=0.01")
    trainer = TrainerActor(cfg, pad_id=0)
    m = trainer.train(0, rollout(cfg, trainer))
    assert abs(m["train/ppo_kl"]) < 1e-8
    assert m["train/kl_loss"] == 0.0
    assert m["rollout/ref_logprob_abs_diff_max"] < 1e-8
    assert m["train/train_rollout_logprob_abs_diff"] < 1e-5
    assert m["train/pg_clipfrac"] == 0.0
    assert m["train/grad_norm"] > 0  # it did learn something
    assert math.isfinite(m["train/loss"])


def test_bf16_rollout_gives_mismatch_and_tis_metrics(make_cfg) -> None:
    cfg = make_cfg("precision=bf16_rollout", "algorithm=grpo_tis")
    assert cfg.precision.rollout_dtype.value == "bfloat16"
    trainer = TrainerActor(cfg, pad_id=0)
    m = trainer.train(0, rollout(cfg, trainer))
    assert m["train/train_rollout_logprob_abs_diff"] > 1e-4
    assert m["train/train_rollout_kl"] > 0
    for key in ("train/tis", "train/tis_clipfrac", "train/tis_abs", "train/ois"):
        assert key in m, key
    assert m["train/tis_abs"] > 0


def test_several_steps_per_rollout_and_sgd_schedule(make_cfg) -> None:
    cfg = make_cfg(
        "rollout.num_steps_per_rollout=2",
        "algorithm.optimizer=sgd",
        "algorithm.lr_decay_style=linear",
        "rollout.num_rollout=2",
    )
    trainer = TrainerActor(cfg, pad_id=0)
    m = trainer.train(0, rollout(cfg, trainer))
    assert trainer.global_step == 2
    assert m["train/ppo_kl"] != 0.0  # the second step sees moved weights
    assert trainer.optimizer.param_groups[0]["lr"] < cfg.algorithm.lr


def poison_weights(trainer: TrainerActor) -> None:
    """Set one policy weight to NaN, as a diverged step would."""
    with torch.no_grad():
        next(trainer.policy.lm.parameters()).fill_(math.nan)


def test_nan_loss_raises_and_checkpoint_stays_good(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    trainer = TrainerActor(cfg, pad_id=0)
    batch = rollout(cfg, trainer)
    trainer.train(0, batch)
    good = checkpoint.save(tmp_path, 1, {}, lambda d: trainer.save(str(d)), keep_last=2)
    poison_weights(trainer)
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.train(1, batch)
    assert checkpoint.find_latest(tmp_path) == good
    fresh = TrainerActor(cfg, pad_id=0)
    fresh.load(str(good))
    assert all(torch.isfinite(p).all() for p in fresh.policy.parameters())


def test_save_load_round_trip_continues_identically(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    a = TrainerActor(cfg, pad_id=0)
    batch = rollout(cfg, a)
    a.train(0, batch)
    a.save(str(tmp_path))
    b = TrainerActor(cfg, pad_id=0)
    assert b.load(str(tmp_path)) == 1
    ma, mb = a.train(1, batch), b.train(1, batch)
    for key in ("train/loss", "train/grad_norm", "rollout/log_probs"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-5, abs=1e-7), key
    for (name, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name


def _draft_params(trainer: TrainerActor) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.draft.parameters()]


@pytest.mark.parametrize("mode", ["mtp", "mtp_online"])
def test_draft_frozen_or_trained_online(make_cfg, mode: str) -> None:
    cfg = make_cfg(f"speculative={mode}")
    trainer = TrainerActor(cfg, pad_id=0)
    before = _draft_params(trainer)
    m = trainer.train(0, rollout(cfg, trainer))
    moved = any(not torch.equal(x, y) for x, y in zip(before, _draft_params(trainer)))
    assert moved is (mode == "mtp_online")
    assert ("train/mtp_loss" in m) is (mode == "mtp_online")
    assert any(k.startswith("draft.") for k in trainer.engine_state_dict())


def test_warmup_sft_lowers_loss_and_trains_draft(make_cfg) -> None:
    cfg = make_cfg("speculative=mtp")
    trainer = TrainerActor(cfg, pad_id=0)
    tokenizer = build_tokenizer(cfg.model)
    source = build_prompt_source(cfg.data, tokenizer, cfg.seed, 64)
    before = _draft_params(trainer)
    m = trainer.warmup_sft(source.sft_examples(8 * 16), batch_size=16)
    assert m["warmup/sft_loss_last"] < m["warmup/sft_loss_first"]
    assert any(not torch.equal(x, y) for x, y in zip(before, _draft_params(trainer)))
    assert not any(p.requires_grad for p in trainer.policy.draft.parameters())  # frozen again


def test_ppo_critic_trains(make_cfg) -> None:
    cfg = make_cfg("algorithm=ppo")
    trainer = TrainerActor(cfg, pad_id=0)
    m = trainer.train(0, rollout(cfg, trainer))
    assert "train/value_loss" in m and "rollout/values" in m
    assert m["train/value_loss"] > 0


def test_r3_replay_zeroes_routing_mismatch(make_cfg) -> None:
    """After one large update the trainer's router disagrees with the rollout's record; R3
    replays the record, so the mismatch is exactly 0."""
    common = ["model=tiny_moe", *TINY, "algorithm.lr=3e-2"]
    mismatch = {}
    for r3 in (False, True):
        cfg = make_cfg(*common, f"algorithm.use_rollout_routing_replay={str(r3).lower()}")
        trainer = TrainerActor(cfg, pad_id=0)
        batch = rollout(cfg, trainer)
        first = trainer.train(0, batch)
        assert first["train/routing_mismatch"] == 0.0  # same weights, fp32: no mismatch
        mismatch[r3] = trainer.train(1, batch)["train/routing_mismatch"]  # the policy moved
    assert mismatch[False] > 0.0
    assert mismatch[True] == 0.0
