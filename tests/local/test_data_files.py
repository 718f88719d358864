"""Prompt files: JSONL and Parquet read the same; every malformed case names file and line/row."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miles_hydra.config.data import DataConfig, DataSource
from miles_hydra.errors import DataError
from miles_hydra.tasks import CharTokenizer, build_prompt_source, read_prompt_file

GOOD = '{"prompt": "1+2=", "label": "3"}\n\n{"prompt": "2+2=", "label": 4, "extra": true}\n'


def jsonl(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text(text)
    return str(path)


def parquet(tmp_path: Path, columns: dict) -> str:
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_jsonl_and_parquet_give_the_same_records(tmp_path: Path) -> None:
    from_jsonl = read_prompt_file(jsonl(tmp_path, GOOD), "prompt", "label")
    from_parquet = read_prompt_file(
        parquet(tmp_path, {"q": ["1+2=", "2+2="], "a": ["3", "4"]}), "q", "a"
    )
    assert [(r.text, str(r.label)) for r in from_jsonl] == [("1+2=", "3"), ("2+2=", "4")]
    assert [(r.text, r.label) for r in from_parquet] == [("1+2=", "3"), ("2+2=", "4")]
    assert from_jsonl[1].where.endswith("prompts.jsonl:line 3")  # blank line 2 skipped
    assert from_parquet[1].where.endswith("prompts.parquet:row 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD + '{"prompt": "3+3=", "label": "6"\n',  # the end of the line: the "}" is missing
            r"prompts.jsonl:4:32: invalid JSON \(Expecting ',' delimiter\)",
        ),
        ('{"prompt": "1+2=", "label": \r\n', r"prompts.jsonl:1:29: invalid JSON \(Expecting value"),
        ('["1+2=", "3"]\n', r"prompts.jsonl:line 1: expected a JSON object, got list"),
        ('{"question": "1+2=", "label": "3"}\n', r"line 1: no 'prompt' field \(data.input_key"),
        ('{"prompt": "1+2="}\n', r"line 1: no 'label' field \(data.label_key=label\)"),
        (
            '{"prompt": "1+2=", "label": null}\n',
            r"line 1: field 'label' \(data.label_key\) is null",
        ),
        ('{"prompt": 12, "label": "3"}\n', r"line 1: field 'prompt' .* must be a string, got int"),
        ('{"prompt": "", "label": "3"}\n', r"line 1: field 'prompt' \(data.input_key\) is empty"),
        ("\n\n", r"prompts.jsonl: the prompt file has no records"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_prompt_file(jsonl(tmp_path, text), "prompt", "label")


def test_malformed_parquet_names_file_and_row(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"prompt": ["1+2=", None], "label": ["3", "4"]})
    with pytest.raises(DataError, match=r"prompts.parquet:row 1: field 'prompt' .* is null"):
        read_prompt_file(path, "prompt", "label")
    with pytest.raises(DataError, match=r"row 0: no 'answer' field .*\['label', 'prompt'\]"):
        read_prompt_file(path, "prompt", "answer")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable Parquet file"):
        read_prompt_file(str(broken), "prompt", "label")
    with pytest.raises(DataError, match=r"missing.jsonl: prompt file not found"):
        read_prompt_file(str(tmp_path / "missing.jsonl"), "prompt", "label")


def test_untokenizable_or_too_long_prompts_name_the_line(tmp_path: Path) -> None:
    def build(text: str) -> None:
        cfg = DataConfig(source=DataSource.file, prompt_data=jsonl(tmp_path, text))
        build_prompt_source(cfg, CharTokenizer(), 0, max_prompt_len=16)

    with pytest.raises(DataError, match=r"prompts.jsonl:line 2: character 'W'"):
        build('{"prompt": "1+2=", "label": 3}\n{"prompt": "What is 1+2?", "label": 3}\n')
    with pytest.raises(DataError, match=r"line 1: prompt .* has 20 tokens, more than rollout"):
        build('{"prompt": "' + "1+" * 10 + '", "label": 3}\n')


def test_max_records_reads_only_the_first(tmp_path: Path) -> None:
    """The pre-submission check parses the first records; a bad line after them is not read."""
    path = jsonl(tmp_path, GOOD + "not json\n")
    assert len(read_prompt_file(path, "prompt", "label", max_records=2)) == 2
    with pytest.raises(DataError, match=r"prompts.jsonl:4:1: invalid JSON"):
        read_prompt_file(path, "prompt", "label")
    table = parquet(tmp_path, {"prompt": ["a", "b", "c"], "label": ["1", "2", "3"]})
    assert [r.text for r in read_prompt_file(table, "prompt", "label", max_records=2)] == ["a", "b"]
