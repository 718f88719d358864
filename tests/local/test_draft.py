"""DraftHead shapes, MTP-loss gradient isolation and learning, on a tiny random HF Qwen3."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

from miles_hydra.backends.local.draft import DraftHead, mtp_loss, mtp_loss_scale
from miles_hydra.config.model import ModelConfig
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig

VOCAB, HIDDEN = 32, 32


def _tiny_lm(seed: int = 0, tie: bool = True) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=tie,
        max_position_embeddings=128,
    )
    return Qwen3ForCausalLM(cfg).float()


def _draft(layers: int = 1, seed: int = 1) -> DraftHead:
    torch.manual_seed(seed)
    model_cfg = ModelConfig(hidden_size=HIDDEN, ffn_hidden_size=64, vocab_size=VOCAB)
    spec_cfg = SpeculativeConfig(mode=SpecMode.mtp_online, mtp_num_layers=layers)
    return DraftHead(model_cfg, spec_cfg)


def _batch(seed: int = 0, batch: int = 3, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=g)
    mask = torch.zeros(batch, length)
    mask[:, 5:] = 1.0  # prompt = first 5 tokens
    mask[1, -2:] = 0.0  # padding at the end of row 1
    return ids, mask


def _policy_loss(lm: Qwen3ForCausalLM, ids: torch.Tensor, mask: torch.Tensor):
    out = lm(input_ids=ids, output_hidden_states=True)
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -(tok * mask[:, 1:]).sum() / mask[:, 1:].sum(), out.hidden_states[-1]


@pytest.mark.parametrize("layers", [1, 2])
def test_shapes_and_chain(layers: int) -> None:
    lm, draft = _tiny_lm(), _draft(layers)
    assert len(draft.layers) == layers
    ids, _ = _batch()
    with torch.no_grad():
        h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        logits, d = draft.draft_logits(lm, h[:, :-1], ids[:, 1:])
    assert logits.shape == (3, 11, VOCAB) and d.shape == (3, 11, HIDDEN)
    tokens, q = draft.propose_chain(lm, h[:, -1], ids[:, -1], num_steps=3)
    assert tokens.shape == (3, 3) and q.shape == (3, 3, VOCAB)
    assert torch.equal(q.argmax(-1), tokens) and torch.allclose(q.sum(-1), torch.ones(3, 3))
    # step 2 of the chain is the draft fed its own hidden state and its own first proposal
    with torch.no_grad():
        l1, d1 = draft.draft_logits(lm, h[:, -1], ids[:, -1])
        l2, _ = draft.draft_logits(lm, d1, l1.argmax(-1))
    assert torch.equal(tokens[:, 1], l2.argmax(-1))
    g = torch.Generator().manual_seed(0)
    sampled, qs = draft.propose_chain(lm, h[:, -1], ids[:, -1], 2, temperature=1.0, generator=g)
    assert sampled.shape == (3, 2) and torch.allclose(qs.sum(-1), torch.ones(3, 2))


@pytest.mark.parametrize("tie", [True, False])
def test_gradient_isolation(tie: bool) -> None:
    """Total loss = policy + scaled MTP: trunk/embedding/LM-head grads equal the policy's alone."""
    ids, mask = _batch()
    lm, draft = _tiny_lm(tie=tie), _draft()
    pol, _ = _policy_loss(lm, ids, mask)
    pol.backward()
    reference = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad()

    pol, hidden = _policy_loss(lm, ids, mask)
    mtp, metrics = mtp_loss(draft, lm, hidden, ids, mask)
    scale = mtp_loss_scale(SpeculativeConfig(mode=SpecMode.mtp_online, mtp_num_layers=1))
    assert scale == pytest.approx(0.2)
    (pol + scale * mtp).backward()
    for name, p in lm.named_parameters():
        assert torch.equal(p.grad, reference[name]), name
    for name, p in draft.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert metrics["train/mtp_loss"] == pytest.approx(float(mtp.detach()))
    assert 0.0 <= metrics["train/mtp_accuracy"] <= 1.0


def test_loss_matches_hand_computation() -> None:
    """Position t predicts x_{t+2} from (h_t, x_{t+1}); only masked targets count."""
    lm, draft = _tiny_lm(), _draft()
    ids, mask = _batch(batch=2, length=7)
    hidden = torch.randn(2, 7, HIDDEN)
    loss, _ = mtp_loss(draft, lm, hidden, ids, mask)
    terms = []
    with torch.no_grad():
        for b in range(2):
            for t in range(5):
                if mask[b, t + 2]:
                    logits, _ = draft.draft_logits(lm, hidden[b, t], ids[b, t + 1])
                    terms.append(F.cross_entropy(logits[None], ids[b, t + 2 : t + 3]))
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)


def test_short_sequence_gives_zero_loss_with_graph() -> None:
    lm, draft = _tiny_lm(), _draft()
    ids = torch.tensor([[1, 2]])
    loss, metrics = mtp_loss(draft, lm, torch.randn(1, 2, HIDDEN), ids, torch.ones(1, 2))
    loss.backward()
    assert float(loss.detach()) == 0.0 and metrics["train/mtp_loss"] == 0.0


def test_head_learns_a_pattern() -> None:
    """x_{t+2} = (x_{t+1} + 3) mod V: the MTP loss falls and top-1 accuracy rises quickly."""
    lm, draft = _tiny_lm(), _draft()
    with torch.no_grad():  # a trained LM head's scale; at init (std 0.02) logits are tiny
        lm.get_input_embeddings().weight.normal_(std=0.3)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(draft.parameters(), lr=1e-2)
    first = last = None
    for _ in range(40):
        start = torch.randint(0, VOCAB, (16, 1), generator=g)
        ids = (start + 3 * torch.arange(10)) % VOCAB
        mask = torch.ones_like(ids, dtype=torch.float32)
        with torch.no_grad():
            hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        loss, metrics = mtp_loss(draft, lm, hidden, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or metrics
        last = metrics
    assert last["train/mtp_loss"] < 0.1 * first["train/mtp_loss"]
    assert last["train/mtp_accuracy"] > 0.9
    assert all(p.grad is None for p in lm.parameters())
