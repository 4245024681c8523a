"""dataset_info.json -> DatasetSpec -> raw rows.

The file uses LLaMA-Factory's schema unchanged, so a user's existing
``dataset_info.json`` works here. Each entry names one source (``file_name``,
``hf_hub_url``, ``ms_hub_url``, ``om_hub_url`` or ``script_url``), a
``formatting`` ("alpaca", "sharegpt", or our extension "openai"), optional
``columns`` and ``tags`` maps, and loading options (``subset``, ``split``,
``folder``, ``revision``, ``num_samples``, ``ranking``), and our extension ``encoding`` for local
text files that are not UTF-8 (``"encoding": "gbk"``).

Where we differ from LLaMA-Factory, and why:

* Every entry is checked when the file is loaded: unknown keys (with a
  "did you mean"), wrong types, a missing source, unknown formatting, and
  ``columns``/``tags`` that the entry's formatting would silently ignore are
  errors. An entry the stage cannot read (``ranking: true`` outside dpo/rm,
  a ``kto_tag`` column outside kto, plain conversations for dpo/rm/kto,
  video/audio columns) is refused only when such an entry is *selected*
  by :func:`resolve`, so LLaMA-Factory's own dataset_info.json, which mixes
  SFT, DPO and KTO entries, still loads.
* A local ``file_name`` wins over hub urls when an entry has both (LLaMA-Factory
  prefers the hub), so "download it and point file_name at it" is the offline fix.
* Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``/``TRANSFORMERS_OFFLINE``)
  a hub entry fails at once with a clear message; the hub cache is not consulted.
* ``num_samples`` takes a seeded random subset (seed 42 unless given), kept in
  file order; asking for more rows than exist takes every row once and draws the
  rest again with replacement (LLaMA-Factory's upsampling, made reproducible).

Row sources (used in every error message) are ``path:LINE`` for text files
whose rows are lines (jsonl, and csv: the 1-based line where the record starts,
the header being line 1) and ``path:#INDEX`` (0-based record index) for JSON
arrays, parquet files and hub datasets (``url[split]:#INDEX``).
"""

from __future__ import annotations

import difflib
import json
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instill.console import say
from instill.data.readers import DATA_EXTENSIONS, file_rows
from instill.errors import DataError
from instill.stage_facts import PAIR_KINDS
from instill.textfile import codec_name, printable, read_text

INFO_FILE = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")

SOURCE_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url")
ENTRY_KEYS = SOURCE_KEYS + (
    "formatting", "ranking", "subset", "split", "folder", "num_samples", "revision", "columns", "tags", "encoding",
)
COMMON_COLUMNS = ("system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag")
FORMAT_COLUMNS = {
    "alpaca": COMMON_COLUMNS + ("prompt", "query", "response", "history"),
    "sharegpt": COMMON_COLUMNS + ("messages",),
    "openai": COMMON_COLUMNS + ("messages",),
}
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")

DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "openai": {"messages": "messages", "tools": "tools"},
}
SHAREGPT_TAGS = {
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
    "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
}
OPENAI_TAGS = {
    "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
    "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system",
}
DEFAULT_TAGS = {"alpaca": {}, "sharegpt": SHAREGPT_TAGS, "openai": OPENAI_TAGS}

_TRUE = {"1", "true", "yes", "on"}
_SAMPLE_SEED = 42


