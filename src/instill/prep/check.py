"""`instill data check config.yaml`: the data doctor.

Loads every dataset of a training config (``dataset`` and ``eval_dataset``) the way
``instill train`` will: the registry, the row formats, the config's placeholders, its
chat template and its model's real tokenizer, ``cutoff_len`` and masking options; a
``stage: dpo``/``rm``/``kto`` config's data as preference pairs or KTO rows (data/pairs.py); an online
stage's (``grpo``, ``rloo``, ``distill``) as prompts (data/prompts.py), counting the prompts longer than
``max_prompt_length`` (training drops them) and the rows with no reference answer (a label-based reward
such as ``label_match`` has nothing to compare with). Unlike
training, it does not stop at the first bad row: every bad row is reported as
``file:line: reason`` (JSON Lines files are read line by line, so an unparseable line
does not hide the lines after it). It also counts the samples that ``cutoff_len`` would
truncate, whose answer would be shortened, and whose answer would be lost entirely
(dropped by training). Every row of each file is checked: ``num_samples`` and
``max_samples`` are not applied.

Exit status: 0 when every row loads, 1 when any row is bad (or, with ``--strict``, any
answer would be lost), 2 for a config, registry, model or template error.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from instill.config import load_config
from instill.console import percentile_line, say
from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.pairs import PAIR_KINDS, closing_tokens, fit, split_prompt, to_kto, to_pair
from instill.data.prompts import ANSWER_COLUMN, prompt_rows, to_prompt
from instill.data.readers import DATA_EXTENSIONS, jsonl_rows
from instill.data.registry import DatasetSpec, read_rows, resolve
from instill.data.templates import ChatTemplate, TemplateChoice, get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, EncodeSummary, encode
from instill.errors import ConfigError, DataError, EncodingError, TemplateError
from instill.hub import resolve_model_args
from instill.model.load import load_tokenizer
from instill.prep.summary import progress
from instill.stage_facts import STAGE_FACTS
from instill.textfile import codec_name, undecodable


@dataclass
class DatasetReport:
    name: str
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens before truncation
    truncated: int = 0
    answer_cut: int = 0
    answer_lost: int = 0
    # prompts (online stages): the max_prompt_length held against, and rows with no reference answer
    prompt_limit: int | None = None
    no_answer: int | None = None

    def line(self, cutoff_len: int) -> str:
        if self.lengths:
            lengths = f"tokens {percentile_line(self.lengths)}"
        else:
            lengths = "no loadable rows"
        if self.no_answer is not None:
            return (f"{self.name}: {self.rows} rows, {len(self.errors)} bad; prompt {lengths}; {self.truncated} "
                    f"longer than max_prompt_length {self.prompt_limit} (dropped by training); {self.no_answer} "
                    "with no reference answer")
        return (f"{self.name}: {self.rows} rows, {len(self.errors)} bad; {lengths}; {self.truncated} truncated at "
                f"cutoff_len {cutoff_len} (answer shortened in {self.answer_cut}, answer lost in {self.answer_lost})")


Item = tuple[str, "dict | DataError"]


def _is_jsonl(path: Path) -> bool:
    if path.suffix.lower() == ".jsonl":
        return True
    if path.suffix.lower() != ".json":
        return False
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        head = f.read(4096).lstrip()
    return not head.startswith("[")


def _jsonl_items(path: Path, encoding: str | None) -> Iterator[Item]:
    """Every line of a JSON Lines file, parsed by the one reader: the row, or the error that line has.
    A file that does not decode is not a bad row: it stops the check (EncodingError)."""
    with path.open(encoding=codec_name(encoding)) as f:
        try:
            for lineno, line in enumerate(f, start=1):
                try:
                    yield from jsonl_rows(path, [line], lineno)
                except DataError as err:
                    yield f"{path}:{lineno}", err
        except UnicodeError:  # UnicodeDecodeError, or UTF-16 without a byte-order mark
            raise EncodingError(undecodable(path, encoding)) from None


def _reader_items(spec: DatasetSpec, dataset_dir: str) -> Iterator[Item]:
    """Rows through the registry; an error that stops the reader is reported once (a file that does not
    decode stops the check)."""
    try:
        yield from read_rows(spec, dataset_dir)
    except EncodingError:
        raise
    except DataError as err:
        yield spec.file_name or spec.name, err


def dataset_items(spec: DatasetSpec, dataset_dir: str) -> Iterator[Item]:
    """Every row of a registry entry (num_samples not applied), with per-line errors for JSON Lines files."""
    spec = replace(spec, num_samples=None)
    local = Path(dataset_dir) / spec.file_name if spec.file_name else None
    if local is None or not local.exists() or spec.split != "train":
        yield from _reader_items(spec, dataset_dir)  # hub entries, and the registry's own error messages
        return
    files = [local] if local.is_file() else sorted(
        p for p in local.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DATA_EXTENSIONS)
    if not files:
        yield from _reader_items(spec, dataset_dir)
        return
    for path in files:
        if _is_jsonl(path):
            yield from _jsonl_items(path, spec.encoding)
        else:
            yield from _reader_items(replace(spec, file_name=str(path.resolve())), dataset_dir)


def _loadable(spec: DatasetSpec, data_args: Any, report: DatasetReport) -> Iterator[tuple[str, dict]]:
    """Every row that reads, counted; rows the reader refuses are recorded as bad."""
    for source, item in progress(dataset_items(spec, data_args.dataset_dir), f"Checking {spec.name}"):
        report.rows += 1
        if isinstance(item, DataError):
            report.errors.append(str(item))
        else:
            yield source, item


def _bad(report: DatasetReport, source: str, err: Exception) -> None:
    message = str(err)
    report.errors.append(message if message.startswith(source) else f"{source}: {message}")


def check_dataset(spec: DatasetSpec, data_args: Any, template: ChatTemplate, kind: str = "conversation",
                  max_prompt_length: int | None = None) -> DatasetReport:
    """Every row of one dataset read as a stage reading `kind` data reads it (stage_facts.py);
    `max_prompt_length`: the online stages' limit on prompts."""
    report, options = DatasetReport(spec.name), EncodeOptions.from_args(data_args)
    if kind in PAIR_KINDS:
        return _check_pairs(spec, data_args, template, options, kind, report)
    if kind == "prompts":
        return _check_prompts(spec, data_args, template, max_prompt_length, report)
    for source, row in _loadable(spec, data_args, report):
        try:
            example: Example = to_example(row, spec, source)
            if data_args.dataset_placeholders:
                example = fill_placeholders(example, data_args.dataset_placeholders)
            encoded = encode(example, template, options)
        except (DataError, TemplateError) as err:
            _bad(report, source, err)
            continue
        report.lengths.append(encoded.original_tokens)
        report.truncated += encoded.truncated
        report.answer_cut += encoded.response_cut
        report.answer_lost += all(label == IGNORE_INDEX for label in encoded.labels)
    return report


