"""One reader for data files (JSON, JSON Lines, CSV/TSV, parquet): `(source, row)` with file:line sources.

Used by training (through the registry) and by the `instill data` tools. Sources are
``path:LINE`` for files whose rows are lines (jsonl; csv/tsv: the 1-based line where the
record starts, the header being line 1) and ``path:#INDEX`` (0-based) for JSON arrays and
parquet. Rows are read lazily where the format allows (jsonl line by line, csv, parquet by
batch), so a large file is never held in memory twice.

Text files are UTF-8 (a BOM is accepted) unless an ``encoding`` is given (``gbk`` for many Chinese
CSV/Excel exports); a file that does not decode, JSON nested too deeply to parse, a number too long to
convert, a top-level JSON object where rows were expected and a CSV header naming a column twice are
each one ``DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from instill.errors import DataError, EncodingError
from instill.textfile import codec_name, read_text, undecodable

DATA_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".parquet")


def file_rows(path: Path, *, header: bool = True, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """Rows of one local file, chosen by extension. Header-less csv/tsv columns are named "0", "1", ..."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_file(path, encoding)
    if suffix == ".json":
        return _json_rows(path, encoding)
    if suffix in (".csv", ".tsv"):
        return delimited_rows(path, "\t" if suffix == ".tsv" else ",", header, encoding)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise DataError(f"{path}: unsupported file type '{suffix}' (supported: {', '.join(DATA_EXTENSIONS)})")


def _jsonl_file(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    # Text-mode iteration splits on newlines only: U+2028/U+2029/U+0085 inside a JSON string (legal, and
    # common in scraped Chinese text) stay in their row, unlike str.splitlines().
    codec = codec_name(encoding)
    with path.open(encoding=codec) as f:
        try:
            yield from jsonl_rows(path, f)
        except UnicodeError:  # UnicodeDecodeError, or UTF-16 without a byte-order mark
            raise EncodingError(undecodable(path, encoding)) from None


def jsonl_rows(path: Path, lines: Iterable[str], first_line: int = 1) -> Iterator[tuple[str, dict]]:
    for lineno, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            record = json.loads(line.rstrip("\r\n"))  # else an error at the end is placed on the next line
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: invalid JSON: {err.msg} (column {err.colno})") from None
        except (RecursionError, ValueError) as err:
            raise DataError(f"{source}: {_unparsable(err)}") from None
        yield source, as_row(record, source)


def _unparsable(err: BaseException) -> str:
    """Why json.loads gave up on valid-looking JSON: nesting beyond Python's recursion limit, or a huge number."""
    if isinstance(err, RecursionError):
        return "JSON nested too deeply to read (thousands of levels of arrays/objects)"
    return f"invalid JSON: {str(err).splitlines()[0][:200]}"


def _json_rows(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """A JSON array of objects; a .json file that is really JSON Lines is read as such.

    A document that is one JSON object spread over several lines (``{"data": [...]}``) is refused:
    read as JSON Lines it would fail on its first line with a message blaming the wrong thing."""
    text = read_text(path, encoding)
    stripped = text.strip()
    if not stripped.startswith("["):
        if stripped.startswith("{") and "\n" in stripped:
            _refuse_object(path, text)
        return jsonl_rows(path, text.split("\n"))
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    except (RecursionError, ValueError) as err:
        raise DataError(f"{path}: {_unparsable(err)}") from None
    if not isinstance(records, list):  # "[1] x" and the like fail above; kept as a guard
        raise DataError(f"{path}: expected a JSON array of rows")
    return ((f"{path}:#{i}", as_row(rec, f"{path}:#{i}")) for i, rec in enumerate(records))


def _refuse_object(path: Path, text: str) -> None:
    """Raise for a multi-line document holding one JSON object (rows must be an array or JSON Lines)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return  # not one object: JSON Lines (or broken); the line-by-line reader says which line
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        hint = f"; the rows may be under {', '.join(repr(k) for k in lists[:3])}: make that list the top level" \
            if lists else ""
        raise DataError(f"{path}:1: the top level is a JSON object; expected an array of rows "
                        f"([{{...}}, ...]) or JSON Lines (one object per line){hint}")


def delimited_rows(path: Path, delimiter: str = ",", header: bool = True,
                   encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """CSV/TSV rows keyed by the header (or "0", "1", ... without one); source = the line the record starts on."""
    csv.field_size_limit(2**31 - 1)  # long responses exceed the 128 KiB default
    with path.open(newline="", encoding=codec_name(encoding)) as f:
        reader = csv.reader(f, delimiter=delimiter)
        names: list[str] | None = None
        start = 1
        try:
            for values in reader:
                source, start = f"{path}:{start}", reader.line_num + 1
                if not values:
                    continue
                if header and names is None:
                    names = _header(values, source)
                    continue
                keys = names or [str(i) for i in range(len(values))]
                if names is not None and len(values) != len(names):
                    raise DataError(f"{source}: {len(values)} fields but the header has {len(names)}")
                yield source, dict(zip(keys, values))
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: invalid CSV: {err}") from None
        except UnicodeError:  # UnicodeDecodeError, or UTF-16 without a byte-order mark
            raise EncodingError(undecodable(path, encoding)) from None
        if header and names is None:
            raise DataError(f"{path}: empty CSV file (no header row)")


def _header(names: list[str], source: str) -> list[str]:
    """The header row; a name given twice would silently merge two columns into one key."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(f"{source}: column name {name!r} appears twice in the header (columns {seen[name]} and {i});"
                            " rename one")
        seen[name] = i
    return names


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
