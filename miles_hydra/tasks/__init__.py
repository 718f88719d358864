"""Tasks shared by both backends: tokenizers, synthetic tasks, prompt files, prompt sources and
rewards. The local engine samples and scores with them; backend=miles writes the same synthetic
prompts to JSONL and scores them with the same reward functions inside miles.

Typical use (the local loop)::

    tokenizer = build_tokenizer(cfg.model)                    # char (53 ids) or local HF / GGUF
    source = build_prompt_source(cfg.data, tokenizer, cfg.seed, cfg.rollout.rollout_max_prompt_len,
                                 max_response_len=cfg.rollout.rollout_max_response_len)
    reward = miles_hydra.tasks.reward.build_reward_fn(cfg.reward, cfg.data)
    batch = source.next_batch(n)                              # list[Prompt(text, ids, label, meta)]
    text = tokenizer.decode(response_ids)                     # stops at eos_id
    r = reward(prompt, text)                                  # float; RewardError on bad values
    pairs = source.sft_examples(n)                            # [(prompt_ids, solution_ids + [eos])]
    state = source.state_dict(); source.load_state_dict(state)  # exact resume (JSON-safe dict)

Stop generation at ``tokenizer.eos_id``; pad with ``tokenizer.pad_id`` (== eos_id for SmolLM2).
Weights from the same place as the tokenizer: ``src = resolve_hf_source(cfg.model)``, then
``AutoModelForCausalLM.from_pretrained(src.directory, **src.from_pretrained_kwargs())``.
"""

from miles_hydra.tasks.files import PromptRecord, read_prompt_file
from miles_hydra.tasks.source import (
    FilePromptSource,
    Prompt,
    PromptSource,
    SyntheticPromptSource,
    build_prompt_source,
)
from miles_hydra.tasks.synthetic import (
    TASKS,
    ArithmeticTask,
    CountdownTask,
    SortingTask,
    Task,
    build_task,
    evaluate_expression,
)
from miles_hydra.tasks.tokenizer import (
    CHAR_SYMBOLS,
    CharTokenizer,
    HFSource,
    HFTokenizer,
    Tokenizer,
    build_tokenizer,
    resolve_hf_source,
)

__all__ = [
    "CHAR_SYMBOLS",
    "TASKS",
    "ArithmeticTask",
    "CharTokenizer",
    "CountdownTask",
    "FilePromptSource",
    "HFSource",
    "HFTokenizer",
    "Prompt",
    "PromptRecord",
    "PromptSource",
    "SortingTask",
    "SyntheticPromptSource",
    "Task",
    "Tokenizer",
    "build_prompt_source",
    "build_task",
    "build_tokenizer",
    "evaluate_expression",
    "read_prompt_file",
    "resolve_hf_source",
]
