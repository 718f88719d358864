"""Prompt files: JSONL (one JSON object per line) and Parquet (one row per prompt).

Each record must have a string under data.input_key and a non-null value under data.label_key.
Anything malformed raises DataError naming the file and the line (JSONL, 1-based) or the row
(Parquet, 0-based), so a bad file fails before training starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from miles_hydra.errors import DataError


@dataclass
class PromptRecord:
    text: str  # the raw prompt, before any chat template
    label: Any  # the label (answer) as stored in the file
    where: str  # "path:line 3" or "path:row 2", for error messages and Prompt.meta


def read_prompt_file(path: str, input_key: str, label_key: str) -> list[PromptRecord]:
    """All records of a .jsonl or .parquet prompt file, in file order."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: prompt file not found (data.prompt_data / data.eval_prompt_data)")
    if path.endswith(".jsonl"):
        rows = _jsonl_rows(path)
    elif path.endswith(".parquet"):
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unknown prompt file type; use .jsonl or .parquet")
    records = [_record(row, where, input_key, label_key) for where, row in rows]
    if not records:
        raise DataError(f"{path}: the prompt file has no records")
    return records


def _jsonl_rows(path: str) -> list[tuple[str, dict]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        where = f"{path}:line {number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        rows.append((where, row))
    return rows


def _parquet_rows(path: str) -> list[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    return [(f"{path}:row {i}", row) for i, row in enumerate(table.to_pylist())]


def _record(row: dict, where: str, input_key: str, label_key: str) -> PromptRecord:
    for key, field in ((input_key, "data.input_key"), (label_key, "data.label_key")):
        if key not in row:
            raise DataError(
                f"{where}: no {key!r} field ({field}={key}); the record has {sorted(row)}"
            )
        if row[key] is None:
            raise DataError(f"{where}: field {key!r} ({field}) is null")
    text = row[input_key]
    if not isinstance(text, str):
        raise DataError(
            f"{where}: field {input_key!r} (data.input_key) must be a string, "
            f"got {type(text).__name__}"
        )
    if not text:
        raise DataError(f"{where}: field {input_key!r} (data.input_key) is empty")
    return PromptRecord(text=text, label=row[label_key], where=where)
