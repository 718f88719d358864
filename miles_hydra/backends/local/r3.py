"""Rollout Routing Replay (R3) for HF transformers MoE models (Qwen3-MoE; Qwen2-MoE, Mixtral).

In transformers 5.x an MoE block calls its router (``Qwen3MoeTopKRouter``) on the flattened
tokens ``[B*S, H]`` (row ``b*S + s``); the router returns ``(logits, weights, indices)`` with
``indices = topk(softmax(logits), top_k)`` and ``weights`` the gathered probabilities,
renormalized over the top-k when ``norm_topk_prob``. R3 works at that seam:

- ``record_routing(model)`` attaches forward hooks to every router and collects the expert ids
  each one *used* (so recording inside ``replay_routing`` records the replayed ids).
- ``replay_routing(model, routed)`` overrides each router's ``forward`` on the instance (restored
  on exit; nothing is patched at class level) to use the given ids, with weights gathered from the
  *current* router probabilities at those ids and normalized as the model normally does, so the
  router still receives gradients (miles: ``scores.gather(1, top_indices)``).
- ``routing_context(lm, routed, input_ids, replay=...)`` is the trainer's seam: one forward
  under replay of the rollout's ids (``algorithm.use_rollout_routing_replay``), optionally
  measuring the rollout-vs-trainer routing mismatch.

Layout. ``L`` = number of MoE layers (dense layers are skipped, unlike miles' all-layer arrays),
in model order; ``K`` = top_k. A per-sequence routing array is int32 ``[T, L, K]``: row t holds
the experts that routed token t (the t-th token fed to the model) in each MoE layer, in the
router's top-k order. Rollout arrays have ``T = len(prompt) + len(response) - 1`` (as in miles:
the last sampled token is never fed). A batch is ``[B, S, L, K]``; ``-1`` rows mean "no replay
for this token" and fall back to the router's own top-k (padding, and the last token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miles_hydra.errors import ConfigError

# router class -> whether the model casts the top-k weights back to the logits' dtype
SUPPORTED_ROUTERS = {
    "Qwen3MoeTopKRouter": True,
    "Qwen2MoeTopKRouter": True,
    "MixtralTopKRouter": False,
}

ArrayLike = np.ndarray | torch.Tensor


def moe_routers(model: nn.Module) -> list[nn.Module]:
    """The model's MoE routers in layer order; ConfigError if it has none we support."""
    routers = [m for m in model.modules() if type(m).__name__ in SUPPORTED_ROUTERS]
    if not routers:
        raise ConfigError(
            "algorithm.use_rollout_routing_replay",
            True,
            f"needs an MoE model with one of the routers {sorted(SUPPORTED_ROUTERS)}, "
            f"but {type(model).__name__} has none",
            "use an MoE model (model=tiny_moe / qwen3_moe) or turn routing replay off",
        )
    return routers


