"""The training actor of the local engine (miles ``MegatronTrainRayActor``, one process).

Per rollout (miles §1.6): old-policy log-probs with the current weights (temperature-scaled as
in the rollout; R3 replays the rollout's expert choices), reference log-probs (frozen copy,
when the algorithm uses a reference), critic values (ppo) -> advantages over the whole rollout
-> ``num_steps_per_rollout`` optimizer steps over consecutive global batches, each accumulated
over micro-batches, with the loss from ``algo`` (handed ``algorithm.*`` as is) plus the online
MTP loss (draft params only) -> metrics. A non-finite loss or gradient raises TrainingError
before the optimizer touches the weights, so the last checkpoint stays the last good one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from miles_hydra.backends.local import algo, checkpoint, weight_sync
from miles_hydra.backends.local.critic import Critic
from miles_hydra.backends.local.draft import mtp_loss, mtp_loss_scale
from miles_hydra.backends.local.models import build_policy, load_policy_weights, save_checkpoint_dir
from miles_hydra.backends.local.r3 import routing_context
from miles_hydra.backends.local.schedule import lr_lambda
from miles_hydra.backends.local.train_batch import (
    PackedBatch,
    RolloutBatch,
    pack,
    pad_to,
    rollout_log,
    rows_of,
    select_routed,
    sft_batch,
    split_indices,
    token_budget_chunks,
)
from miles_hydra.config import RunConfig
from miles_hydra.config.algorithm import AdvantageEstimator, Optimizer
from miles_hydra.config.speculative import SpecMode
from miles_hydra.errors import TrainingError
from miles_hydra.launch.console import redirect_actor_output


def warmup_sft_lr(cfg: RunConfig) -> float:
    """LR of the supervised warm-start: ``data.warmup_sft_lr`` (validation requires it with
    warm-start steps)."""
    if cfg.data.warmup_sft_lr is None:
        raise ValueError("data.warmup_sft_lr is unset: the config was not validated")
    return float(cfg.data.warmup_sft_lr)


def resolve_device(name: str) -> str:
    """``backend.device`` value -> torch device string (auto = cuda when available)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_finite(loss: torch.Tensor, rollout_id: int, metrics: dict[str, Any]) -> None:
    """TrainingError for a NaN/Inf loss, before backward and the optimizer step."""
    if torch.isfinite(loss):
        return
    parts = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    raise TrainingError(
        f"non-finite loss ({float(loss)}) at rollout {rollout_id} ({parts}): training "
        "stopped before the optimizer step, the last good checkpoint is kept; lower "
        "algorithm.lr or algorithm.clip_grad, or check the rewards"
    )


