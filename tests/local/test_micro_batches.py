"""Micro-batching of the local trainer: fixed micro_batch_size and dynamic (token budget)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from miles_hydra.backends.local.train_batch import token_budget_chunks
from miles_hydra.backends.local.trainer import TrainerActor
from miles_hydra.config.parallelism import ParallelismConfig


def test_token_budget_chunks_keep_order_and_budget() -> None:
    lengths = torch.tensor([10, 30, 20, 50, 5, 5, 5, 120, 8])
    chunks = token_budget_chunks(lengths, budget=100)
    assert torch.cat(chunks).tolist() == list(range(len(lengths)))  # consecutive, all rows
    for c in chunks:
        padded = len(c) * int(lengths[c].max())
        assert padded <= 100 or len(c) == 1  # the 120-token row gets a chunk of its own
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [3, 4], [5, 6], [7], [8]]  # 2 x 50 fits
    assert token_budget_chunks(torch.tensor([], dtype=torch.long), 100) == []


def _fake_trainer(device: str, gbs: int, **parallel) -> SimpleNamespace:
    rollout = SimpleNamespace(effective_global_batch_size=gbs)
    cfg = SimpleNamespace(rollout=rollout, parallelism=ParallelismConfig(**parallel))
    return SimpleNamespace(cfg=cfg, device=device)


def test_micro_batches_by_device_and_mode() -> None:
    lengths = torch.tensor([40, 40, 40, 40, 80, 80, 10, 10])
    split = TrainerActor._micro_batches
    cpu = split(_fake_trainer("cpu", 4, micro_batch_size=1), lengths)
    assert [[c.tolist() for c in g] for g in cpu] == [[[0, 1, 2, 3]], [[0, 1, 2, 3]]]
    fixed = split(_fake_trainer("cuda", 4, micro_batch_size=2), lengths)
    assert [[c.tolist() for c in g] for g in fixed] == [[[0, 1], [2, 3]], [[0, 1], [2, 3]]]
    dynamic = split(
        _fake_trainer("cuda", 4, use_dynamic_batch_size=True, max_tokens_per_gpu=160), lengths
    )  # global batch 1: 4 x 40 = 160 fits; global batch 2: 2 x 80, then 2 x 10
    assert [[c.tolist() for c in g] for g in dynamic] == [[[0, 1, 2, 3]], [[0, 1], [2, 3]]]