@dataclass
class DatasetSpec:
    """One dataset_info.json entry; ``columns`` and ``tags`` hold the formatting's defaults merged with the entry's."""

    name: str
    file_name: str | None = None
    hf_hub_url: str | None = None
    ms_hub_url: str | None = None
    om_hub_url: str | None = None
    script_url: str | None = None
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    revision: str | None = None
    encoding: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.formatting not in FORMATTINGS:
            raise DataError(f"dataset '{self.name}': unknown formatting '{self.formatting}' ({', '.join(FORMATTINGS)})")
        self.columns = {**DEFAULT_COLUMNS[self.formatting], **self.columns}
        self.tags = {**DEFAULT_TAGS[self.formatting], **self.tags}

    def unsupported(self, kind: str = "conversation") -> str | None:
        """Why a stage reading `kind` data ("conversation", "text", "pairs", "kto") cannot use this entry."""
        if kind == "pairs" and not self.ranking:
            return "is not preference data: stage dpo/rm needs an entry with ranking: true and chosen/rejected columns"
        if kind == "kto" and "kto_tag" not in self.columns:
            return "is not KTO data: stage kto needs an entry with a kto_tag column (a true/false label per answer)"
        if kind not in PAIR_KINDS and self.ranking:
            return "is preference data (ranking: true): train it with stage: dpo or rm, not sft/pt"
        if kind not in PAIR_KINDS and "kto_tag" in self.columns:
            return "is KTO data (columns.kto_tag): train it with stage: kto, not sft/pt"
        if kind == "kto" and self.ranking:
            return "is preference data (ranking: true): train it with stage: dpo or rm, not kto"
        media = [c for c in ("videos", "audios") if c in self.columns]
        if media:
            return (f"has {'/'.join(media)} columns; video and audio inputs are not built (images are): "
                    "transformers' video processors need torchvision, which has no CPU-torch build here")
        return None


# ---------------------------------------------------------------- registry file


def load_registry(dataset_dir: str | os.PathLike) -> dict[str, DatasetSpec]:
    """Read and check every entry of ``<dataset_dir>/dataset_info.json``."""
    path = Path(dataset_dir) / INFO_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; dataset_dir must be the folder holding {INFO_FILE} (LLaMA-Factory format)")
    text = read_text(path)
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    except (RecursionError, ValueError) as err:
        why = "nested too deeply to read" if isinstance(err, RecursionError) else str(err).splitlines()[0][:200]
        raise DataError(f"{path}: invalid JSON: {why}") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object mapping dataset names to entries, got {type(info).__name__}")
    return {name: _parse_entry(name, entry, path) for name, entry in info.items()}


