"""`instill data convert`: a raw table (JSON/JSONL/CSV/TSV/Excel/parquet) -> an instruction dataset."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from instill.console import say
from instill.errors import DataError
from instill.prep.io import FORMATS, Rows, get_field, read_table, render
from instill.prep.presets import PRESETS, ConvertOptions, Record, Skip
from instill.prep.register import add_output_args, save
from instill.prep.summary import Tally, progress
from instill.textfile import read_text


def convert_rows(rows: Rows, opts: ConvertOptions) -> tuple[list[Record], Tally, str]:
    """Records for the rows that make samples, the tally of those that do not, and the preset's note."""
    if opts.preset not in PRESETS:
        raise DataError(f"unknown preset '{opts.preset}' (choose from {', '.join(PRESETS)})")
    converter = PRESETS[opts.preset](opts, rows)
    pattern = _compile(opts.output_regex)
    tally = Tally("convert")
    out: list[Record] = []
    for source, row in progress(rows, "Converting", total=len(rows)):
        tally.rows_in += 1
        try:
            record = converter.convert(row, source)
        except Skip as why:
            tally.drop(str(why))
            continue
        if pattern is not None and not pattern.search(_answer(record)):
            tally.drop(f"output not matching /{opts.output_regex}/")
            continue
        if opts.system:
            record = _with_system(record, opts.system)
        for column in opts.keep_columns:
            record[column] = get_field(row, column, source)
        out.append(record)
    tally.rows_out = len(out)
    return out, tally, converter.note


def _compile(regex: str | None) -> re.Pattern | None:
    if regex is None:
        return None
    try:
        return re.compile(regex)
    except re.error as err:
        raise DataError(f"--output-regex {regex!r} is not a valid regular expression: {err}") from None


def _answer(record: Record) -> str:
    if "messages" in record:
        return record["messages"][-1]["content"]
    return record["output"]


def _with_system(record: Record, system: str) -> Record:
    if "messages" not in record:
        return {"system": system, **record}
    if record["messages"][0]["role"] == "system":
        return record
    return {**record, "messages": [{"role": "system", "content": system}, *record["messages"]]}


# ---------------------------------------------------------------- CLI


def _label_map(value: str | None) -> dict[str, str] | None:
    """'GPE=地理实体,PER=人名' or a JSON file holding {"GPE": "地理实体", ...}."""
    if value is None:
        return None
    if Path(value).is_file():
        try:
            mapping = json.loads(read_text(value, error=DataError))
        except json.JSONDecodeError as err:
            raise DataError(f"--label-map {value}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(mapping, dict):
            raise DataError(f"--label-map {value}: expected a JSON object of raw label -> name")
        return {str(k): str(v) for k, v in mapping.items()}
    pairs = [p.split("=", 1) for p in re.split(r"[,，]", value) if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise DataError(f"--label-map {value!r}: write RAW=NAME pairs separated by commas, or give a JSON file")
    return {k.strip(): v.strip() for k, v in pairs}


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [p.strip() for p in re.split(r"[,，]", value) if p.strip()]


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    instruction = args.instruction
    if args.instruction_file:
        path = Path(args.instruction_file)
        if not path.is_file():
            raise DataError(f"--instruction-file {path}: no such file")
        instruction = read_text(path, error=DataError).strip()
    preset = args.preset or ("records" if args.instruction_template else "generic")
    return ConvertOptions(
        preset=preset, lang=args.lang, instruction=instruction, system=args.system or "",
        output_regex=args.output_regex, keep_columns=_split(args.keep_columns) or [],
        instruction_template=args.instruction_template, input_column=args.input_column,
        output_column=args.output_column, input_template=args.input_template, output_template=args.output_template,
        text_field=args.text_field, label_field=args.label_field, choices_field=args.choices_field,
        choices=_split(args.choices), entities_field=args.entities_field, label_map=_label_map(args.label_map),
        context_field=args.context_field, question_field=args.question_field, answer_field=args.answer_field,
        article_field=args.article_field, summary_field=args.summary_field,
        turns_field=args.turns_field, system_field=args.system_field,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("input")
    src.add_argument("--input", required=True, help="JSON, JSONL, CSV, TSV, Excel (.xlsx) or parquet file")
    src.add_argument("--sheet", help="Excel sheet name (default: the first sheet)")
    src.add_argument("--no-header", action="store_true", help="CSV/TSV/Excel has no header row: columns are 0, 1, ...")
    src.add_argument("--limit", type=int, help="read only the first N rows")
    what = parser.add_argument_group("what to build")
    what.add_argument("--preset", choices=sorted(PRESETS), help="row shape of the raw data (default: generic)")
    what.add_argument("--lang", default="auto", choices=("auto", "zh", "en"), help="language of default instructions")
    group = what.add_mutually_exclusive_group()
    group.add_argument("--instruction", help="instruction text (overrides the preset's default)")
    group.add_argument("--instruction-file", help="file holding the instruction text")
    what.add_argument("--instruction-template", help='instruction built per row, e.g. "根据症状诊断疾病：{symptoms}"')
    what.add_argument("--input-column", help="column (name or 0-based index) for the input")
    what.add_argument("--output-column", help="column (name or 0-based index) for the output")
    what.add_argument("--input-template", help="input built from columns, e.g. '标题：{title}\\n{body}'")
    what.add_argument("--output-template", help="output built from columns")
    what.add_argument("--system", help="system prompt added to every row")
    what.add_argument("--output-regex",
                      help="keep only rows whose output matches this regex (seed 002: '```yaml|跳过')")
    what.add_argument("--keep-columns", help="comma-separated raw columns copied into every row (e.g. an id)")
    fields = parser.add_argument_group("preset fields (names, 0-based indexes or dotted paths)")
    fields.add_argument("--text-field", default="text", help="classification/ner: the text (default: text)")
    fields.add_argument("--label-field", help="classification: the gold label (default: label or output)")
    fields.add_argument("--choices-field", help="classification: candidate labels, list or 'a, b' (default: category)")
    fields.add_argument("--choices", help="classification: fixed candidate labels 'a,b,c' (default: all labels seen)")
    fields.add_argument("--entities-field", default="entities", help="ner: the entity list (default: entities)")
    fields.add_argument("--label-map", help="ner: RAW=NAME,... or a JSON file (default: ccfbdci GPE/PER/ORG/LOC names)")
    fields.add_argument("--context-field", help="qa: context (default: context, if present)")
    fields.add_argument("--question-field", default="question")
    fields.add_argument("--answer-field", default="answer")
    fields.add_argument("--article-field", default="article")
    fields.add_argument("--summary-field", default="summary")
    fields.add_argument("--turns-field", help="dialogue: the turn list (default: conversation/conversations/messages)")
    fields.add_argument("--system-field", help="dialogue: a column holding the system prompt")
    add_output_args(parser, formats=True)


def main(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    sheet = int(args.sheet) if args.sheet and args.sheet.isdigit() else args.sheet
    rows = read_table(args.input, header=not args.no_header, sheet=sheet, limit=args.limit,
                      encoding=args.encoding)
    records, tally, note = convert_rows(rows, opts)
    fmt = args.format or ("sharegpt" if opts.preset == "dialogue" else "alpaca")
    if fmt not in FORMATS:
        raise DataError(f"unknown --format {fmt}")
    if note:
        say(f"{opts.preset}: {note}")
    tail = save([render(r, fmt) for r in records], args.out, args.register, args.name)
    say(tally.line(tail))
    return 0
