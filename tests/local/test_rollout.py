"""RolloutEngine without speculation: determinism, KV-cache exactness, stops, weight updates."""

from __future__ import annotations

import pytest
import torch

from miles_hydra.backends.local.models import build_policy, model_preset
from miles_hydra.backends.local.rollout import GenOutput, RolloutEngine, SamplingParams
from miles_hydra.backends.local.rollout.sampling import sampling_probs, token_log_probs
from miles_hydra.config.precision import DType, PrecisionConfig
from miles_hydra.config.speculative import SpeculativeConfig

FP32, BF16 = PrecisionConfig(), PrecisionConfig(rollout_dtype=DType.bfloat16)
NO_SPEC = SpeculativeConfig()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _prompts(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (k,), generator=g).tolist() for k in lengths]


def recomputed_log_probs(
    lm, prompt: list[int], out: GenOutput, params: SamplingParams
) -> torch.Tensor:
    """Log-probs of the response under a no-cache full forward of prompt + response (fp32)."""
    ids = torch.tensor([prompt + out.response_ids])
    with torch.no_grad():
        logits = lm(ids).logits[0, len(prompt) - 1 : -1]
    return token_log_probs(logits, torch.tensor(out.response_ids), params)


def test_generation_is_deterministic_for_a_seed() -> None:
    cfg = model_preset("tiny_dense")
    prompts = _prompts(12, cfg.vocab_size)
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    a = RolloutEngine(cfg, NO_SPEC, FP32, seed=5).generate(prompts, params)
    b = RolloutEngine(cfg, NO_SPEC, FP32, seed=5).generate(prompts, params)
    c = RolloutEngine(cfg, NO_SPEC, FP32, seed=6).generate(prompts, params)
    assert [o.response_ids for o in a] == [o.response_ids for o in b]
    assert [o.rollout_log_probs for o in a] == [o.rollout_log_probs for o in b]
    assert [o.response_ids for o in a] != [o.response_ids for o in c]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, max_new_tokens=24, stop_token_ids=[3]),
        SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=24, stop_token_ids=[3]),
        SamplingParams(temperature=0.0, max_new_tokens=24),
    ],
    ids=["t1", "t0.7-topk-topp", "greedy"],
)
@pytest.mark.parametrize("family", ["qwen3", "llama", "qwen3_moe"])
def test_kv_cache_log_probs_equal_full_recompute(params: SamplingParams, family: str) -> None:
    """Continuous batching (5 slots, 13 prompts of mixed length), stops and max length."""
    if family == "qwen3_moe":
        cfg = model_preset("tiny_moe")
    else:
        cfg = model_preset("tiny_dense", family=family, qk_layernorm=family == "qwen3")
    engine = RolloutEngine(cfg, NO_SPEC, FP32, seed=1, max_batch_size=5)
    prompts = _prompts(13, cfg.vocab_size, seed=2)
    outs = engine.generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        assert 1 <= len(out.response_ids) <= params.max_new_tokens
        assert len(out.rollout_log_probs) == len(out.response_ids)
        stops = [i for i, t in enumerate(out.response_ids) if t in params.stop_token_ids]
        assert out.finished == bool(stops) and (not stops or stops == [len(out.response_ids) - 1])
        if not out.finished:
            assert len(out.response_ids) == params.max_new_tokens
        ref = recomputed_log_probs(engine.policy.lm, prompt, out, params)
        torch.testing.assert_close(torch.tensor(out.rollout_log_probs), ref, atol=2e-5, rtol=0)
        assert out.spec_verify_steps == 0 and out.routed_experts is None
    if params.greedy:  # greedy = argmax of the recomputed logits at every step
        prompt, out = prompts[0], outs[0]
        with torch.no_grad():
            logits = engine.policy.lm(torch.tensor([prompt + out.response_ids])).logits[0]
        assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == out.response_ids


def test_top_k_top_p_restrict_the_sampling_support() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    probs = sampling_probs(logits, SamplingParams(temperature=1.0, top_k=2))
    assert (probs[0, 2:] == 0).all() and torch.isclose(probs.sum(), torch.tensor(1.0))
    full = torch.softmax(logits, -1)[0]
    probs = sampling_probs(logits, SamplingParams(temperature=1.0, top_p=float(full[0]) + 1e-3))
    assert (probs[0, :2] > 0).all() and (probs[0, 2:] == 0).all()
    assert torch.equal(sampling_probs(logits, SamplingParams(temperature=0.0)), torch.eye(5)[:1])


def test_update_weights_in_place_and_effective() -> None:
    cfg = model_preset("tiny_dense")
    engine = RolloutEngine(cfg, NO_SPEC, BF16, seed=0)
    ptrs = {k: v.data_ptr() for k, v in engine.policy.state_dict().items()}
    new = build_policy(cfg, None, torch.float32, "cpu", seed=42)
    prompts = _prompts(6, cfg.vocab_size)
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    before = engine.generate(prompts, params)
    assert engine.update_weights(new.state_dict()) == len(new.state_dict())
    assert {k: v.data_ptr() for k, v in engine.policy.state_dict().items()} == ptrs
    assert {p.dtype for p in engine.policy.parameters()} == {torch.bfloat16}
    after = engine.generate(prompts, params)
    expected = RolloutEngine(cfg, NO_SPEC, BF16, policy=new).generate(prompts, params)
    assert [o.response_ids for o in after] == [o.response_ids for o in expected]
    assert [o.response_ids for o in after] != [o.response_ids for o in before]
    with pytest.raises(KeyError, match="not in the rollout policy"):
        engine.update_weights({"lm.nope": torch.zeros(1)})


def test_bf16_rollout_has_a_small_real_mismatch_with_fp32() -> None:
    cfg = model_preset("tiny_dense")
    engine = RolloutEngine(cfg, NO_SPEC, BF16, seed=0)
    fp32 = build_policy(cfg, None, torch.float32, "cpu", seed=0)
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    prompts = _prompts(8, cfg.vocab_size)
    diffs = []
    for prompt, out in zip(prompts, engine.generate(prompts, params)):
        ref = recomputed_log_probs(fp32.lm, prompt, out, params)
        diffs.append((torch.tensor(out.rollout_log_probs) - ref).abs())
    diff = torch.cat(diffs)
    assert 1e-4 < float(diff.mean()) < 0.1


def test_edge_cases() -> None:
    cfg = model_preset("tiny_dense")
    engine = RolloutEngine(cfg, NO_SPEC, FP32, seed=0)
    assert engine.generate([], SamplingParams()) == []
    one = engine.generate([[1, 2]], SamplingParams(max_new_tokens=1))[0]
    assert len(one.response_ids) == 1 and not one.finished
    every = list(range(cfg.vocab_size))  # every token stops: one-token responses, finished
    outs = engine.generate([[1], [2, 3]], SamplingParams(max_new_tokens=5, stop_token_ids=every))
    assert all(len(o.response_ids) == 1 and o.finished for o in outs)
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[]], SamplingParams())
