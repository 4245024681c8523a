"""`instill data augment`: several instruction phrasings per row, and shuffled classification choices.

Variants come from a file (one instruction a line, or a JSON list), from the built-in
lists per preset (``VARIANTS``), or from rule-based rewrites of each row's own
instruction (``--synonyms``: ``rule_variants``). Each input row yields up to
``--per-row`` new rows with distinct variants (plus the original unless
``--no-original``). Rows made by ``convert --preset classification`` carry ``label`` and
``choices``; their candidate list is reshuffled in every new row and the answer must
still be the label, or the row is dropped.

Also here, as library functions (seed 001 §3.3.1.2 and §3.3.2.1): ``fill_templates``
(instructions from a template and slot values) and ``rule_variants`` (phrase
substitutions).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import string
from collections.abc import Iterable
from pathlib import Path

from instill.console import say
from instill.errors import DataError
from instill.evaluate.ner import parse_entities
from instill.prep.io import read_dataset
from instill.prep.presets import (
    CLS_INPUT,
    CLS_INSTRUCTION,
    classification_input,
    is_chinese,
    ner_example,
    ner_instruction,
)
from instill.prep.register import add_output_args, save
from instill.prep.summary import Tally, progress
from instill.textfile import read_text

VARIANTS: dict[str, dict[str, list[str]]] = {
    "classification": {
        "zh": [CLS_INSTRUCTION["zh"],
               "请阅读下面的文本，并从给定的类型选项中选出最合适的一个，只输出类型名称。",
               "判断以下文本属于哪一个类别，答案必须是类型选项之一。",
               "根据文本内容，从候选类别中选择正确的分类。",
               "下面给出一段文本和若干类型选项，请给出该文本所属的类型。"],
        "en": [CLS_INSTRUCTION["en"],
               "Read the text and pick the most suitable category from the options. Answer with the category only.",
               "Which of the given categories does the following text belong to? Answer with one of the options.",
               "Classify the text into one of the candidate categories."],
    },
    "ner": {  # {labels} and {example} are filled from the dataset's entity labels
        "zh": ["{default}",
               "请从下面的句子中找出所有 {labels} 类型的实体，每行输出一个 JSON，例如 {example}；"
               "如果没有实体，输出\"没有找到任何实体\"。",
               "识别文本中的命名实体（类型：{labels}），以每行一个 json 的格式输出，如 {example}。"
               "没有实体时输出\"没有找到任何实体\"。",
               "抽取句子里的 {labels} 实体。输出格式：每行一个形如 {example} 的 JSON；若找不到任何实体，"
               "输出\"没有找到任何实体\"。"],
        "en": ["{default}",
               "Find every entity of type {labels} in the sentence and output one JSON object per line, "
               "e.g. {example}. If there is none, output \"没有找到任何实体\".",
               "Extract the {labels} entities from the text, one JSON line each like {example}; "
               "output \"没有找到任何实体\" when there are none."],
    },
    "qa": {
        "zh": ["请根据上下文回答问题。", "阅读以下材料，然后回答问题。", "结合给出的上下文，简要回答下面的问题。",
               "请依据提供的内容作答。"],
        "en": ["Answer the question based on the context.", "Read the passage, then answer the question.",
               "Using the context given, answer the question briefly."],
    },
    "summarization": {
        "zh": ["请总结以下文本。", "用几句话概括下面这段文字的主要内容。", "为以下文章写一段简短的摘要。",
               "提炼下文的要点，生成摘要。"],
        "en": ["Summarize the following text.", "Write a short summary of the passage below.",
               "Give the main points of the following text in a few sentences."],
    },
}


# ---------------------------------------------------------------- library: template fill, rule variants


def fill_templates(template: str, slots: dict[str, list[str]], n: int | None = None, seed: int = 0) -> list[str]:
    """Every filling of ``{slot}`` placeholders with the given values (a seeded sample of ``n`` if set).

    ``fill_templates("解释{概念}的{方面}在{领域}中的应用", {"概念": [...], "方面": [...], "领域": [...]})``.
    """
    names = list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f is not None))
    missing = [name for name in names if not slots.get(name)]
    if missing:
        raise DataError(f"template {template!r}: no values for slot(s) {', '.join(missing)}")
    combos = list(itertools.product(*(slots[name] for name in names)))
    if n is not None and n < len(combos):
        combos = random.Random(seed).sample(combos, n)
    return [template.format(**dict(zip(names, combo))) for combo in combos]


def rule_variants(text: str, synonyms: dict[str, list[str]], limit: int = 50) -> list[str]:
    """Rewrites of ``text`` with phrases swapped for their synonyms (longest phrase first), original excluded.

    ``rule_variants("将这段文本翻译成英文", {"这段文本": ["这段文字", "以下内容"], "翻译成": ["转为"]})``
    -> ``["将这段文本转为英文", "将这段文字翻译成英文", ...]``.
    """
    pieces: list[list[str]] = []
    i = 0
    phrases = sorted((p for p in synonyms if p), key=len, reverse=True)
    literal = ""
    while i < len(text):
        phrase = next((p for p in phrases if text.startswith(p, i)), None)
        if phrase is None:
            literal += text[i]
            i += 1
            continue
        if literal:
            pieces.append([literal])
            literal = ""
        pieces.append([phrase, *[s for s in synonyms[phrase] if s != phrase]])
        i += len(phrase)
    if literal:
        pieces.append([literal])
    out = []
    for combo in itertools.product(*pieces):
        candidate = "".join(combo)
        if candidate != text and candidate not in out:
            out.append(candidate)
            if len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------- augment


def builtin_variants(preset: str, rows: list[dict]) -> list[str]:
    """The built-in instruction variants of ``preset`` in the rows' language (NER: filled with their labels)."""
    if preset not in VARIANTS:
        raise DataError(f"no built-in variants for preset '{preset}' (have: {', '.join(VARIANTS)}); "
                        "give --instruction-variants FILE")
    lang = "zh" if is_chinese([r.get("instruction", "") + r.get("input", "") for r in rows[:50]]) else "en"
    variants = VARIANTS[preset][lang]
    if preset != "ner":
        return variants
    labels: dict[str, None] = {}
    for row in rows:
        for _, label in parse_entities(row.get("output", "")) or []:
            labels.setdefault(label)
    if not labels:
        raise DataError("no entity labels found in the outputs; give --instruction-variants FILE")
    names = list(labels)
    fill = {"labels": "; ".join(names), "example": ner_example(names, lang), "default": ner_instruction(names, lang)}
    return [v.format(**fill) for v in variants]


