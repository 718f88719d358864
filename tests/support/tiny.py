"""The tiny-run overrides the tests share: the default task and algorithm on a 32-wide model
on the CPU, small enough that a rollout takes milliseconds. Tests add only what differs."""

TINY_MODEL = [
    "model.hidden_size=32",
    "model.ffn_hidden_size=64",
    "model.num_attention_heads=2",
    "model.num_query_groups=1",
    "model.kv_channels=16",
    "backend.device=cpu",
]

# a whole run: 4 prompts x 2 samples, 6 response tokens, no progress bar
TINY_RUN = [
    *TINY_MODEL,
    "rollout.rollout_batch_size=4",
    "rollout.n_samples_per_prompt=2",
    "rollout.rollout_max_response_len=6",
    "logging.progress_bar=false",
]

# the same with neither warm-start nor evaluation (cluster and sweep tests: seconds per job)
TINY_BARE_RUN = [*TINY_RUN, "rollout.eval_interval=null", "data.warmup_sft_steps=0"]
