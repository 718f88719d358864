"""The batched decode loop (decode.py, the GPU path) run on CPU without graphs, and on CUDA with
CUDA graphs against the eager loop (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from miles_hydra.backends.local.models import model_preset
from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
from miles_hydra.backends.local.rollout.sampling import token_log_probs
from miles_hydra.config.precision import DType, PrecisionConfig
from miles_hydra.config.speculative import SpeculativeConfig

FP32, BF16 = PrecisionConfig(), PrecisionConfig(rollout_dtype=DType.bfloat16)
NO_SPEC = SpeculativeConfig()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _prompts(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 20, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (k,), generator=g).tolist() for k in lengths]


def _check_against_recompute(engine, prompts, outs, params, caps, atol) -> None:
    """Stops, caps and log-probs == a no-cache full forward (the KV-cache exactness test)."""
    for prompt, out, cap in zip(prompts, outs, caps):
        assert 1 <= len(out.response_ids) <= cap
        assert len(out.rollout_log_probs) == len(out.response_ids)
        stops = [i for i, t in enumerate(out.response_ids) if t in params.stop_token_ids]
        assert out.finished == bool(stops) and (not stops or stops == [len(out.response_ids) - 1])
        if not out.finished:
            assert len(out.response_ids) == cap
        ids = torch.tensor([prompt + out.response_ids], device=engine.device)
        with torch.no_grad():
            logits = engine.policy.lm(ids).logits[0, len(prompt) - 1 : -1].float()
        ref = token_log_probs(logits, ids[0, len(prompt) :], params).cpu()
        torch.testing.assert_close(torch.tensor(out.rollout_log_probs), ref, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, max_new_tokens=40, stop_token_ids=[3]),
        SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=40),
        SamplingParams(temperature=0.0, max_new_tokens=40, stop_token_ids=[5, 7]),
    ],
    ids=["t1-stop", "topk-topp", "greedy-stops"],
)
@pytest.mark.parametrize("family", ["qwen3", "llama", "qwen3_moe"])
def test_batched_loop_log_probs_equal_full_recompute(params: SamplingParams, family: str) -> None:
    """Continuous batching (6 slots, 23 prompts, per-prompt caps) through the batched loop."""
    if family == "qwen3_moe":
        cfg = model_preset("tiny_moe")
    else:
        cfg = model_preset("tiny_dense", family=family, qk_layernorm=family == "qwen3")
    engine = RolloutEngine(cfg, NO_SPEC, FP32, seed=1, max_batch_size=6, batched_decode=True)
    prompts = _prompts(23, cfg.vocab_size, seed=2)
    caps = [1 + (7 * i) % 45 for i in range(len(prompts))]  # some above max_new_tokens
    outs = engine.generate(prompts, params, max_new_tokens_per_prompt=caps)
    caps = [min(c, params.max_new_tokens) for c in caps]
    _check_against_recompute(engine, prompts, outs, params, caps, atol=2e-5)
    again = RolloutEngine(cfg, NO_SPEC, FP32, seed=1, max_batch_size=6, batched_decode=True)
    rerun = again.generate(prompts, params, max_new_tokens_per_prompt=caps)
    assert [o.response_ids for o in rerun] == [o.response_ids for o in outs]  # seeded


def test_batched_loop_greedy_matches_the_slot_loop() -> None:
    cfg = model_preset("tiny_dense")
    prompts = _prompts(9, cfg.vocab_size, seed=4)
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[2])
    slot = RolloutEngine(cfg, NO_SPEC, FP32, seed=0, max_batch_size=4).generate(prompts, params)
    engine = RolloutEngine(cfg, NO_SPEC, FP32, seed=0, max_batch_size=4, batched_decode=True)
    batched = engine.generate(prompts, params)
    assert [o.response_ids for o in batched] == [o.response_ids for o in slot]
    assert [o.finished for o in batched] == [o.finished for o in slot]
    got = torch.tensor([lp for o in batched for lp in o.rollout_log_probs])
    want = torch.tensor([lp for o in slot for lp in o.rollout_log_probs])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    few = engine.generate(prompts[:3], params)  # 3 prompts in 4 slots: one idle, masked
    assert [o.response_ids for o in few] == [o.response_ids for o in slot[:3]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")
@pytest.mark.parametrize("compile_decode", [False, True], ids=["graphs", "compiled"])
def test_cuda_graph_loop_matches_eager_and_recompute(compile_decode: bool) -> None:
    """On CUDA: graph path log-probs == no-cache recompute (bf16 tolerance), greedy responses
    equal the eager batched loop's, and update_weights reaches the captured graphs."""
    cfg = model_preset("tiny_dense")
    prompts = _prompts(21, cfg.vocab_size, seed=3)
    params = SamplingParams(temperature=1.0, max_new_tokens=48, stop_token_ids=[3])
    graphs = RolloutEngine(cfg, NO_SPEC, BF16, "cuda", seed=0, max_batch_size=8,
                           compile_decode=compile_decode)  # fmt: skip
    assert graphs.batched_decode and graphs.cuda_graphs
    caps = [1 + (5 * i) % 48 for i in range(len(prompts))]
    outs = graphs.generate(prompts, params, max_new_tokens_per_prompt=caps)
    assert graphs._decode_step.num_graphs >= 1
    _check_against_recompute(graphs, prompts, outs, params, caps, atol=0.05)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    eager = RolloutEngine(cfg, NO_SPEC, BF16, "cuda", seed=0, max_batch_size=8,
                          cuda_graphs=False, policy=graphs.policy)  # fmt: skip
    same = sum(
        a.response_ids[:8] == b.response_ids[:8]
        for a, b in zip(graphs.generate(prompts, greedy), eager.generate(prompts, greedy))
    )
    assert same >= len(prompts) - 2  # bf16: a near-tie may flip an argmax
    new = {k: v * 0.5 for k, v in graphs.policy.state_dict().items()}
    graphs.update_weights(new)
    eager.update_weights(new)  # same tensors (shared policy): a no-op copy, kept explicit
    after = graphs.generate(prompts, params, max_new_tokens_per_prompt=caps)
    _check_against_recompute(graphs, prompts, after, params, caps, atol=0.05)


