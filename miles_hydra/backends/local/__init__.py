"""Embedded RL engine (backend=local). Submodules import torch; this package file does not.

loop          the job process: ``train(cfg, run_dir)``, generate -> reward -> train -> sync ->
              eval -> log -> checkpoint, preemption and resume
actors        Ray plumbing: the session, ``get`` with timeouts, ``Actors`` (trainer + engines)
evaluate      ``decode_response`` (ids -> text for the reward) and ``EvalRunner`` (eval accuracy)
rollout/      the rollout engine: batched, KV-cached, speculative generation (own docstring)
trainer       the training actor (miles' train actor in one process)
critic        the PPO critic (value head, its own optimizer)
schedule      the learning-rate schedule (warm-up, Megatron's decay styles)
algo/         RL math as small pure tensor functions (advantages, policy loss, KL, TIS/MIS)
train_batch   ``RolloutBatch``: what the driver hands the trainer, and its packed tensor form
models        policy models: HF causal LMs built from ``ModelConfig``, plus the draft head
draft         the MTP draft head and its online training loss
spec_monitor  speculative acceptance metrics and the acceptance-collapse alert
r3            Rollout Routing Replay hooks for HF MoE models
metrics       metrics under miles' names: JSONL, wandb, plots
checkpoint    atomic run checkpoints (model, trainer state, driver state) and their rotation
"""
