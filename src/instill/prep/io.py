"""Reading raw tables and writing instruction datasets.

Reading: JSON, JSON Lines, CSV/TSV (with or without a header) and parquet through
``instill.data.readers``, the reader training uses (sources ``path:LINE`` or
``path:#INDEX``); Excel (.xlsx/.xlsm) through pandas + openpyxl (source ``path:ROW``,
the sheet's own row number, header = row 1).

Columns are named by header, by 0-based position ("0", "1", ... as in the seeds'
``pd.read_excel(...).values``), or by a dotted path into nested JSON
(``messages.1.content``).

Writing: every output is one of three row shapes the registry reads back, ``alpaca``
(instruction/input/output [+ system, history]), ``sharegpt`` (conversations of
from/value turns [+ system]) and ``openai`` (messages of role/content). Files are
written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from instill.data.example import Example
from instill.data.readers import file_rows
from instill.data.registry import DatasetSpec
from instill.errors import DataError
from instill.textfile import printable

FORMATS = ("alpaca", "sharegpt", "openai")
TABLE_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".xlsx", ".xlsm", ".parquet")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}

Rows = list[tuple[str, dict]]


# ---------------------------------------------------------------- reading


def read_table(path: str | os.PathLike, *, header: bool = True, sheet: str | int | None = None,
               limit: int | None = None, encoding: str | None = None) -> Rows:
    """``(source, row)`` for every row of a data file; header-less CSV/TSV/Excel columns are named "0", "1", ...

    ``encoding`` applies to text files (default UTF-8, a BOM accepted), e.g. ``gbk`` for many Chinese exports."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        rows = _excel(path, header, sheet)
    elif suffix in (".json", ".jsonl", ".parquet", ".csv", ".tsv"):
        rows = file_rows(path, header=header, encoding=encoding)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (supported: {', '.join(TABLE_EXTENSIONS)})")
    out: Rows = []
    for item in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(item)
    if not out:
        raise DataError(f"{path}: empty file (no rows)")
    return out


