"""Speculative decoding in the RolloutEngine: lossless sampling (chi-square against the exact
distribution), KV rollback exactness, counters, greedy equivalence; and R3 recording."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from miles_hydra.backends.local import r3
from miles_hydra.backends.local.models import PolicyModel, build_policy, model_preset
from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
from miles_hydra.backends.local.rollout.sampling import sampling_probs, token_log_probs
from miles_hydra.config.precision import PrecisionConfig
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig

FP32 = PrecisionConfig()
MTP = SpeculativeConfig(mode=SpecMode.mtp, num_steps=2, mtp_num_layers=1)
NO_SPEC = SpeculativeConfig()
VOCAB = 6
NEW_TOKENS = 3  # t1 from the prefill, t2..t3 through one verification step (drafts + bonus)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


class _BigramDraft(torch.nn.Module):
    """A draft that guesses x_{t+2} from x_{t+1} alone through the target's own embedding and LM
    head: right often enough on a peaky model to exercise both accepts and rejections."""

    def draft_logits(self, lm, hidden: torch.Tensor, next_ids: torch.Tensor):
        d = lm.model.norm(lm.model.embed_tokens(next_ids))
        return lm.lm_head(d), d


def _peaky_policy(seed: int) -> tuple[object, PolicyModel]:
    """A tiny-vocab model (with draft) whose next-token distributions are far from uniform."""
    cfg = model_preset(
        "tiny_dense",
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_hidden_size=64,
        num_attention_heads=2,
        num_query_groups=1,
        kv_channels=16,
    )
    policy = build_policy(cfg, MTP, torch.float32, "cpu", seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 if "embed" in name else 0.3))
    policy.draft = _BigramDraft()
    return cfg, policy


def _exact_distribution(
    policy: PolicyModel, prompt: list[int], params: SamplingParams
) -> np.ndarray:
    """P(t1, .., t_n) of plain sampling, by enumerating every prefix: [V] * NEW_TOKENS."""
    joint = np.ones([1])
    for depth in range(NEW_TOKENS):
        prefixes = list(itertools.product(range(VOCAB), repeat=depth))
        ids = torch.tensor([prompt + list(p) for p in prefixes])
        with torch.no_grad():
            probs = sampling_probs(policy.lm(ids).logits[:, -1], params).double().numpy()
        joint = (joint.reshape(-1, 1) * probs).reshape([VOCAB] * (depth + 1))
    return joint


def _chi_square_ok(counts: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(statistic, 99.9% critical value) over cells with expected count >= 5 (rest pooled)."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    z = 3.09  # Wilson-Hilferty approximation of the chi-square 0.999 quantile
    critical = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    return stat, critical


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, max_new_tokens=NEW_TOKENS),
        SamplingParams(temperature=0.6, top_k=4, max_new_tokens=NEW_TOKENS),
    ],
    ids=["t1", "t0.6-topk4"],
)
@pytest.mark.parametrize("batched", [False, True], ids=["slot-loop", "batched"])
def test_speculative_sampling_matches_plain_distribution(
    params: SamplingParams, batched: bool
) -> None:
    """Per-slot loop and the batched decode step (the GPU path, run eagerly here)."""
    cfg, policy = _peaky_policy(seed=0)
    prompt = [1, 4, 2]
    exact = _exact_distribution(policy, prompt, params)
    n = 4000
    engine = RolloutEngine(cfg, MTP, FP32, seed=11, max_batch_size=1000, policy=policy,
                           batched_decode=batched)  # fmt: skip
    outs = engine.generate([prompt] * n, params)
    samples = np.array([o.response_ids for o in outs])
    draft = sum(o.spec_draft_tokens for o in outs)
    accepted = sum(o.spec_accepted_tokens for o in outs)
    assert draft == 2 * sum(o.spec_verify_steps for o in outs)
    hist = np.sum([o.spec_accept_hist for o in outs], axis=0)
    assert hist.sum() == draft / 2 and (hist * np.arange(3)).sum() == accepted
    assert 0.05 < accepted / draft < 0.97, accepted / draft  # both accept and reject paths ran
    counts = np.zeros([VOCAB] * NEW_TOKENS)
    np.add.at(counts, tuple(samples.T), 1)
    for axes, label in [
        ((), "joint t1..t3"),
        ((0,), "joint t2,t3"),
        ((0, 1), "t3"),
        ((0, 2), "t2"),
    ]:
        stat, critical = _chi_square_ok(counts.sum(axis=axes), exact.sum(axis=axes))
        assert stat < critical, f"{label}: chi2={stat:.1f} >= {critical:.1f}"
    # the same test run on plain sampling passes too (sanity of the harness)
    plain = RolloutEngine(cfg, NO_SPEC, FP32, seed=11, max_batch_size=1000, policy=policy)
    samples = np.array([o.response_ids for o in plain.generate([prompt] * n, params)])
    counts = np.zeros([VOCAB] * NEW_TOKENS)
    np.add.at(counts, tuple(samples.T), 1)
    stat, critical = _chi_square_ok(counts, exact)
    assert stat < critical


def test_chi_square_harness_detects_a_wrong_distribution() -> None:
    _, policy = _peaky_policy(seed=0)
    right = _exact_distribution(policy, [1, 4, 2], SamplingParams(temperature=1.0))
    wrong = _exact_distribution(policy, [1, 4, 2], SamplingParams(temperature=0.8))
    counts = np.random.default_rng(0).multinomial(4000, wrong.ravel()).reshape(wrong.shape)
    stat, critical = _chi_square_ok(counts, right)
    assert stat > critical


@pytest.mark.parametrize("temperature", [1.0, 0.0])
@pytest.mark.parametrize("batched", [False, True], ids=["slot-loop", "batched"])
def test_speculative_log_probs_equal_full_recompute(temperature: float, batched: bool) -> None:
    """KV rollback: after rejections the cache must hold exactly the accepted prefix."""
    cfg = model_preset("tiny_dense")
    spec = SpeculativeConfig(mode=SpecMode.mtp, num_steps=3, mtp_num_layers=1)
    engine = RolloutEngine(cfg, spec, FP32, seed=3, max_batch_size=4, batched_decode=batched)
    g = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(0, cfg.vocab_size, (int(k),), generator=g).tolist()
        for k in torch.randint(1, 8, (10,), generator=g)
    ]
    params = SamplingParams(temperature=temperature, max_new_tokens=20, stop_token_ids=[5])
    caps = [3 + (7 * i) % 18 for i in range(len(prompts))]
    outs = engine.generate(prompts, params, max_new_tokens_per_prompt=caps)
    for prompt, out, cap in zip(prompts, outs, caps):
        with torch.no_grad():
            logits = engine.policy.lm(torch.tensor([prompt + out.response_ids])).logits[0]
        ref = token_log_probs(logits[len(prompt) - 1 : -1], torch.tensor(out.response_ids), params)
        torch.testing.assert_close(torch.tensor(out.rollout_log_probs), ref, atol=2e-5, rtol=0)
        assert out.spec_accepted_tokens <= out.spec_draft_tokens == 3 * out.spec_verify_steps
        assert out.spec_verify_steps >= (len(out.response_ids) - 1) / 4
        assert len(out.response_ids) == cap or out.finished
    assert sum(o.spec_verify_steps for o in outs) > 0
    if temperature == 0.0:  # greedy speculation returns exactly the greedy plain output
        plain = RolloutEngine(cfg, NO_SPEC, FP32, seed=3, policy=engine.policy).generate(
            prompts, params, max_new_tokens_per_prompt=caps
        )
        assert [o.response_ids for o in plain] == [o.response_ids for o in outs]


@pytest.mark.parametrize("spec", [NO_SPEC, MTP], ids=["plain", "mtp"])
def test_r3_routing_record_matches_full_forward(spec: SpeculativeConfig) -> None:
    cfg = model_preset("tiny_moe")
    engine = RolloutEngine(cfg, spec, FP32, seed=0, max_batch_size=3)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]]
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=9), record_routing=True)
    for prompt, out in zip(prompts, outs):
        fed = prompt + out.response_ids[:-1]
        assert out.routed_experts.shape == (len(fed), cfg.num_layers, cfg.moe_router_topk)
        assert out.routed_experts.dtype == np.int32
        with torch.no_grad(), r3.record_routing(engine.policy.lm) as record:
            engine.policy.lm(torch.tensor([fed]))
        expected = record.stacked()[0].numpy()
        assert (np.sort(out.routed_experts, -1) == np.sort(expected, -1)).all()
    plain = engine.generate(prompts, SamplingParams(max_new_tokens=4))
    assert all(o.routed_experts is None for o in plain)