def _check_pairs(spec: DatasetSpec, data_args: Any, template: ChatTemplate, options: EncodeOptions, kind: str,
                 report: DatasetReport) -> DatasetReport:
    """Preference (`pairs`) or KTO rows, each converted and tokenized as training does (data/pairs.py);
    a length is the prompt plus the longer answer, what `cutoff_len` is held against."""
    convert, group = (to_pair, 2) if kind == "pairs" else (to_kto, 1)
    closing, summary = closing_tokens(template), EncodeSummary()
    for source, row in _loadable(spec, data_args, report):
        try:
            conversations = convert(row, spec, source).conversations
            [(prompt, answers)] = split_prompt(conversations, template, group, options)
        except (DataError, TemplateError) as err:
            _bad(report, source, err)
            continue
        report.lengths.append(len(prompt) + max(len(a) for a in answers))
        fit(prompt, answers, options.cutoff_len, closing, summary)
    report.answer_lost = sum(summary.dropped.values())
    report.truncated = summary.truncated + report.answer_lost  # a dropped pair was cut too
    report.answer_cut = summary.response_cut
    return report


def _check_prompts(spec: DatasetSpec, data_args: Any, template: ChatTemplate, max_prompt_length: int | None,
                   report: DatasetReport) -> DatasetReport:
    """Prompt rows (data/prompts.py), rendered and counted as the online stages render them."""
    examples = []
    for source, row in _loadable(spec, data_args, report):
        try:
            example = to_prompt(row, spec, source)
            if data_args.dataset_placeholders:
                example = fill_placeholders(example, data_args.dataset_placeholders)
            template.render(example.messages, example.tools, add_generation_prompt=True)
        except (DataError, TemplateError) as err:
            _bad(report, source, err)
            continue
        examples.append(example)
    if examples:
        _, summary = prompt_rows(examples, template, data_args.allow_special_tokens_in_data)
        report.lengths = summary.prompt_lengths
    report.prompt_limit = max_prompt_length
    report.truncated = sum(n > max_prompt_length for n in report.lengths) if max_prompt_length else 0
    report.answer_lost = report.truncated  # the rows training drops
    report.no_answer = sum(ANSWER_COLUMN not in e.extras for e in examples)
    return report


def check_config(config_path: str, overrides: list[str]) -> tuple[list[DatasetReport], int]:
    """A report per dataset of the config, read as the config's stage reads it, and its cutoff_len."""
    config = load_config(config_path, overrides)
    data = config.data
    names = list(dict.fromkeys((data.dataset or []) + (data.eval_dataset or [])))
    if not names:
        raise ConfigError(f"{config_path}: no 'dataset' or 'eval_dataset' to check")
    kind = STAGE_FACTS[config.method.stage].data_kind
    specs = resolve(names, data.dataset_dir, kind)
    m = config.model
    tokenizer = load_tokenizer(m, resolve_model_args(m))
    template = get_template(TemplateChoice.of(data), tokenizer)
    limit = config.method.max_prompt_length
    return [check_dataset(spec, data, template, kind, limit) for spec in specs], data.cutoff_len


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training YAML (the one you give `instill train`)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    parser.add_argument("--max-errors", type=int, default=50, help="bad rows printed per dataset (all are counted)")
    parser.add_argument("--strict", action="store_true", help="also fail when a sample would lose its whole answer")


def main(args: argparse.Namespace) -> int:
    reports, cutoff_len = check_config(args.config, args.overrides)
    failed = False
    for report in reports:
        for message in report.errors[: args.max_errors]:
            print(message, flush=True)
        if len(report.errors) > args.max_errors:
            print(f"... and {len(report.errors) - args.max_errors} more bad rows in {report.name}", flush=True)
        say(report.line(cutoff_len))
        failed = failed or bool(report.errors) or (args.strict and report.answer_lost > 0)
    bad = sum(len(r.errors) for r in reports)
    say(f"check: {sum(r.rows for r in reports)} rows in {len(reports)} datasets, {bad} bad"
        f"{'' if failed else ' — ready to train'}")
    return 1 if failed else 0
