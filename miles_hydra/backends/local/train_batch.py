"""What the driver hands the trainer after a rollout, and its packed tensor form.

A ``RolloutBatch`` holds plain lists (cheap to ship through Ray). ``pack`` turns it into
right-padded ``[B, L]`` sequences (prompt + response; pads only after the last real token, so
causal attention never sees them and no attention mask or position ids are needed) plus
``[B, T]`` response-aligned tensors in the layout of ``miles_hydra.backends.local.algo``: column t is
the t-th response token, predicted by the logits at sequence position ``prompt_len + t - 1``.

Also the trainer's row helpers over those tensors (micro-batch index chunks, row selection,
padding back to the rollout width) and miles' per-rollout log of them (``rollout_log``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np
import torch


@dataclass
class RolloutBatch:
    """One rollout's samples, grouped: samples ``[g*group_size, (g+1)*group_size)`` share a
    prompt. ``routed_experts[i]`` is the rollout engine's ``[prompt+response-1, layers, topk]``
    routing record of sample i (R3), or None when not recorded."""

    prompt_ids: list[list[int]]  # prompt token ids per sample
    response_ids: list[list[int]]  # sampled response token ids per sample
    rollout_log_probs: list[list[float]]  # rollout engine's log-probs of the response tokens
    rewards: list[float]  # raw rewards per sample
    group_size: int  # samples per prompt (n_samples_per_prompt)
    routed_experts: Optional[list[Optional[np.ndarray]]] = None  # R3 records per sample
    # per-token 0/1 loss mask per sample (0: a resumed partial sample's tokens from older
    # weights, rollout.mask_offpolicy_in_partial_rollout); None = train on every token
    loss_masks: Optional[list[list[int]]] = None

    def __len__(self) -> int:
        return len(self.response_ids)


@dataclass
class PackedBatch:
    """Tensors of a (sub-)batch; every field is indexed by sample on dim 0."""

    input_ids: torch.Tensor  # [B, L] prompt + response, right-padded with pad_id
    seq_loss_mask: torch.Tensor  # [B, L] 1 on response tokens (sequence-aligned; MTP loss)
    positions: torch.Tensor  # [B, T] sequence positions whose logits predict response token t
    tokens: torch.Tensor  # [B, T] response tokens
    loss_mask: torch.Tensor  # [B, T] 1 on real response tokens
    rollout_log_probs: torch.Tensor  # [B, T] rollout engine log-probs
    rewards: torch.Tensor  # [B] raw rewards
    lengths: torch.Tensor  # [B] prompt + response length

    def select(self, index: torch.Tensor | slice) -> PackedBatch:
        """The sub-batch of the given rows, trimmed to its own longest sequence."""
        parts = {f.name: getattr(self, f.name)[index] for f in fields(self)}
        longest = int(parts["lengths"].max())
        parts["input_ids"] = parts["input_ids"][:, :longest]
        parts["seq_loss_mask"] = parts["seq_loss_mask"][:, :longest]
        return PackedBatch(**parts)

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def num_tokens(self) -> float:
        return float(self.loss_mask.sum())


def pack(batch: RolloutBatch, pad_id: int) -> PackedBatch:
    """Pad a RolloutBatch into tensors (see the module docstring)."""
    n = len(batch)
    lengths = [len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)]
    seq_len = max(lengths)
    resp_len = max(1, max(len(r) for r in batch.response_ids))
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    seq_loss_mask = torch.zeros((n, seq_len))
    positions = torch.zeros((n, resp_len), dtype=torch.long)
    tokens = torch.full((n, resp_len), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((n, resp_len))
    rollout_lp = torch.zeros((n, resp_len))
    for i, (prompt, response) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
        p, r = len(prompt), len(response)
        assert len(batch.rollout_log_probs[i]) == r, "one rollout log-prob per response token"
        input_ids[i, : p + r] = torch.tensor(prompt + response, dtype=torch.long)
        mask = 1.0
        if batch.loss_masks is not None:
            assert len(batch.loss_masks[i]) == r, "one loss-mask entry per response token"
            mask = torch.tensor(batch.loss_masks[i], dtype=torch.float32)
        seq_loss_mask[i, p : p + r] = mask
        positions[i, :r] = torch.arange(p - 1, p + r - 1)
        tokens[i, :r] = torch.tensor(response, dtype=torch.long)
        loss_mask[i, :r] = mask
        rollout_lp[i, :r] = torch.tensor(batch.rollout_log_probs[i], dtype=torch.float32)
    return PackedBatch(
        input_ids=input_ids,
        seq_loss_mask=seq_loss_mask,
        positions=positions,
        tokens=tokens,
        loss_mask=loss_mask,
        rollout_log_probs=rollout_lp,
        rewards=torch.tensor(batch.rewards, dtype=torch.float32),
        lengths=torch.tensor(lengths, dtype=torch.long),
    )


def sft_batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> PackedBatch:
    """Pack supervised (prompt ids, solution ids) pairs like a rollout with zero rewards."""
    return pack(
        RolloutBatch(
            prompt_ids=[list(p) for p, _ in examples],
            response_ids=[list(r) for _, r in examples],
            rollout_log_probs=[[0.0] * len(r) for _, r in examples],
            rewards=[0.0] * len(examples),
            group_size=1,
        ),
        pad_id,
    )


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """miles' per-rollout log: mean over samples of each sample's token mean."""
    per_sample = (values * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    return float(per_sample.mean())


def rollout_log(
    packed: PackedBatch,
    fwd: dict[str, Any],
    adv: torch.Tensor,
    returns: torch.Tensor,
    normalized_rewards: torch.Tensor,
) -> dict[str, float]:
    """miles ``log_rollout_data``: mask-weighted per-sample means of the rollout tensors
    (``fwd``: the trainer's forward-only ``log_probs`` and, when computed, ``ref_log_probs``
    and ``values``, all ``[B, T]``)."""
    mask = packed.loss_mask
    out = {
        "rollout/log_probs": masked_mean(fwd["log_probs"], mask),
        "rollout/rollout_log_probs": masked_mean(packed.rollout_log_probs, mask),
        "rollout/advantages": masked_mean(adv, mask),
        "rollout/returns": masked_mean(returns, mask),
        "rollout/rewards": float(normalized_rewards.mean()),
        "rollout/response_lengths": float(mask.sum(-1).mean()),
        "rollout/total_lengths": float(packed.lengths.float().mean()),
    }
    if "ref_log_probs" in fwd:
        out["rollout/ref_log_probs"] = masked_mean(fwd["ref_log_probs"], mask)
        diff = (fwd["log_probs"] - fwd["ref_log_probs"]).abs() * mask
        out["rollout/ref_logprob_abs_diff_max"] = float(diff.max())
    if "values" in fwd:
        out["rollout/values"] = masked_mean(fwd["values"], mask)
    return out


def select_routed(batch: RolloutBatch, rows: torch.Tensor) -> Optional[list[Any]]:
    """The R3 routing records of ``rows`` (None when the rollout recorded none)."""
    if batch.routed_experts is None:
        return None
    return [batch.routed_experts[int(i)] for i in rows]


def rows_of(
    fwd: dict[str, torch.Tensor], key: str, rows: torch.Tensor, t: int, device: str
) -> Optional[torch.Tensor]:
    """``fwd[key]`` at ``rows``, first ``t`` columns, on ``device``; None when not computed."""
    return fwd[key][rows, :t].to(device) if key in fwd else None


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad the last dim of ``[B, T]`` with zeros to ``width`` columns."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x


def split_indices(n: int, size: int) -> list[torch.Tensor]:
    """Consecutive index chunks of ``size`` covering ``range(n)``."""
    return [torch.arange(s, min(s + size, n)) for s in range(0, n, size)]


def token_budget_chunks(lengths: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Consecutive index chunks of ``range(len(lengths))`` whose padded size (rows x longest
    row, what a micro-batch costs here) stays within ``budget`` tokens; a row longer than the
    budget gets a chunk of its own. Order is kept, so the chunks reproduce bit for bit."""
    chunks: list[torch.Tensor] = []
    start, longest = 0, 0
    for i, length in enumerate(lengths.tolist()):
        longest_with = max(longest, length)
        if i > start and (i - start + 1) * longest_with > budget:
            chunks.append(torch.arange(start, i))
            start, longest_with = i, length
        longest = longest_with
    if len(lengths):
        chunks.append(torch.arange(start, len(lengths)))
    return chunks
