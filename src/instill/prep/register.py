"""Add or update one entry of a dataset_info.json, leaving every other entry as it was.

The entry is written in LLaMA-Factory's schema so the same file works there too:
openai-shaped rows are registered as sharegpt with role/content tags (LLaMA-Factory's
documented "OpenAI format"), not as our ``openai`` extension. ``file_name`` is relative
to the folder of dataset_info.json. Before anything is written every row is read back
through ``instill.data.formats``, so a registered dataset is one ``instill train`` can
load. The file is replaced atomically (temp file + ``os.replace``); two processes
registering at the same moment can still lose one of the two updates (no lock).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from instill.data.formats import to_example
from instill.data.registry import INFO_FILE, DatasetSpec
from instill.errors import DataError
from instill.prep.io import atomic_write_text, write_rows
from instill.textfile import read_text

OPENAI_AS_SHAREGPT_TAGS = {
    "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
    "system_tag": "system", "observation_tag": "tool",
}


def entry_for(rows: list[dict]) -> dict[str, Any]:
    """formatting/columns/tags for these rows (without file_name); the first row tells the shape."""
    row = rows[0]
    system = {"system": "system"} if any("system" in r for r in rows) else {}
    if "conversations" in row:
        return {"formatting": "sharegpt", "columns": {"messages": "conversations", **system}}
    if "messages" in row:
        turns = row["messages"]
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return {"formatting": "sharegpt", "columns": {"messages": "messages", **system}}
        return {"formatting": "sharegpt", "columns": {"messages": "messages", **system},
                "tags": OPENAI_AS_SHAREGPT_TAGS}
    columns = {k: k for k in ("system", "history") if any(k in r for r in rows)}
    return {"columns": columns} if columns else {}


def verify(rows: list[dict], entry: dict[str, Any], path: Path, sources: list[str] | None = None) -> None:
    """Read every row as training will; the first bad one raises DataError naming it: by `sources` (where rows
    passed through unchanged came from), else by its place in `path`."""
    spec = DatasetSpec(name=path.stem, file_name=str(path), formatting=entry.get("formatting", "alpaca"),
                       columns=dict(entry.get("columns", {})), tags=dict(entry.get("tags", {})))
    index_style = path.suffix.lower() == ".json"
    for i, row in enumerate(rows):
        to_example(row, spec, sources[i] if sources else f"{path}:#{i}" if index_style else f"{path}:{i + 1}")


def register(info_path: str | os.PathLike, name: str, data_path: str | os.PathLike, rows: list[dict],
             check: bool = True) -> str:
    """Point entry ``name`` of ``info_path`` at ``data_path`` (holding ``rows``); returns "added" or "updated"."""
    info_path, data_path = Path(info_path), Path(data_path)
    if info_path.is_dir() or info_path.name != INFO_FILE:
        raise DataError(f"--register {info_path}: give the path of a {INFO_FILE} file (it is created if missing)")
    if not name:
        raise DataError("--register needs a dataset name (--name)")
    if not rows:
        raise DataError(f"{data_path}: no rows to register")
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(read_text(info_path) or "{}")
        except json.JSONDecodeError as err:
            where = f"{info_path}:{err.lineno}:{err.colno}"
            raise DataError(f"{where}: invalid JSON ({err.msg}); not touching it") from None
        except (RecursionError, ValueError) as err:
            raise DataError(f"{info_path}: invalid JSON ({type(err).__name__}); not touching it") from None
        if not isinstance(info, dict):
            raise DataError(f"{info_path}: expected a JSON object of dataset entries; not touching it")
    entry = {"file_name": os.path.relpath(data_path.resolve(), info_path.parent.resolve()), **entry_for(rows)}
    if check:
        verify(rows, entry, data_path)
    action = "updated" if name in info else "added"
    info[name] = entry
    atomic_write_text(info_path, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    return action


def add_output_args(parser: Any, formats: bool = False) -> None:
    """--out, --register, --name (and --format) shared by every command that writes a dataset."""
    parser.add_argument("--out", required=True, help="output file: .jsonl (one row a line) or .json (an array)")
    if formats:
        parser.add_argument("--format", choices=("alpaca", "sharegpt", "openai"), default=None,
                            help="row shape written (default: alpaca; sharegpt for dialogue)")
    parser.add_argument("--register", metavar="DATASET_INFO_JSON",
                        help="add/update an entry for the output in this dataset_info.json")
    parser.add_argument("--name", help="entry name for --register (default: the output file's stem)")


def save(rows: list[dict], out: str | os.PathLike, register_to: str | None = None, name: str | None = None,
         sources: list[str] | None = None) -> str:
    """Check every row loads as training data, write them atomically, optionally register them. `sources`: the
    input file:line of each row that passes through unchanged, so a bad one is named where the user can fix it.

    Returns the summary line's tail ("-> path; added 'name' in dataset_info.json").
    """

    if not rows:
        raise DataError(f"nothing to write to {out}: every row was dropped")
    verify(rows, entry_for(rows), Path(out), sources)  # every row must load for training, checked before writing
    path = write_rows(rows, out)
    tail = f"-> {path}"
    if register_to:
        name = name or path.stem
        action = register(register_to, name, path, rows, check=False)
        tail += f"; {action} '{name}' in {register_to}"
    return tail