class RoutingRecord:
    """Expert ids collected by ``record_routing``, one entry per forward call of the model."""

    def __init__(self, num_layers: int, top_k: int) -> None:
        self.num_layers = num_layers
        self.top_k = top_k
        self._per_layer: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def _add(self, layer: int, indices: torch.Tensor, batch_shape: tuple[int, int]) -> None:
        self._per_layer[layer].append(indices.detach().to(torch.int32).view(*batch_shape, -1))

    @property
    def calls(self) -> list[torch.Tensor]:
        """One int32 ``[B, S, L, K]`` tensor per forward call (S = tokens fed in that call)."""
        counts = {len(per) for per in self._per_layer}
        assert len(counts) == 1, f"MoE layers saw different numbers of forward calls: {counts}"
        n = counts.pop()
        return [torch.stack([per[i] for per in self._per_layer], dim=2) for i in range(n)]

    def stacked(self) -> torch.Tensor:
        """All calls concatenated along the token axis: int32 ``[B, sum S, L, K]`` (CPU).

        For a prefill followed by single-token decode calls this is aligned with the full
        ``[prompt ; generated]`` token matrix (minus the last sampled token).
        """
        calls = self.calls
        assert calls, "no forward pass ran inside record_routing"
        return torch.cat([c.cpu() for c in calls], dim=1)

    def sequences(self, attention_mask: torch.Tensor | None = None) -> list[np.ndarray]:
        """Per-sequence int32 ``[T_i, L, K]`` arrays: the rows of ``stacked()`` where the mask is 1."""
        return split_routing(self.stacked(), attention_mask)


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[RoutingRecord]:
    """Collect the expert ids every MoE router uses during forward passes in this block."""
    routers = moe_routers(model)
    record = RoutingRecord(len(routers), routers[0].top_k)
    parents = _parents(model, routers)
    handles, shapes = [], {}
    for layer, (router, parent) in enumerate(zip(routers, parents)):

        def pre_hook(_mod: nn.Module, args: tuple, kwargs: dict, layer: int = layer) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            shapes[layer] = tuple(x.shape[:2]) if x.dim() == 3 else (1, x.shape[0])

        def hook(_mod: nn.Module, _args: tuple, output: Any, layer: int = layer) -> None:
            record._add(layer, output[2], shapes[layer])

        handles.append(parent.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(router.register_forward_hook(hook))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replay_routing(model: nn.Module, routed: torch.Tensor) -> Iterator[None]:
    """Force the expert ids ``routed`` (``[B, S, L, K]``, -1 rows = own routing) in every forward.

    Every forward pass in the block must feed exactly ``B*S`` tokens to each MoE layer (the batch
    the ids were packed for, e.g. by ``pack_routing``); weights are gathered from the current
    router probabilities at the forced ids and normalized as the model does.
    """
    routers = moe_routers(model)
    assert routed.dim() == 4 and routed.shape[2] == len(routers), (
        f"routed must be [B, S, {len(routers)}, top_k], got {tuple(routed.shape)}"
    )
    saved = []
    for layer, router in enumerate(routers):
        forced = routed[:, :, layer].reshape(-1, routed.shape[-1])
        saved.append(router.__dict__.get("forward"))
        router.forward = _replay_forward(router, forced)
    try:
        yield
    finally:
        for router, previous in zip(routers, saved):
            if previous is None:
                del router.forward
            else:
                router.forward = previous


def _replay_forward(router: nn.Module, forced: torch.Tensor):
    """A forward for ``router`` that routes to ``forced`` ids (rows with -1: own top-k)."""
    cast_back = SUPPORTED_ROUTERS[type(router).__name__]
    normalize = getattr(router, "norm_topk_prob", True)

    def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_states = hidden_states.reshape(-1, router.hidden_dim)
        logits = F.linear(hidden_states, router.weight)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        own = torch.topk(probs, router.top_k, dim=-1).indices
        ids = forced.to(device=own.device, dtype=own.dtype)
        assert ids.shape == own.shape, (
            f"replayed routing has {tuple(ids.shape)} ids for {tuple(own.shape)} routed tokens"
        )
        ids = torch.where((ids >= 0).all(-1, keepdim=True), ids, own)
        weights = probs.gather(1, ids)
        if normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if cast_back:
            weights = weights.to(logits.dtype)
        return logits, weights, ids

    return forward


def pack_routing(
    per_sequence: Sequence[ArrayLike | None],
    seq_len: int,
    starts: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Pack per-sequence ``[T_i, L, K]`` arrays into a long ``[B, seq_len, L, K]`` batch.

    Sequence i occupies rows ``starts[i] .. starts[i] + T_i`` (default 0: right padding), cut at
    ``seq_len``; all other rows are -1 (the router's own top-k). ``None`` = no replay for row i.
    """
    shapes = [tuple(a.shape[1:]) for a in per_sequence if a is not None]
    assert shapes and len(set(shapes)) == 1, f"routing arrays disagree on [L, K]: {set(shapes)}"
    out = torch.full((len(per_sequence), seq_len, *shapes[0]), -1, dtype=torch.long)
    for i, array in enumerate(per_sequence):
        if array is None:
            continue
        start = starts[i] if starts is not None else 0
        rows = torch.as_tensor(np.asarray(array) if not torch.is_tensor(array) else array)
        rows = rows[: max(0, seq_len - start)]
        out[i, start : start + rows.shape[0]] = rows.long()
    return out.to(device) if device is not None else out


def split_routing(routed: torch.Tensor, attention_mask: torch.Tensor | None) -> list[np.ndarray]:
    """Inverse of packing: the rows of ``routed [B, S, L, K]`` where ``attention_mask`` is 1."""
    routed = routed.cpu()
    if attention_mask is None:
        return [r.to(torch.int32).numpy() for r in routed]
    mask = attention_mask.cpu().bool()
    assert mask.shape == routed.shape[:2], f"mask {tuple(mask.shape)} vs {tuple(routed.shape)}"
    return [r[m].to(torch.int32).numpy() for r, m in zip(routed, mask)]


def routing_mismatch_metrics(recorded: ArrayLike, recomputed: ArrayLike) -> dict[str, float]:
    """Routing disagreement between two ``[..., L, K]`` id arrays of the same shape.

    Rows of ``recorded`` containing -1 (padding, not replayed) are excluded. Expert *sets* are
    compared (order within the top-k ignored). Returns ``train/routing_mismatch``: fraction of
    tokens whose set differs in at least one MoE layer; ``train/routing_mismatch_layer``:
    fraction of (token, layer) pairs that differ.
    """
    a = torch.as_tensor(np.asarray(recorded) if not torch.is_tensor(recorded) else recorded)
    b = torch.as_tensor(np.asarray(recomputed) if not torch.is_tensor(recomputed) else recomputed)
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    a, b = a.cpu().long().flatten(0, -3), b.cpu().long().flatten(0, -3)
    valid = (a >= 0).all(-1).all(-1)
    a, b = a[valid], b[valid]
    if a.shape[0] == 0:
        return {"train/routing_mismatch": 0.0, "train/routing_mismatch_layer": 0.0}
    differs = (a.sort(-1).values != b.sort(-1).values).any(-1)  # [tokens, L]
    return {
        "train/routing_mismatch": float(differs.any(-1).float().mean()),
        "train/routing_mismatch_layer": float(differs.float().mean()),
    }


def routing_mismatch(recorded: ArrayLike, recomputed: ArrayLike) -> float:
    """Fraction of tokens whose expert set differs in at least one MoE layer (see above)."""
    return routing_mismatch_metrics(recorded, recomputed)["train/routing_mismatch"]


@torch.no_grad()
def batch_routing_mismatch(
    model: nn.Module,
    input_ids: torch.Tensor,
    rollout_routed: Sequence[ArrayLike | None],
    starts: Sequence[int] | None = None,
    replay: bool = False,
    **forward_kwargs: Any,
) -> dict[str, float]:
    """Mismatch between the rollout's routing and the routing ``model`` uses on this batch.

    Runs one no-grad forward ``model(input_ids=input_ids, **forward_kwargs)`` (pass
    ``attention_mask``/``position_ids`` as the trainer does) under ``record_routing`` and, when
    ``replay`` (R3 on), under ``replay_routing`` of the packed rollout ids. Only rows the rollout
    recorded are compared. R3 off measures the train/rollout router disagreement; R3 on must
    give exactly 0.
    """
    packed = pack_routing(rollout_routed, input_ids.shape[1], starts, device=input_ids.device)
    with contextlib.ExitStack() as stack:
        if replay:
            stack.enter_context(replay_routing(model, packed))
        record = stack.enter_context(record_routing(model))
        model(input_ids=input_ids, **forward_kwargs)
    return routing_mismatch_metrics(packed, record.stacked())


@contextlib.contextmanager
def routing_context(
    lm: nn.Module,
    routed: Sequence[ArrayLike | None] | None,
    input_ids: torch.Tensor,
    *,
    replay: bool,
    record: bool = False,
) -> Iterator[dict[str, float]]:
    """R3 around one forward of ``lm`` on ``input_ids`` (``[B, S]``, right-padded): with
    ``replay``, the rollout's expert choices ``routed`` (one rollout record per row) are
    replayed (indices from the rollout, probabilities from the current router, so the router
    still learns). With ``record``, the dict it yields is filled after the block with the
    routing mismatch (``train/routing_mismatch*``) between the rollout and what this forward
    used (0 under replay). Without ``routed`` (a dense model, the reference) it does nothing."""
    result: dict[str, float] = {}
    if routed is None:
        yield result
        return
    routers = moe_routers(lm)
    per_seq = [_moe_layers_only(lm, a, len(routers)) for a in routed]
    packed = pack_routing(per_seq, input_ids.shape[1], device=input_ids.device)
    with contextlib.ExitStack() as stack:
        if replay:
            stack.enter_context(replay_routing(lm, packed))
        recording = stack.enter_context(record_routing(lm)) if record else None
        yield result
    if recording is not None:
        result.update(routing_mismatch_metrics(packed, recording.stacked()))


def _moe_layers_only(lm: nn.Module, routed: ArrayLike | None, num_moe: int) -> Any:
    """The rollout engine records ``[T, num_layers, K]`` with -1 in dense layers; the hooks here
    want the ``[T, num_moe_layers, K]`` columns of the MoE layers only."""
    if routed is None or routed.shape[1] == num_moe:
        return routed
    moe = [
        i for i, layer in enumerate(lm.model.layers) if hasattr(getattr(layer, "mlp", None), "gate")
    ]
    return routed[:, moe]


def _parents(model: nn.Module, routers: list[nn.Module]) -> list[nn.Module]:
    """The module that calls each router (the sparse MoE block), found by name."""
    by_id = {id(m): name for name, m in model.named_modules()}
    named = dict(model.named_modules())
    return [named[by_id[id(r)].rpartition(".")[0]] for r in routers]
