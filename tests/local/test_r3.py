"""R3 on a tiny random HF Qwen3-MoE: recording, exact replay, router gradients, restoration."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from miles_hydra.backends.local.r3 import (
    batch_routing_mismatch,
    moe_routers,
    pack_routing,
    record_routing,
    replay_routing,
    routing_mismatch,
    routing_mismatch_metrics,
    split_routing,
)
from miles_hydra.errors import ConfigError

VOCAB, TOPK, EXPERTS = 48, 2, 8


def _tiny_moe(seed: int = 0, dense_layers: tuple[int, ...] = ()) -> Qwen3MoeForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=EXPERTS,
        num_experts_per_tok=TOPK,
        norm_topk_prob=True,
        mlp_only_layers=list(dense_layers),
        max_position_embeddings=128,
    )
    return Qwen3MoeForCausalLM(cfg).float().eval()


def _perturbed(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """A copy whose weights moved a little, as after an optimizer step."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std().clamp(min=1e-3))
    return other


def _batch(lengths=(14, 9, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token batch and its attention mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask


def _rollout_routing(model, ids, mask) -> list[np.ndarray]:
    """What a rollout engine returns: per sequence [T_i - 1, L, K] (last token never fed)."""
    with torch.no_grad(), record_routing(model) as record:
        model(input_ids=ids, attention_mask=mask)
    return [r[:-1] for r in record.sequences(mask)]


def test_record_layout_matches_router_topk() -> None:
    model = _tiny_moe(dense_layers=(1,))
    ids, mask = _batch()
    with torch.no_grad(), record_routing(model) as record:
        out = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
    routed = record.stacked()
    assert routed.dtype == torch.int32 and routed.shape == (3, 14, 2, TOPK)  # layer 1 is dense
    for layer, logits in enumerate(out.router_logits):
        own = torch.topk(torch.softmax(logits.float(), -1), TOPK).indices.view(3, 14, TOPK)
        assert torch.equal(routed[:, :, layer].long(), own)
    seqs = record.sequences(mask)
    assert [s.shape for s in seqs] == [(14, 2, TOPK), (9, 2, TOPK), (12, 2, TOPK)]
    assert all(s.dtype == np.int32 for s in seqs)
    assert len(record.calls) == 1


def test_kv_cache_decode_recording_replays_exactly() -> None:
    """Prefill + one-token decode calls give the rollout layout [P + R - 1, L, K]."""
    trainer = _tiny_moe()
    rollout = _perturbed(trainer, 0.02)
    prompt = torch.randint(1, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    tokens, step_ids = prompt, prompt
    cache = None
    with torch.no_grad(), record_routing(rollout) as record:
        for _ in range(4):  # R = 4 response tokens; the last one is never fed
            out = rollout(input_ids=step_ids, cache=cache, use_cache=True)
            cache, step_ids = out.cache, out.logits[:, -1:].argmax(-1)
            tokens = torch.cat([tokens, step_ids], 1)
    assert [tuple(c.shape) for c in record.calls] == [(2, 5, 3, TOPK)] + [(2, 1, 3, TOPK)] * 3
    routed = record.sequences()
    assert [r.shape for r in routed] == [(8, 3, TOPK)] * 2 and tokens.shape == (2, 9)
    on = batch_routing_mismatch(trainer, tokens, routed, replay=True)
    assert on["train/routing_mismatch"] == 0.0


def test_replaying_own_routing_leaves_logits_unchanged() -> None:
    model = _tiny_moe()
    ids, mask = _batch()
    with torch.no_grad(), record_routing(model) as record:
        ref = model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad(), replay_routing(model, record.stacked().long()):
        replayed = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ref, replayed)


@pytest.mark.parametrize(
    ("drift", "rollout_dtype"), [(0.01, torch.float32), (0.05, torch.bfloat16)]
)
def test_exact_replay_under_drift(drift: float, rollout_dtype: torch.dtype) -> None:
    """Rollout weights drifted (and bf16). R3 on: mismatch exactly 0; R3 off: > 0."""
    trainer = _tiny_moe()
    rollout = _perturbed(trainer, drift).to(rollout_dtype)
    ids, mask = _batch()
    routed = _rollout_routing(rollout, ids, mask)
    assert [r.shape[0] for r in routed] == [13, 8, 11]
    off = batch_routing_mismatch(trainer, ids, routed, attention_mask=mask)
    on = batch_routing_mismatch(trainer, ids, routed, replay=True, attention_mask=mask)
    assert off["train/routing_mismatch"] > 0.0
    assert on == {"train/routing_mismatch": 0.0, "train/routing_mismatch_layer": 0.0}
    # the ids the trainer used are exactly the rollout's, token by token
    packed = pack_routing(routed, ids.shape[1])
    with torch.no_grad(), replay_routing(trainer, packed), record_routing(trainer) as record:
        trainer(input_ids=ids, attention_mask=mask)
    used = record.stacked()
    for i, r in enumerate(routed):
        assert np.array_equal(used[i, : len(r)].numpy(), r)


def test_router_gets_gradients_under_replay() -> None:
    trainer = _tiny_moe()
    ids, mask = _batch()
    routed = _rollout_routing(_perturbed(trainer, 0.05), ids, mask)
    trainer.train()
    with replay_routing(trainer, pack_routing(routed, ids.shape[1])):
        logits = trainer(input_ids=ids, attention_mask=mask).logits
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    (-(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()).backward()
    for router in moe_routers(trainer):
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_patches_are_restored_and_do_not_leak() -> None:
    model, other = _tiny_moe(), _tiny_moe(seed=3)
    ids, mask = _batch()
    forced = torch.zeros(3, 14, 3, TOPK, dtype=torch.long)
    forced[..., 1] = 1  # every token to experts {0, 1}
    with torch.no_grad():
        with replay_routing(model, forced), record_routing(other) as record:
            other(input_ids=ids, attention_mask=mask)
        assert routing_mismatch(forced, record.stacked()) > 0.5  # other model unaffected
        with replay_routing(model, forced), record_routing(model) as record:
            model(input_ids=ids, attention_mask=mask)
        assert routing_mismatch(forced, record.stacked()) == 0.0
    for router in moe_routers(model):
        assert "forward" not in router.__dict__ and not router._forward_hooks
    for block in model.modules():
        assert not block._forward_pre_hooks


def test_pack_and_split_with_left_padding() -> None:
    a = np.arange(3 * 2 * 2, dtype=np.int32).reshape(3, 2, 2)
    b = np.ones((2, 2, 2), dtype=np.int32)
    packed = pack_routing([a, b, None], seq_len=4, starts=[1, 0, 0])
    assert packed.shape == (3, 4, 2, 2) and packed.dtype == torch.long
    assert (packed[0, 0] == -1).all() and torch.equal(packed[0, 1:], torch.as_tensor(a).long())
    assert (packed[1, 2:] == -1).all() and (packed[2] == -1).all()
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    back = split_routing(packed, mask)
    assert np.array_equal(back[0], a) and np.array_equal(back[1], b) and back[2].shape[0] == 0


def test_mismatch_metric_on_hand_made_ids() -> None:
    recorded = np.array(
        [
            [[0, 1], [2, 3]],  # same sets, other order -> match
            [[0, 1], [2, 3]],  # one layer differs
            [[4, 5], [6, 7]],  # both layers differ
            [[-1, -1], [-1, -1]],  # padding: excluded
        ]
    )
    recomputed = np.array([[[1, 0], [3, 2]], [[0, 1], [2, 4]], [[4, 6], [5, 7]], [[0, 1], [2, 3]]])
    metrics = routing_mismatch_metrics(recorded, recomputed)
    assert metrics["train/routing_mismatch"] == pytest.approx(2 / 3)
    assert metrics["train/routing_mismatch_layer"] == pytest.approx(3 / 6)
    assert routing_mismatch(recorded[3:], recomputed[3:]) == 0.0


def test_dense_model_is_a_config_error() -> None:
    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    with pytest.raises(ConfigError, match="use_rollout_routing_replay"):
        with record_routing(Qwen3ForCausalLM(cfg)):
            pass


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_other_supported_routers_replay_their_own_routing_exactly(family: str) -> None:
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts_per_tok=TOPK,
    )
    torch.manual_seed(0)
    if family == "mixtral":
        model = MixtralForCausalLM(MixtralConfig(num_local_experts=4, **common))
    else:
        cfg = Qwen2MoeConfig(
            num_experts=4, moe_intermediate_size=16, shared_expert_intermediate_size=16, **common
        )
        model = Qwen2MoeForCausalLM(cfg)
    ids = torch.randint(1, VOCAB, (2, 7))
    with torch.no_grad(), record_routing(model.eval()) as record:
        ref = model(input_ids=ids).logits
    with torch.no_grad(), replay_routing(model, record.stacked().long()):
        assert torch.equal(model(input_ids=ids).logits, ref)
