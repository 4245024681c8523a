"""One reader for data files (JSON, JSON Lines, CSV/TSV, parquet): `(source, row)` with file:line sources.

Used by training (through the registry) and by the `instill data` tools. Sources are
``path:LINE`` for files whose rows are lines (jsonl; csv/tsv: the 1-based line where the
record starts, the header being line 1) and ``path:#INDEX`` (0-based) for JSON arrays and
parquet. Rows are read lazily where the format allows (jsonl line by line, csv, parquet by
batch), so a large file is never held in memory twice.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from instill.errors import DataError

DATA_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".parquet")


def file_rows(path: Path, *, header: bool = True) -> Iterator[tuple[str, dict]]:
    """Rows of one local file, chosen by extension. Header-less csv/tsv columns are named "0", "1", ..."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_file(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix in (".csv", ".tsv"):
        return delimited_rows(path, "\t" if suffix == ".tsv" else ",", header)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise DataError(f"{path}: unsupported file type '{suffix}' (supported: {', '.join(DATA_EXTENSIONS)})")


def _jsonl_file(path: Path) -> Iterator[tuple[str, dict]]:
    # Text-mode iteration splits on newlines only: U+2028/U+2029/U+0085 inside a JSON string (legal, and
    # common in scraped Chinese text) stay in their row, unlike str.splitlines().
    with path.open(encoding="utf-8-sig") as f:
        yield from jsonl_rows(path, f)


def jsonl_rows(path: Path, lines: Iterable[str], first_line: int = 1) -> Iterator[tuple[str, dict]]:
    for lineno, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: invalid JSON: {err.msg} (column {err.colno})") from None
        yield source, as_row(record, source)


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """A JSON array of objects; a .json file that is really JSON Lines is read as such."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.lstrip().startswith("["):
        return jsonl_rows(path, text.split("\n"))
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    return ((f"{path}:#{i}", as_row(rec, f"{path}:#{i}")) for i, rec in enumerate(records))


def delimited_rows(path: Path, delimiter: str = ",", header: bool = True) -> Iterator[tuple[str, dict]]:
    """CSV/TSV rows keyed by the header (or "0", "1", ... without one); source = the line the record starts on."""
    csv.field_size_limit(2**31 - 1)  # long responses exceed the 128 KiB default
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names: list[str] | None = None
        start = 1
        try:
            for values in reader:
                source, start = f"{path}:{start}", reader.line_num + 1
                if not values:
                    continue
                if header and names is None:
                    names = values
                    continue
                keys = names or [str(i) for i in range(len(values))]
                if names is not None and len(values) != len(names):
                    raise DataError(f"{source}: {len(values)} fields but the header has {len(names)}")
                yield source, dict(zip(keys, values))
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: invalid CSV: {err}") from None
        if header and names is None:
            raise DataError(f"{path}: empty CSV file (no header row)")


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
        index = 0
        for batch in batches:
            for record in batch.to_pylist():
                yield f"{path}:#{index}", record
                index += 1
    except (OSError, ValueError) as err:  # pyarrow.ArrowInvalid subclasses ValueError
        raise DataError(f"{path}: cannot read parquet: {err}") from None


def as_row(record: Any, source: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{source}: expected a JSON object (one row), got {type(record).__name__}")
    return record