def test_rollout_package_imports_without_ray() -> None:
    """The engine imports without Ray (the device image has none); the actor stays reachable."""
    import subprocess
    import sys

    pytest.importorskip("ray")  # the actor half needs it

    code = (
        "import sys; import miles_hydra.backends.local.rollout as r; assert 'ray' not in sys.modules; "
        "r.RolloutEngineActor; assert 'ray' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")
@pytest.mark.parametrize("compile_decode", [False, True], ids=["graphs", "compiled"])
def test_cuda_graph_speculative_step(compile_decode: bool) -> None:
    """On CUDA: speculative decoding inside the captured step (Triton attention and sampling):
    log-probs == no-cache recompute after rollbacks, caps and stops honoured, counters
    consistent, and greedy speculation == greedy plain decoding."""
    from .test_rollout_spec import MTP, _peaky_policy

    cfg, policy = _peaky_policy(seed=0)  # tiny vocab: the bigram draft is often right
    engine = RolloutEngine(cfg, MTP, FP32, "cuda", seed=0, max_batch_size=8, policy=policy,
                           compile_decode=compile_decode)  # fmt: skip
    assert engine.batched_decode and engine.num_draft_steps == 2
    prompts = _prompts(21, cfg.vocab_size, seed=5)
    caps = [2 + (5 * i) % 39 for i in range(len(prompts))]
    params = SamplingParams(temperature=1.0, max_new_tokens=40, stop_token_ids=[3])
    outs = engine.generate(prompts, params, max_new_tokens_per_prompt=caps)
    assert engine._decode_step.num_graphs >= 1 and engine._decode_step.decode_kernel
    drafted = sum(o.spec_draft_tokens for o in outs)
    assert 0.05 < sum(o.spec_accepted_tokens for o in outs) / drafted < 0.97
    _check_against_recompute(engine, prompts, outs, params, caps, atol=2e-3)
    for out in outs:
        assert out.spec_draft_tokens == 2 * out.spec_verify_steps == 2 * sum(out.spec_accept_hist)
        assert out.spec_accepted_tokens == sum(a * c for a, c in enumerate(out.spec_accept_hist))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    plain = RolloutEngine(cfg, NO_SPEC, FP32, "cuda", seed=0, max_batch_size=8,
                          policy=engine.policy)  # fmt: skip
    spec_out = engine.generate(prompts, greedy)
    same = sum(a.response_ids == b.response_ids
               for a, b in zip(spec_out, plain.generate(prompts, greedy)))  # fmt: skip
    assert same >= len(prompts) - 2  # a near-tie may flip an argmax


@pytest.mark.parametrize("draft_steps", [0, 2], ids=["plain", "speculative"])
def test_decode_step_traces_as_one_graph(draft_steps: int) -> None:
    """`rollout_compile` compiles the whole step: dynamo must trace it without a graph break
    (draft chain, verify forward, acceptance, sampling through the kernels' custom ops, which
    fall back to torch on CPU). backend="eager": tracing only, no inductor code generation."""
    import torch._dynamo

    from miles_hydra.backends.local.rollout.step_sampler import StepSampler
    from miles_hydra.config.speculative import SpecMode

    spec = SpeculativeConfig(mode=SpecMode.mtp, num_steps=2) if draft_steps else NO_SPEC
    cfg = model_preset("tiny_dense")
    engine = RolloutEngine(cfg, spec, FP32, seed=0, max_batch_size=4, batched_decode=True)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, stop_token_ids=[3])
    engine.generate(_prompts(4, cfg.vocab_size), params)  # builds the cache and the step
    step = engine._decode_step
    state = step.state(4)
    sampler = StepSampler(params, state.seed, engine.generator, use_kernels=True)
    torch._dynamo.reset()
    traced = torch.compile(step._eager_step, backend="eager", fullgraph=True, dynamic=False)
    before = state.positions.clone()
    state.active.fill_(True)
    traced(state, sampler, step.cache.max_len)
    assert bool((state.positions > before).all())  # the traced step ran and advanced every slot
