"""Prompt files: JSONL (one JSON object per line) and Parquet (one row per prompt).

Each record must have a string under data.input_key and a non-null value under data.label_key.
Anything malformed raises DataError naming the file and the line (JSONL, 1-based; invalid JSON
as ``path:line:column``) or the row (Parquet, 0-based), so a bad file fails before training
starts. ``max_records`` reads only the first records (the launcher's pre-submission check).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from miles_hydra.errors import DataError


@dataclass
class PromptRecord:
    text: str  # the raw prompt, before any chat template
    label: Any  # the label (answer) as stored in the file
    where: str  # "path:line 3" or "path:row 2", for error messages and Prompt.meta


def read_prompt_file(
    path: str, input_key: str, label_key: str, max_records: int | None = None
) -> list[PromptRecord]:
    """The records of a .jsonl or .parquet prompt file in file order (the first ``max_records``
    only, if given); DataError if it is missing, unreadable, malformed or has no records."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: prompt file not found (data.prompt_data / data.eval_prompt_data)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: prompt file is not readable (check its permissions)")
    if path.endswith(".jsonl"):
        rows = _jsonl_rows(path)
    elif path.endswith(".parquet"):
        rows = _parquet_rows(path, max_records)
    else:
        raise DataError(f"{path}: unknown prompt file type; use .jsonl or .parquet")
    records = [
        _record(row, where, input_key, label_key)
        for where, row in itertools.islice(rows, max_records)
    ]
    if not records:
        raise DataError(f"{path}: the prompt file has no records")
    return records


def _jsonl_rows(path: str) -> Iterator[tuple[str, dict]]:
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                yield from _jsonl_row(path, number, line)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the prompt file ({exc})") from exc


def _jsonl_row(path: str, number: int, line: str) -> Iterator[tuple[str, dict]]:
    text = line.rstrip("\r\n")  # the line break is not part of the record (nor of the column)
    if not text.strip():
        return
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}:{exc.colno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise DataError(f"{path}:line {number}: expected a JSON object, got {type(row).__name__}")
    yield f"{path}:line {number}", row


def _parquet_rows(path: str, max_records: int | None) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if max_records is None:
            rows = pq.read_table(path).to_pylist()
        else:
            batches = pq.ParquetFile(path).iter_batches(batch_size=max_records)
            rows = next(batches, pa.table({})).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    return ((f"{path}:row {i}", row) for i, row in enumerate(rows))


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