class TrainerActor:
    """Holds the policy (train dtype), reference, critic and optimizer; trains on rollouts."""

    def __init__(self, cfg: RunConfig, pad_id: int, num_threads: Optional[int] = None) -> None:
        redirect_actor_output("trainer")  # quiet console: output to <run_dir>/logs/trainer.log
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.pad_id = pad_id
        self.device = resolve_device(cfg.backend.device.value)
        dtype = cfg.precision.train_dtype
        self.policy = build_policy(cfg.model, cfg.speculative, dtype, self.device, cfg.seed)
        self.temperature = cfg.rollout.rollout_temperature or 1.0
        self.mtp_online = cfg.speculative.mode is SpecMode.mtp_online
        if self.policy.draft is not None and not self.mtp_online:
            self.policy.draft.requires_grad_(False)  # frozen draft (speculative=mtp)
        self.ref = None
        if cfg.algorithm.uses_reference:
            self.ref = build_policy(cfg.model, None, dtype, self.device, cfg.seed)
            self._copy_to_ref()
        self.critic = None
        if cfg.algorithm.advantage_estimator is AdvantageEstimator.ppo:
            trunk = build_policy(cfg.model, None, dtype, self.device, cfg.seed)
            self.critic = Critic(trunk, cfg.algorithm)
        self.optimizer = self._make_optimizer(self.policy.parameters())
        total = cfg.rollout.num_rollout * cfg.rollout.num_steps_per_rollout
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.algorithm, total)
        )
        self.global_step = 0
        self._weight_export: Optional[weight_sync.WeightExport] = None  # at the first sync
        self._sft_optimizer: Optional[torch.optim.Optimizer] = None

    # ----------------------------------------------------------------- set-up helpers
    def _make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        a = self.cfg.algorithm
        trainable = [p for p in params if p.requires_grad]
        if a.optimizer is Optimizer.sgd:
            return torch.optim.SGD(trainable, lr=a.lr, weight_decay=a.weight_decay)
        return torch.optim.AdamW(
            trainable,
            lr=a.lr,
            betas=(a.adam_beta1, a.adam_beta2),
            eps=a.adam_eps,
            weight_decay=a.weight_decay,
        )

    def _copy_to_ref(self) -> None:
        assert self.ref is not None
        self.ref.lm.load_state_dict(self.policy.lm.state_dict())
        self.ref.requires_grad_(False)

    # ----------------------------------------------------------------- forward passes
    def _hidden(self, model: nn.Module, mb: PackedBatch) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` (right padding: no mask needed, see train_batch)."""
        return model.lm.model(input_ids=mb.input_ids).last_hidden_state

    def _response_logits(self, model: nn.Module, hidden: torch.Tensor, mb: PackedBatch) -> Any:
        """Temperature-scaled float32 logits ``[B, T, V]`` predicting the response tokens."""
        index = mb.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        picked = hidden.gather(1, index)
        return model.lm.lm_head(picked).float() / self.temperature

    def _log_probs(
        self, model: nn.Module, mb: PackedBatch, routed: Any = None, routing: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the response tokens; R3 replay when configured. ``routing`` (a dict)
        receives the rollout-vs-this-forward routing mismatch metrics."""
        record = routing is not None
        replay = self.cfg.algorithm.use_rollout_routing_replay
        with routing_context(
            model.lm, routed, mb.input_ids, replay=replay, record=record
        ) as mismatch:
            hidden = self._hidden(model, mb)
        if record:
            routing.update(mismatch)
        logits = self._response_logits(model, hidden, mb)
        return algo.token_log_probs(logits, mb.tokens), hidden

    def _micro_batches(self, lengths: torch.Tensor) -> list[list[torch.Tensor]]:
        """Index chunks: global batches (one per optimizer step), each split in micro-batches
        (indices relative to the global batch). On CPU a global batch is one micro-batch; on
        GPU `parallelism.micro_batch_size` samples, or with `use_dynamic_batch_size` at most
        `max_tokens_per_gpu` padded tokens (lengths [N]: prompt + response per sample)."""
        gbs = self.cfg.rollout.effective_global_batch_size
        p = self.cfg.parallelism
        batches = split_indices(len(lengths), gbs)
        if self.device == "cpu":
            return [split_indices(len(g), gbs) for g in batches]
        if p.use_dynamic_batch_size:
            return [token_budget_chunks(lengths[g], p.max_tokens_per_gpu) for g in batches]
        return [split_indices(len(g), p.micro_batch_size) for g in batches]

    @torch.no_grad()
    def _forward_only(self, packed: PackedBatch, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Old log-probs, reference log-probs and values over the whole rollout, in the same
        micro-batch chunks as training (so step 0 reproduces them bit for bit)."""
        out: dict[str, list[torch.Tensor]] = defaultdict(list)
        timings: dict[str, float] = defaultdict(float)
        mismatch: dict[str, float] = defaultdict(float)
        offset = 0
        for chunks in self._micro_batches(packed.lengths):
            for chunk in chunks:
                index = chunk + offset
                mb = packed.select(index).to(self.device)
                routed = select_routed(batch, index)
                start = time.perf_counter()
                routing: dict[str, float] = {}
                old, _ = self._log_probs(self.policy, mb, routed, routing)
                out["log_probs"].append(pad_to(old.cpu(), packed.loss_mask.shape[1]))
                for key, value in routing.items():  # weighted by samples for the mean
                    mismatch[key] += value * len(index) / len(batch)
                timings["perf/log_probs_time"] += time.perf_counter() - start
                if self.ref is not None:
                    start = time.perf_counter()
                    ref, _ = self._log_probs(self.ref, mb, None)
                    out["ref_log_probs"].append(pad_to(ref.cpu(), packed.loss_mask.shape[1]))
                    timings["perf/ref_log_probs_time"] += time.perf_counter() - start
                if self.critic is not None:
                    values = self.critic.values(mb, routed)
                    out["values"].append(pad_to(values.cpu(), packed.loss_mask.shape[1]))
            offset += sum(len(c) for c in chunks)
        result = {key: torch.cat(parts) for key, parts in out.items()}
        mask = packed.loss_mask.bool()
        for key in ("log_probs", "ref_log_probs", "values"):
            if key in result and not torch.isfinite(result[key][mask]).all():
                raise TrainingError(
                    f"non-finite {key} from the {'critic' if key == 'values' else 'model'} "
                    "before training: the weights hold NaN/Inf (a diverged run?); the last good "
                    "checkpoint is kept; lower algorithm.lr or resume from that checkpoint"
                )
        result.update({k: torch.tensor(v) for k, v in {**timings, **mismatch}.items()})
        return result

    # ----------------------------------------------------------------- the training step
    def train(self, rollout_id: int, batch: RolloutBatch) -> dict[str, float]:
        """Train on one rollout; returns miles' rollout/*, train/* and perf/* metrics."""
        start = time.perf_counter()
        packed = pack(batch, self.pad_id)
        fwd = self._forward_only(packed, batch)
        a = self.cfg.algorithm
        old = packed.rollout_log_probs if a.use_rollout_logprobs else fwd["log_probs"]
        adv, returns = self._advantages(packed, batch, old, fwd)
        metrics: dict[str, float] = rollout_log(packed, fwd, adv, returns, self._normalized_rewards)
        metrics.update({k: float(v) for k, v in fwd.items() if k.startswith(("perf/", "train/"))})
        train_start = time.perf_counter()
        step_metrics = []
        offset = 0
        for chunks in self._micro_batches(packed.lengths):
            size = sum(len(c) for c in chunks)
            index = [c + offset for c in chunks]
            step_metrics.append(
                self._optimizer_step(rollout_id, packed, batch, index, old, fwd, adv, returns)
            )
            offset += size
        for key in step_metrics[0]:
            metrics[key] = sum(m[key] for m in step_metrics) / len(step_metrics)
        train_time = time.perf_counter() - train_start
        metrics["perf/actor_train_time"] = train_time
        metrics["perf/actor_train_tok_per_s"] = packed.num_tokens * len(step_metrics) / train_time
        metrics["perf/train_time"] = time.perf_counter() - start
        return metrics

    def _advantages(
        self, packed: PackedBatch, batch: RolloutBatch, old: torch.Tensor, fwd: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.cfg.algorithm
        rewards = algo.normalize_rewards_for_estimator(
            a.advantage_estimator,
            packed.rewards,
            batch.group_size,
            rewards_normalization=a.rewards_normalization,
            grpo_std_normalization=a.grpo_std_normalization,
        )
        kl = None
        if a.kl_coef != 0 and "ref_log_probs" in fwd:
            kl = algo.approx_kl(old, fwd["ref_log_probs"], a.kl_loss_type)
        adv, returns = algo.compute_advantages(
            a.advantage_estimator,
            rewards=rewards,
            loss_mask=packed.loss_mask,
            kl=kl,
            values=fwd.get("values"),
            kl_coef=a.kl_coef,
            gamma=a.gamma,
            lambd=a.lambd,
        )
        if a.normalize_advantages:
            adv = algo.masked_whiten(adv, packed.loss_mask)
        self._normalized_rewards = rewards
        return adv, returns

    def _optimizer_step(
        self,
        rollout_id: int,
        packed: PackedBatch,
        batch: RolloutBatch,
        index: list[torch.Tensor],
        old: torch.Tensor,
        fwd: dict[str, Any],
        adv: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, float]:
        """One optimizer step over one global batch (``index``: its micro-batches' rows)."""
        all_rows = torch.cat(index)
        num_samples = len(all_rows)
        num_tokens = float(packed.loss_mask[all_rows].sum())
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = defaultdict(float)
        for rows in index:
            mb = packed.select(rows).to(self.device)
            routed = select_routed(batch, rows)
            t = mb.loss_mask.shape[1]
            log_probs, hidden = self._log_probs(self.policy, mb, routed)
            entropy = algo.token_entropy(self._response_logits(self.policy, hidden, mb))
            if self.cfg.algorithm.entropy_coef == 0:
                entropy = entropy.detach()  # reported, not trained
            loss, m = algo.compute_policy_loss_and_metrics(
                log_probs=log_probs,
                old_log_probs=old[rows, :t].to(self.device),
                advantages=adv[rows, :t].to(self.device),
                loss_mask=mb.loss_mask,
                config=self.cfg.algorithm,
                rollout_log_probs=mb.rollout_log_probs,
                ref_log_probs=rows_of(fwd, "ref_log_probs", rows, t, self.device),
                entropy=entropy,
                num_samples=num_samples,
                num_tokens=num_tokens,
            )
            if self.mtp_online:
                mtp, mtp_m = self._mtp_loss(hidden, mb)
                loss = loss + mtp * mtp_loss_scale(self.cfg.speculative)
                for key, value in mtp_m.items():
                    sums[key] += float(value) * len(rows) / num_samples
            check_finite(loss, rollout_id, m)
            loss.backward()
            if self.critic is not None:
                v_loss, v_m = self.critic.loss(
                    mb, routed, fwd["values"][rows, :t], returns[rows, :t], num_samples, num_tokens
                )
                check_finite(v_loss, rollout_id, v_m)
                v_loss.backward()
                m.update(v_m)
            for key, value in m.items():
                sums[key] += float(value)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"]],
            self.cfg.algorithm.clip_grad,
        )
        if not torch.isfinite(grad_norm):
            raise TrainingError(
                f"non-finite gradient norm ({float(grad_norm)}) at rollout {rollout_id}: "
                "the weights were not updated and the last good checkpoint is kept; "
                "lower algorithm.lr or algorithm.clip_grad"
            )
        sums["train/grad_norm"] = float(grad_norm)
        sums["train/lr-pg_0"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.critic is not None:
            self.critic.step()
        self.global_step += 1
        return dict(sums)

    def _mtp_loss(self, hidden: torch.Tensor, mb: PackedBatch) -> tuple[torch.Tensor, dict]:
        """Depth-1 MTP loss on response tokens; only draft parameters get its gradient."""
        return mtp_loss(self.policy.draft, self.policy.lm, hidden, mb.input_ids, mb.seq_loss_mask)

    # ----------------------------------------------------------------- warm-start, sync, I/O
    def warmup_sft(
        self, examples: list[tuple[list[int], list[int]]], batch_size: int, last: bool = True
    ) -> dict[str, float]:
        """Supervised warm-start: CE on solution tokens (plus the MTP loss for a draft head,
        so a frozen ``mtp`` draft starts useful) with an Adam at ``warmup_sft_lr`` that lives
        across calls until the ``last`` one (the driver calls in chunks to show progress)."""
        params = [p for p in self.policy.parameters()]
        if self.policy.draft is not None:
            self.policy.draft.requires_grad_(True)
        if self._sft_optimizer is None:
            self._sft_optimizer = torch.optim.AdamW(
                params, lr=warmup_sft_lr(self.cfg), weight_decay=0.0
            )
        losses, mtp_losses = [], []
        for chunk in split_indices(len(examples), batch_size):
            mb = sft_batch([examples[i] for i in chunk], self.pad_id).to(self.device)
            hidden = self._hidden(self.policy, mb)
            index = mb.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            logits = self.policy.lm.lm_head(hidden.gather(1, index)).float()
            logp = algo.token_log_probs(logits, mb.tokens)
            loss = -(logp * mb.loss_mask).sum() / mb.loss_mask.sum()
            losses.append(loss.item())
            if self.policy.draft is not None:
                mtp, _ = self._mtp_loss(hidden, mb)
                mtp_losses.append(mtp.item())
                loss = loss + mtp
            check_finite(loss, -1, {"warmup/sft_loss": loss.detach()})
            self._sft_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.cfg.algorithm.clip_grad)
            self._sft_optimizer.step()
        if last:
            self._sft_optimizer = None
            if self.policy.draft is not None and not self.mtp_online:
                self.policy.draft.requires_grad_(False)
            if self.ref is not None:
                self._copy_to_ref()  # the RL reference is the warm-started policy
        out = {"warmup/sft_loss_first": losses[0], "warmup/sft_loss_last": losses[-1]}
        if mtp_losses:
            out["warmup/mtp_loss_last"] = mtp_losses[-1]
        return out

    def engine_state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's weights (``lm.*`` and ``draft.*``) on CPU, for the rollout engines."""
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    def weight_sources(self, places: list[weight_sync.Place]) -> list[Any]:
        """Per engine place, what it maps to read the policy's weights without a copy through
        Ray (None: that engine takes ``engine_state_dict``); exported once (weight_sync.py)."""
        if self._weight_export is None:
            self._weight_export = weight_sync.WeightExport(self.policy)
        return [self._weight_export.source_for(place) for place in places]

    def publish_weights(self) -> None:
        """Before engines copy mapped weights: CUDA work done, nothing reallocated."""
        assert self._weight_export is not None, "weight_sources() first"
        self._weight_export.publish()

    def save(self, ckpt_dir: str) -> None:
        """Write ``model/`` (HF dir) and ``trainer.pt`` into a checkpoint directory."""
        path = Path(ckpt_dir)
        save_checkpoint_dir(self.policy, path / checkpoint.MODEL_DIR)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
            "rng": checkpoint.rng_state(),
            "ref": None if self.ref is None else self.ref.lm.state_dict(),
            "critic": None if self.critic is None else self.critic.state_dict(),
        }
        torch.save(state, path / checkpoint.TRAINER_FILE)

    def load(self, ckpt_dir: str) -> int:
        """Restore everything ``save`` wrote; returns the optimizer step count."""
        path = Path(ckpt_dir)
        weights = load_policy_weights(path / checkpoint.MODEL_DIR)
        self.policy.load_state_dict(weights, strict=True)
        state = checkpoint.load_trainer_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step = state["global_step"]
        if self.ref is not None and state["ref"] is not None:
            self.ref.lm.load_state_dict(state["ref"])
        if self.critic is not None and state["critic"] is not None:
            self.critic.load_state_dict(state["critic"])
        checkpoint.set_rng_state(state["rng"])
        return self.global_step
