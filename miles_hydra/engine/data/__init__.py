"""Data for the local engine: tokenizers, synthetic tasks, prompt files and prompt sources."""

from miles_hydra.engine.data.files import PromptRecord, read_prompt_file
from miles_hydra.engine.data.source import (
    FilePromptSource,
    Prompt,
    PromptSource,
    SyntheticPromptSource,
    build_prompt_source,
)
from miles_hydra.engine.data.tasks import (
    TASKS,
    ArithmeticTask,
    CountdownTask,
    SortingTask,
    Task,
    build_task,
    evaluate_expression,
)
from miles_hydra.engine.data.tokenizer import (
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