def resolve(names: Iterable[str] | str, dataset_dir: str | os.PathLike, kind: str = "conversation"
            ) -> list[DatasetSpec]:
    """Look up dataset names (a list, or "a,b" as LLaMA-Factory writes them); refuse unknown names and
    entries a stage reading `kind` data cannot use."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    registry = load_registry(dataset_dir)
    path = Path(dataset_dir) / INFO_FILE
    specs = []
    for name in names:
        if name not in registry:
            near = difflib.get_close_matches(name, list(registry), n=5, cutoff=0.5)
            hint = f"nearest: {', '.join(near)}" if near else f"known: {', '.join(sorted(registry)[:20]) or 'none'}"
            raise DataError(f"{path}: no dataset named '{name}' ({hint})")
        reason = registry[name].unsupported(kind)
        if reason:
            raise DataError(f"{path}: dataset '{name}' {reason}")
        specs.append(registry[name])
    return specs


def _parse_entry(name: str, entry: Any, path: Path) -> DatasetSpec:
    where = f"{path}: dataset '{printable(name)}'"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: entry must be a JSON object, got {type(entry).__name__}")
    _check_keys(entry, ENTRY_KEYS, where, "key")
    if not any(entry.get(k) for k in SOURCE_KEYS):
        raise DataError(f"{where}: no source; set one of {', '.join(SOURCE_KEYS)}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        hint = _hint(formatting, FORMATTINGS)
        raise DataError(f"{where}: unknown formatting {formatting!r}{hint} (known: {', '.join(FORMATTINGS)})")
    for key in SOURCE_KEYS + ("subset", "split", "folder", "revision", "encoding"):
        if key in entry and not isinstance(entry[key], str):
            raise DataError(f"{where}: '{key}' must be a string, got {json.dumps(entry[key])}")
    if not isinstance(entry.get("ranking", False), bool):
        raise DataError(f"{where}: 'ranking' must be true or false, got {json.dumps(entry['ranking'])}")
    if entry.get("encoding") is not None:
        try:
            codec_name(entry["encoding"])  # an unknown name fails here, when the file is loaded
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        if not entry.get("file_name"):
            raise DataError(f"{where}: 'encoding' applies to a local file_name only")
    n = entry.get("num_samples")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise DataError(f"{where}: 'num_samples' must be a positive integer, got {json.dumps(n)}")
    columns = _string_map(entry, "columns", FORMAT_COLUMNS[formatting], where, formatting)
    tags = _string_map(entry, "tags", TAG_KEYS if formatting != "alpaca" else (), where, formatting)
    options = SOURCE_KEYS + ("ranking", "subset", "split", "folder", "num_samples", "revision", "encoding")
    return DatasetSpec(
        name=name, formatting=formatting, columns=columns, tags=tags, **{k: entry[k] for k in options if k in entry}
    )


def _string_map(entry: dict, key: str, allowed: tuple[str, ...], where: str, formatting: str) -> dict[str, str]:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"{where}: '{key}' must be a JSON object, got {json.dumps(value)}")
    if value and not allowed:
        raise DataError(f"{where}: '{key}' only applies to sharegpt/openai formatting, not {formatting}")
    for k, v in value.items():
        if k not in allowed:
            known = {"columns": sorted(set().union(*FORMAT_COLUMNS.values())), "tags": TAG_KEYS}[key]
            if k in known:
                takes = ", ".join(allowed)
                raise DataError(f"{where}: {key}.{k} does not apply to {formatting} formatting (it takes: {takes})")
            raise DataError(f"{where}: unknown {key} key '{printable(k)}'{_hint(k, allowed)} (known: {', '.join(allowed)})")
        if not isinstance(v, str) or not v:
            raise DataError(f"{where}: {key}.{k} must be a non-empty string, got {json.dumps(v)}")
    return dict(value)


def _check_keys(entry: dict, allowed: tuple[str, ...], where: str, what: str) -> None:
    for k in entry:
        if k not in allowed:
            raise DataError(f"{where}: unknown {what} '{printable(k)}'{_hint(k, allowed)}")


def _hint(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


# ---------------------------------------------------------------- rows


def read_rows(
    spec: DatasetSpec, dataset_dir: str | os.PathLike, seed: int = _SAMPLE_SEED
) -> Iterator[tuple[str, dict]]:
    """Yield ``(source, row)`` for every row of the entry (a seeded ``num_samples`` subset if set)."""
    rows = _nonempty(spec, _source_rows(spec, Path(dataset_dir)))
    if spec.num_samples is None:
        yield from rows
    else:
        yield from _sample(list(rows), spec.num_samples, seed)


def _source_rows(spec: DatasetSpec, dataset_dir: Path) -> Iterator[tuple[str, dict]]:
    if spec.file_name:
        return _local_rows(spec, dataset_dir / spec.file_name)
    use_ms = os.environ.get("USE_MODELSCOPE_HUB", "").lower() in _TRUE
    if spec.ms_hub_url and (use_ms or not spec.hf_hub_url):
        return _modelscope_rows(spec)
    if spec.hf_hub_url:
        return _hf_rows(spec)
    if spec.script_url:
        if spec.script_url.endswith(".py"):
            raise DataError(f"dataset '{spec.name}': script_url {spec.script_url!r} is a loading script; datasets>=4 "
                            "no longer runs them: convert the data to json/jsonl/csv/parquet and use file_name")
        return _local_rows(spec, dataset_dir / spec.script_url)
    raise DataError(f"dataset '{spec.name}': only om_hub_url is set and the OpenMind hub is not supported; "
                    "download the data and point file_name at the local copy")


def _nonempty(spec: DatasetSpec, rows: Iterator[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
    count = 0
    for item in rows:
        count += 1
        yield item
    if count == 0:
        raise DataError(f"dataset '{spec.name}': no rows found")


def _sample(rows: list, n: int, seed: int) -> list:
    rng = random.Random(seed)
    if n <= len(rows):
        return [rows[i] for i in sorted(rng.sample(range(len(rows)), n))]
    return rows + [rows[rng.randrange(len(rows))] for _ in range(n - len(rows))]


def _local_rows(spec: DatasetSpec, path: Path) -> Iterator[tuple[str, dict]]:
    if spec.split != "train":
        raise DataError(f"dataset '{spec.name}': split '{spec.split}' only applies to hub datasets; "
                        "a local file has one split (drop 'split' or point file_name at that split's file)")
    if path.is_dir():
        files = _folder_files(spec, path)
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"dataset '{spec.name}': file_name {str(path)!r} does not exist")
    count = 0
    for file in files:
        for item in file_rows(file, encoding=spec.encoding):
            count += 1
            yield item
    if count == 0:
        what = "empty file (no rows)" if path.is_file() else f"no rows in {', '.join(f.name for f in files)}"
        raise DataError(f"{path}: {what} (dataset '{spec.name}')")


def _folder_files(spec: DatasetSpec, path: Path) -> list[Path]:
    """The data files of a folder dataset; files of other types are named in a note, never skipped silently."""
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file() and p.suffix.lower() in DATA_EXTENSIONS]
    ignored = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in files]
    if not files:
        listed = f" (it holds: {', '.join(ignored[:8])}{' ...' if len(ignored) > 8 else ''})" if ignored else " (it is empty)"
        raise DataError(f"dataset '{spec.name}': folder {path} has no data files ({', '.join(DATA_EXTENSIONS)}; "
                        f"subfolders are not read){listed}")
    if ignored:
        say(f"dataset '{spec.name}': folder {path}: reading {', '.join(f.name for f in files)}; ignoring "
            f"{', '.join(ignored)} (not {'/'.join(DATA_EXTENSIONS)}; convert .txt/.xlsx with `instill data convert`)")
    types = sorted({f.suffix.lower() for f in files})
    if len(types) > 1:
        say(f"dataset '{spec.name}': folder {path} mixes file types ({', '.join(types)}); all are read as one dataset")
    return files


# ---------------------------------------------------------------- hubs


def _offline() -> bool:
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").lower() in _TRUE for n in names)


def _offline_error(spec: DatasetSpec, hub: str, url: str) -> DataError:
    return DataError(f"dataset '{spec.name}': cannot reach the {hub} (offline?) to fetch '{url}'; "
                     "download it and point file_name at the local copy")


def _is_connection_error(err: BaseException) -> bool:
    """True if the error, or any error it was raised from, is a network failure."""
    markers = ("ConnectionError", "ConnectError", "ConnectTimeout", "Timeout", "TimeoutException",
               "OfflineModeIsEnabled", "LocalEntryNotFoundError", "MaxRetryError", "NameResolutionError",
               "TransportError", "gaierror")
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if any(cls.__name__ in markers for cls in type(err).__mro__):
            return True
        err = err.__cause__ or err.__context__
    return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _hf_rows(spec: DatasetSpec) -> Iterator[tuple[str, dict]]:
    url = spec.hf_hub_url
    if _offline():
        raise _offline_error(spec, "Hugging Face Hub", url)
    try:
        import datasets

        ds = datasets.load_dataset(
            url, name=spec.subset, split=spec.split, data_dir=spec.folder, revision=spec.revision
        )
    except Exception as err:  # any hub failure becomes one terminal line
        if _is_connection_error(err):
            raise _offline_error(spec, "Hugging Face Hub", url) from err
        reason = _first_line(err)
        raise DataError(f"dataset '{spec.name}': cannot load '{url}' from the Hugging Face Hub: {reason}") from err
    return ((f"{url}[{spec.split}]:#{i}", row) for i, row in enumerate(ds))


def _modelscope_rows(spec: DatasetSpec) -> Iterator[tuple[str, dict]]:
    url = spec.ms_hub_url
    try:
        from modelscope import MsDataset
    except ImportError:
        raise DataError(
            f"dataset '{spec.name}': '{url}' is on ModelScope but the modelscope package is not installed; "
            "pip install modelscope, or download it and point file_name at the local copy"
        ) from None
    try:
        options = {"version": spec.revision} if spec.revision else {}
        ds = MsDataset.load(url, subset_name=spec.subset, data_dir=spec.folder, split=spec.split, **options)
        if hasattr(ds, "to_hf_dataset"):
            ds = ds.to_hf_dataset()
    except Exception as err:  # any hub failure becomes one terminal line
        if _is_connection_error(err):
            raise _offline_error(spec, "ModelScope hub", url) from err
        raise DataError(f"dataset '{spec.name}': cannot load '{url}' from ModelScope: {_first_line(err)}") from err
    return ((f"{url}[{spec.split}]:#{i}", dict(row)) for i, row in enumerate(ds))