def _excel(path: Path, header: bool, sheet: str | int | None) -> Iterable[tuple[str, dict]]:
    import pandas as pd

    try:
        frame = pd.read_excel(path, sheet_name=0 if sheet is None else sheet, header=0 if header else None,
                              dtype=object)
    except ImportError as err:
        raise DataError(f"{path}: reading Excel needs openpyxl: pip install openpyxl ({err})") from None
    except (ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: cannot read the sheet: {err}") from None
    frame.columns = [str(c) for c in frame.columns]
    first = 2 if header else 1
    for i, record in enumerate(frame.to_dict(orient="records")):
        row = {k: None if _is_missing(v) else v for k, v in record.items()}
        if any(v is not None for v in row.values()):
            yield f"{path}:{first + i}", row


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------- fields


def get_field(row: dict, ref: str, source: str) -> Any:
    """A column by name, by 0-based position, or by dotted path (``messages.1.content``)."""
    if ref in row:
        return row[ref]
    if ref.isdigit():
        keys = list(row)
        if int(ref) < len(keys):
            return row[keys[int(ref)]]
        raise DataError(f"{source}: column index {ref} is out of range (the row has {len(keys)} columns)")
    if "." in ref:
        value: Any = row
        for part in ref.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
                value = value[int(part)]
            else:
                raise DataError(f"{source}: path '{ref}' does not exist in the row (stopped at '{part}')")
        return value
    near = difflib.get_close_matches(ref, [str(k) for k in row], n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    raise DataError(printable(f"{source}: no column '{ref}' (columns: {', '.join(map(str, row))}{hint})"))


def text_of(value: Any) -> str:
    """A cell as text: missing -> "", 3.0 -> "3", lists and objects -> JSON."""
    if _is_missing(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def fill_template(template: str, row: dict, source: str) -> str:
    """Replace each ``{column}`` (name, index or dotted path) with the row's value; ``{{``/``}}`` are braces."""
    def sub(match: re.Match) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        ref = match.group(1).strip()
        if not ref:
            raise DataError(f"{source}: empty placeholder '{{}}' in template {template!r} (write {{{{}}}} for braces)")
        return text_of(get_field(row, ref, source))

    return _PLACEHOLDER.sub(sub, template)


# ---------------------------------------------------------------- dataset files in our three shapes


def spec_for(path: str | os.PathLike, rows: list[dict]) -> DatasetSpec:
    """A registry entry for a dataset file: the first row tells the shape, any row may add system/history."""
    path, row = str(path), rows[0]
    optional = {k: k for k in ("system", "history") if any(k in r for r in rows)}
    system = {"system": "system"} if "system" in optional else {}
    if "conversations" in row:
        return DatasetSpec(name=Path(path).stem, file_name=path, formatting="sharegpt", columns=system)
    if "messages" in row:
        turns = row["messages"]
        first = turns[0] if isinstance(turns, list) and turns else {}
        if isinstance(first, dict) and "from" in first:
            cols = {"messages": "messages", **system}
            return DatasetSpec(name=Path(path).stem, file_name=path, formatting="sharegpt", columns=cols)
        return DatasetSpec(name=Path(path).stem, file_name=path, formatting="openai", columns=system)
    if "instruction" in row or "output" in row:
        return DatasetSpec(name=Path(path).stem, file_name=path, formatting="alpaca", columns=optional)
    raise DataError(f"{path}: rows are neither alpaca (instruction/input/output), sharegpt (conversations) "
                    f"nor openai (messages); columns: {printable(', '.join(map(str, row)))}")


def read_dataset(path: str | os.PathLike, limit: int | None = None,
                 encoding: str | None = None) -> tuple[DatasetSpec, Rows]:
    """Rows of an instruction dataset file and the registry entry that reads it."""
    rows = read_table(path, limit=limit, encoding=encoding)
    spec = spec_for(path, [r for _, r in rows])
    spec.encoding = encoding
    return spec, rows


def prompt_text(example: Example) -> str:
    """Everything the model reads (system, user and tool turns), joined by newlines."""
    return "\n".join(m["content"] for m in example.messages if m["role"] != "assistant" and m.get("content"))


def response_text(example: Example) -> str:
    """Everything the model is trained to write (assistant turns), joined by newlines."""
    return "\n".join(m["content"] for m in example.messages if m["role"] == "assistant" and m.get("content"))


# ---------------------------------------------------------------- writing


def alpaca_row(instruction: str, input_text: str, output: str, system: str = "",
               history: list[list[str]] | None = None, **extras: Any) -> dict:
    row = {"instruction": instruction, "input": input_text, "output": output}
    if system:
        row["system"] = system
    if history:
        row["history"] = history
    return {**row, **extras}


def messages_of(record: dict) -> list[dict]:
    """Role/content messages of an alpaca record or a ``{"messages": [...]}`` record."""
    if "messages" in record:
        return record["messages"]
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for user, assistant in record.get("history") or []:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    user = "\n".join(p for p in (record.get("instruction", ""), record.get("input", "")) if p)
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


_CORE_KEYS = {"instruction", "input", "output", "system", "history", "messages", "conversations"}


def render(record: dict, fmt: str) -> dict:
    """One record (alpaca keys, or ``messages`` of role/content) as a row of ``fmt``; other keys are kept."""
    extras = {k: v for k, v in record.items() if k not in _CORE_KEYS}
    if fmt == "alpaca":
        if "messages" not in record:
            return record
        return {**_messages_to_alpaca(record["messages"]), **extras}
    messages = messages_of(record)
    if fmt == "openai":
        return {"messages": messages, **extras}
    if fmt == "sharegpt":
        system = [m["content"] for m in messages[:1] if m["role"] == "system"]
        turns = [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages[len(system):]]
        return {"conversations": turns, **({"system": system[0]} if system else {}), **extras}
    raise DataError(f"unknown output format '{fmt}' (choose from {', '.join(FORMATS)})")


def _messages_to_alpaca(messages: list[dict]) -> dict:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    roles = [m["role"] for m in turns]
    if len(turns) < 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise DataError(f"cannot write roles {roles} as alpaca rows (need user/assistant pairs); use sharegpt")
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    return alpaca_row(turns[-2]["content"], "", turns[-1]["content"], system, history)


def write_rows(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write rows as JSON Lines (``.jsonl``) or an indented JSON array (``.json``), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        raise DataError(f"{path}: output must be .jsonl or .json, not '{suffix or '(none)'}'")
    atomic_write_text(path, text)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file beside ``path`` and rename it over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut leaves the old file or the new one
        os.chmod(tmp, mode)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
