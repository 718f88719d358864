"""TRL's side of ``bench_vs_trl.py``: ``GRPOTrainer`` on the shared warm-start, timed per step.

``run_trl`` needs trl and datasets (imported inside it); ``char_tokenizer`` needs only
tokenizers and transformers. Methodology: ``bench_vs_trl.py``'s docstring.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from pathlib import Path
from typing import Any

from miles_hydra.tasks.tokenizer import CHAR_SYMBOLS, EOS, PAD


def char_tokenizer() -> Any:
    """An HF fast tokenizer with exactly ``CharTokenizer``'s ids: <pad>=0, <eos>=1, then one id
    per character of ``CHAR_SYMBOLS``; decoding joins characters with nothing in between."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate([PAD, EOS, *CHAR_SYMBOLS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)
    hf.padding_side = "left"
    return hf


def _timed(fn: Any, bucket: list[float], cuda: bool) -> Any:
    import torch

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        bucket.append(time.perf_counter() - start)
        return out

    return wrapped


def run_trl(
    w: Any,
    device: str,
    warm_dir: Path,
    prompts: list[dict[str, str]],
    out: Path,
    reward_path: str,
    budget_s: float = float("inf"),
) -> dict[str, Any]:
    """``w.steps`` GRPO steps of TRL from ``warm_dir`` on ``prompts`` (in order), or fewer
    when the steps' time passes ``budget_s``; per-step rows as ``bench_vs_trl.our_rows`` makes
    them, plus start-up and peak memory."""
    began = time.perf_counter()
    import pyarrow
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cuda = device == "cuda"
    micro = w.trl_micro or w.samples
    if w.samples % micro:
        raise ValueError(f"trl_micro={micro} must divide the {w.samples} samples of a step")
    module, _, name = reward_path.partition(":")
    score = getattr(importlib.import_module(module), name)
    rewards: list[float] = []
    lengths: list[float] = []

    def reward(prompts: list[str], completions: list[str], label: list[str], **kw: Any) -> list:
        values = [float(score(p, c, lab)) for p, c, lab in zip(prompts, completions, label)]
        rewards.append(sum(values) / len(values))
        ids = kw.get("completion_ids")
        if ids is not None:
            lengths.append(sum(len(i) for i in ids) / len(ids))
        return values

    reward.__name__ = name
    tokenizer = char_tokenizer()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(warm_dir), dtype=dtype)
    args = GRPOConfig(
        output_dir=str(out / "trl_run"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=w.samples // micro,  # one optimizer step per generation
        num_generations=w.group,
        max_completion_length=w.max_new,
        max_steps=w.steps,
        num_iterations=1,
        learning_rate=w.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.98,
        adam_epsilon=1e-8,
        weight_decay=0.1,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        shuffle_dataset=False,
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        seed=w.seed,
        data_seed=w.seed,
    )
    timings: dict[str, list[float]] = {"gen": [], "score": [], "step": []}

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            timings["step"].append(time.perf_counter() - self.start)
            if sum(timings["step"]) > budget_s:
                control.should_training_stop = True

    # an explicit fingerprint: datasets' own hashes the arrow table with dill, which fails with
    # some pyarrow versions (MonthDayNano); the prompts' hash is as unique
    digest = hashlib.sha1(json.dumps(prompts).encode()).hexdigest()
    dataset = Dataset(pyarrow.Table.from_pylist(prompts), fingerprint=digest)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    # rollout = HF generate(); scoring = the rest of generate-and-score (reward, advantages)
    trainer._generate_single_turn = _timed(trainer._generate_single_turn, timings["gen"], cuda)
    trainer._generate_and_score_completions = _timed(
        trainer._generate_and_score_completions, timings["score"], cuda
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    ended = time.perf_counter()
    rows, elapsed = [], 0.0
    for i, wall in enumerate(timings["step"]):
        elapsed += wall
        gen, both = timings["gen"][i], timings["score"][i]
        rows.append(
            {
                "step": i,
                "wall_s": wall,
                "elapsed_s": elapsed,
                "rollout_s": gen,
                "score_s": both - gen,
                "train_s": wall - both,
                "reward": rewards[i],
                "response_len": lengths[i] if i < len(lengths) else None,
            }
        )
    return {
        "side": "trl",
        "trl": trl.__version__,
        "rows": rows,
        "total_s": ended - began,
        "startup_s": (start - began) + (ended - start - elapsed),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