def read_variants(path: str | Path) -> list[str]:
    """One instruction per line, or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--instruction-variants {path}: no such file")
    text = read_text(path, error=DataError)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    else:
        items = text.splitlines()
    variants = list(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    if not variants:
        raise DataError(f"{path}: no instruction variants in it")
    return variants


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """A JSON object mapping a phrase to its alternatives."""
    try:
        value = json.loads(read_text(path, error=DataError))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"--synonyms {path}: cannot read JSON ({err})") from None
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()):
        raise DataError(f'--synonyms {path}: expected {{"phrase": ["alternative", ...], ...}}')
    return value


def _cls_text(row: dict) -> tuple[str, str] | None:
    """(lang, text) of an input built by ``classification_input``, or None if the input has another shape."""
    for lang, pattern in CLS_INPUT.items():
        head, _, rest = pattern.partition("{text}")
        tail = rest.replace("{choices}", ", ".join(row["choices"]))
        value = row.get("input", "")
        if value.startswith(head) and value.endswith(tail) and len(value) >= len(head) + len(tail):
            return lang, value[len(head): len(value) - len(tail)]
    return None


def _shuffled(choices: list[str], rng: random.Random) -> list[str]:
    order = list(choices)
    for _ in range(5):  # a different order when there is one
        rng.shuffle(order)
        if order != choices or len(set(choices)) < 2:
            break
    return order


def augment_rows(rows: Iterable[tuple[str, dict]], per_row: int, variants: list[str] | None = None,
                 synonyms: dict[str, list[str]] | None = None, keep_original: bool = True,
                 shuffle_choices: bool = True, seed: int = 42) -> tuple[list[dict], Tally]:
    """Alpaca rows with up to ``per_row`` new instruction variants each (see the module docstring)."""
    rng = random.Random(seed)
    tally = Tally("augment")
    out: list[dict] = []
    for source, row in progress(list(rows), "Augmenting"):
        tally.rows_in += 1
        if "instruction" not in row:
            raise DataError(f"{source}: augment needs alpaca rows (instruction/input/output)")
        if keep_original:
            out.append(row)
        pool = variants if variants is not None else rule_variants(row["instruction"], synonyms or {})
        pool = [v for v in pool if v != row["instruction"]]
        if not pool:
            tally.drop("no variant differs from the row's instruction")
            continue
        is_cls = isinstance(row.get("choices"), list) and "label" in row
        for variant in rng.sample(pool, min(per_row, len(pool))):
            new = {**row, "instruction": variant}
            if is_cls:
                if new["output"] != new["label"] or new["label"] not in new["choices"]:
                    tally.drop("output differs from the label or the label is not a choice")
                    continue
                found = _cls_text(row) if shuffle_choices else None
                if found is not None:
                    lang, text = found
                    choices = _shuffled(row["choices"], rng)
                    new.update(input=classification_input(text, choices, lang), choices=choices)
            out.append(new)
    tally.rows_out = len(out)
    return out, tally


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="alpaca dataset file (.jsonl/.json), e.g. from instill data convert")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--instruction-variants", help="file: one instruction per line, or a JSON list")
    source.add_argument("--preset", choices=sorted(VARIANTS), help="use the built-in variants of a preset")
    source.add_argument("--synonyms", help='JSON {"phrase": ["alternative", ...]}: rewrite each row\'s instruction')
    parser.add_argument("--per-row", type=int, default=2, help="new rows per input row (default 2)")
    parser.add_argument("--no-original", action="store_true", help="do not keep the original rows")
    parser.add_argument("--no-shuffle-choices", action="store_true", help="keep classification choice order")
    parser.add_argument("--seed", type=int, default=42)
    add_output_args(parser)


def main(args: argparse.Namespace) -> int:
    if args.per_row < 1:
        raise DataError("--per-row must be at least 1")
    _, rows = read_dataset(args.dataset, encoding=args.encoding)
    variants, synonyms = None, None
    if args.instruction_variants:
        variants = read_variants(args.instruction_variants)
    elif args.preset:
        variants = builtin_variants(args.preset, [r for _, r in rows])
    else:
        synonyms = read_synonyms(args.synonyms)
    out, tally = augment_rows(rows, args.per_row, variants, synonyms, not args.no_original,
                              not args.no_shuffle_choices, args.seed)
    say(tally.line(save(out, args.out, args.register, args.name)))
    return 0
