"""Presets: one raw row -> one instruction record, for the shapes raw data usually has.

A preset is a factory ``make(opts, rows) -> Converter``; it may look at all rows first (the
label set of a classification file, the entity types of an NER file), and the converter
turns one row into one record. A record is an alpaca dict (instruction/input/output
[+ system]) or, for dialogue, ``{"messages": [...]}``. A row that cannot become a sample
raises ``Skip`` (counted as dropped, with the reason); a column that does not exist
raises DataError.

Default instructions come in Chinese and English; ``lang="auto"`` picks Chinese when the
rows' text is mostly CJK. The formats follow the seeds so models trained on them can be
scored by ``instill.evaluate``: classification input ``文本：…,类型选项：a, b`` (seed 000/004)
answered by the bare label; NER answered by one ``{"entity_text", "entity_label"}`` JSON
object per line, or ``没有找到任何实体`` (seed 003).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from instill.errors import DataError
from instill.evaluate.classify import parse_label_set
from instill.evaluate.ner import ENTITY_LABEL_KEYS, ENTITY_TEXT_KEYS, NONE_MARKER
from instill.prep.io import Rows, fill_template, get_field, text_of

Record = dict[str, Any]


@dataclass
class Converter:
    """Turns one raw row into a record; ``note`` says what the preset inferred from the whole file."""

    convert: Callable[[dict, str], Record]
    note: str = ""


class Skip(Exception):
    """This row yields no sample; the message is the reason counted in the summary."""


@dataclass
class ConvertOptions:
    preset: str = "generic"
    lang: str = "auto"  # zh | en | auto
    instruction: str | None = None  # overrides the preset's default instruction
    system: str = ""
    output_regex: str | None = None  # keep only rows whose output matches (re.search)
    keep_columns: list[str] = field(default_factory=list)  # copied from the raw row into each record
    # generic / records
    instruction_template: str | None = None
    input_column: str | None = None
    output_column: str | None = None
    input_template: str | None = None
    output_template: str | None = None
    # classification
    text_field: str = "text"
    label_field: str | None = None
    choices_field: str | None = None
    choices: list[str] | None = None
    # ner
    entities_field: str = "entities"
    label_map: dict[str, str] | None = None
    # qa
    context_field: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    # summarization
    article_field: str = "article"
    summary_field: str = "summary"
    # dialogue
    turns_field: str | None = None
    system_field: str | None = None


# ---------------------------------------------------------------- language

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z\u3400-\u9fff\uf900-\ufaff]")


def is_chinese(texts: list[str]) -> bool:
    """True when CJK characters are at least 30% of the letters in ``texts``."""
    joined = "".join(texts)
    letters = len(_LETTER.findall(joined))
    return letters > 0 and len(_CJK.findall(joined)) / letters >= 0.3


def _lang(opts: ConvertOptions, rows: Rows, fields: list[str]) -> str:
    if opts.lang in ("zh", "en"):
        return opts.lang
    if opts.lang != "auto":
        raise DataError(f"--lang must be zh, en or auto, got '{opts.lang}'")
    sample = []
    for source, row in rows[:50]:
        for ref in fields:
            try:
                sample.append(text_of(get_field(row, ref, source)))
            except DataError:
                continue
    if not sample:  # the named fields are missing: judge by every string in the rows
        sample = [v for _, row in rows[:20] for v in row.values() if isinstance(v, str)]
    return "zh" if is_chinese(sample) else "en"


# ---------------------------------------------------------------- shared pieces


def _text(row: dict, ref: str, source: str) -> str:
    return text_of(get_field(row, ref, source)).strip()


def _require(value: str, what: str) -> str:
    if not value:
        raise Skip(f"empty {what}")
    return value


def _first_present(row: dict, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in row), None)


# ---------------------------------------------------------------- classification

CLS_INSTRUCTION = {
    "zh": "你是一个文本分类领域的专家，你会接收到一段文本和几个潜在的分类选项，请输出文本内容的正确类型",
    "en": "You are an expert in text classification. You will receive a text and several candidate "
          "categories; output the correct category of the text.",
}
CLS_INPUT = {"zh": "文本：{text},类型选项：{choices}", "en": "Text: {text}\nCategories: {choices}"}


def classification_input(text: str, choices: list[str], lang: str) -> str:
    return CLS_INPUT[lang].format(text=text, choices=", ".join(choices))


def classification(opts: ConvertOptions, rows: Rows) -> Converter:
    """text + candidate labels (a list, its string form, or fixed) + label -> the label."""
    first = rows[0][1]
    label_field = opts.label_field or _first_present(first, ("label", "output", "category_label")) or "label"
    choices_field = opts.choices_field
    if choices_field is None and opts.choices is None and "category" in first and label_field != "category":
        choices_field = "category"
    fixed = opts.choices
    if fixed is None and choices_field is None:  # the label set is every label seen in the file
        fixed = sorted({_text(row, label_field, src) for src, row in rows} - {""})
    lang = _lang(opts, rows, [opts.text_field])
    instruction = opts.instruction or CLS_INSTRUCTION[lang]

    def convert(row: dict, source: str) -> Record:
        text = _require(_text(row, opts.text_field, source), "text")
        label = _require(_text(row, label_field, source), "label")
        if fixed is not None:
            choices = list(fixed)
        else:
            try:
                choices = parse_label_set(get_field(row, choices_field, source))
            except DataError as err:
                raise DataError(f"{source}: column '{choices_field}': {err}") from None
        if label not in choices:
            raise Skip("label not among the choices")
        return {"instruction": instruction, "input": classification_input(text, choices, lang), "output": label,
                "label": label, "choices": choices}

    note = f"labels from the data: {', '.join(fixed)}" if opts.choices is None and fixed is not None else ""
    return Converter(convert, note)


# ---------------------------------------------------------------- ner

# chinese_ner_sft (ccfbdci) entity labels -> the names seed 003 trains on.
CCFBDCI_LABELS = {"GPE": "地理实体", "PER": "人名", "ORG": "组织", "LOC": "地点"}
NER_INSTRUCTION = {
    "zh": "你是一个文本实体识别领域的专家，你需要从给定的句子中提取 {labels} 实体. 以 json 格式输出, 如 {example} "
          "注意: 1. 输出的每一行都必须是正确的 json 字符串. 2. 找不到任何实体时, 输出\"" + NONE_MARKER + "\".",
    "en": "You are an expert in named entity recognition. Extract the entities of types {labels} from the given "
          "sentence. Output one JSON object per line, such as {example} Notes: 1. every line must be valid JSON. "
          "2. If there is no entity, output \"" + NONE_MARKER + "\".",
}
NER_INPUT = {"zh": "文本：{text}", "en": "Text: {text}"}


def entity_line(text: str, label: str) -> str:
    return json.dumps({"entity_text": text, "entity_label": label}, ensure_ascii=False)


def ner_example(labels: list[str], lang: str) -> str:
    """The one-entity example shown in NER instructions."""
    return entity_line("南京" if lang == "zh" else "Nanjing", "地理实体" if "地理实体" in labels else labels[0])


def ner_instruction(labels: list[str], lang: str) -> str:
    return NER_INSTRUCTION[lang].format(labels="; ".join(labels), example=ner_example(labels, lang))


def _entities(row: dict, field_name: str, source: str, mapping: dict[str, str]) -> list[tuple[str, str]]:
    value = get_field(row, field_name, source)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: column '{field_name}' is not valid JSON: {err.msg}") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{source}: column '{field_name}' must be a list of entities, got {type(value).__name__}")
    found = []
    for i, ent in enumerate(value):
        if not isinstance(ent, dict):
            raise DataError(f"{source}: {field_name}[{i}] must be an object, got {type(ent).__name__}")
        text = next((ent[k] for k in ENTITY_TEXT_KEYS if k in ent), None)
        label = next((ent[k] for k in ENTITY_LABEL_KEYS if k in ent), None)
        if label is None and ent.get("entity_names"):
            label = ent["entity_names"][0]
        if not isinstance(text, str) or not isinstance(label, str):
            raise DataError(f"{source}: {field_name}[{i}] needs entity_text and entity_label (or entity_names); "
                            f"has {', '.join(ent)}")
        found.append((text, mapping.get(label, label)))
    return found


def ner(opts: ConvertOptions, rows: Rows) -> Converter:
    """text + entity list -> one JSON object per entity per line, or the none-marker."""
    mapping = opts.label_map if opts.label_map is not None else CCFBDCI_LABELS
    seen: dict[str, None] = dict.fromkeys(mapping.values())  # map order first, then first appearance
    used: set[str] = set()
    for source, row in rows:
        for _, label in _entities(row, opts.entities_field, source, mapping):
            used.add(label)
            seen.setdefault(label)
    labels = [label for label in seen if label in used] or list(seen)
    if not labels:
        raise DataError(f"{rows[0][0]}: no entity labels found in '{opts.entities_field}' and no --label-map given")
    lang = _lang(opts, rows, [opts.text_field])
    instruction = opts.instruction or ner_instruction(labels, lang)

    def convert(row: dict, source: str) -> Record:
        text = _require(_text(row, opts.text_field, source), "text")
        entities = _entities(row, opts.entities_field, source, mapping)
        output = "\n".join(entity_line(t, label) for t, label in entities) or NONE_MARKER
        return {"instruction": instruction, "input": NER_INPUT[lang].format(text=text), "output": output}

    return Converter(convert, f"entity labels: {'; '.join(labels)}")


# ---------------------------------------------------------------- qa / summarization

QA_INSTRUCTION = {
    "zh": ("请根据上下文回答问题。", "请回答以下问题。"),
    "en": ("Answer the question based on the context.", "Answer the following question."),
}
QA_INPUT = {"zh": "上下文：{context}\n问题：{question}", "en": "Context: {context}\nQuestion: {question}"}
SUM_INSTRUCTION = {"zh": "请总结以下文本。", "en": "Summarize the following text."}


def _answer_text(value: Any) -> str:
    """A plain answer, the first of a list, or SQuAD's {"text": [...]}."""
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, list):
        value = value[0] if value else ""
    return text_of(value).strip()


def qa(opts: ConvertOptions, rows: Rows) -> Converter:
    """(context,) question, answer -> the answer."""
    context_field = opts.context_field or ("context" if "context" in rows[0][1] else None)
    lang = _lang(opts, rows, [opts.question_field])

    def convert(row: dict, source: str) -> Record:
        question = _require(_text(row, opts.question_field, source), "question")
        answer = _require(_answer_text(get_field(row, opts.answer_field, source)), "answer")
        context = _text(row, context_field, source) if context_field else ""
        with_context, without = QA_INSTRUCTION[lang]
        if context:
            return {"instruction": opts.instruction or with_context,
                    "input": QA_INPUT[lang].format(context=context, question=question), "output": answer}
        return {"instruction": opts.instruction or without, "input": question, "output": answer}

    return Converter(convert)


def summarization(opts: ConvertOptions, rows: Rows) -> Converter:
    """article, summary -> the summary."""
    lang = _lang(opts, rows, [opts.article_field])
    instruction = opts.instruction or SUM_INSTRUCTION[lang]

    def convert(row: dict, source: str) -> Record:
        article = _require(_text(row, opts.article_field, source), "article")
        summary = _require(_text(row, opts.summary_field, source), "summary")
        return {"instruction": instruction, "input": article, "output": summary}

    return Converter(convert)


# ---------------------------------------------------------------- dialogue

_TURN_FIELDS = ("conversation", "conversations", "messages", "dialogue", "dialog", "turns")
_USER_KEYS = ("human", "user", "question", "q", "prompt")
_ASSISTANT_KEYS = ("assistant", "gpt", "bot", "answer", "a", "response")
_ROLE_NAMES = {
    "user": "user", "human": "user", "用户": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "助手": "assistant", "system": "system",
}


def _dialogue_messages(turns: Any, source: str, field_name: str) -> list[dict]:
    """Pairs ({human, assistant} per item) or tagged turns ({role|from, content|value}) -> messages."""
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: column '{field_name}' is not valid JSON: {err.msg}") from None
    if not isinstance(turns, list) or not turns:
        raise Skip("empty dialogue")
    messages: list[dict] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{source}: {field_name}[{i}] must be an object, got {type(turn).__name__}")
        user_key = _first_present(turn, _USER_KEYS)
        assistant_key = _first_present(turn, _ASSISTANT_KEYS)
        if user_key and assistant_key:
            messages += [{"role": "user", "content": text_of(turn[user_key])},
                         {"role": "assistant", "content": text_of(turn[assistant_key])}]
            continue
        role_key = _first_present(turn, ("role", "from", "speaker"))
        content_key = _first_present(turn, ("content", "value", "text"))
        role = _ROLE_NAMES.get(str(turn.get(role_key, "")).lower()) if role_key else None
        if role is None or content_key is None:
            raise DataError(f"{source}: {field_name}[{i}] is neither a {{human, assistant}} pair nor a "
                            f"{{role, content}} turn (keys: {', '.join(turn)})")
        messages.append({"role": role, "content": text_of(turn[content_key])})
    return messages


def _check_dialogue(messages: list[dict]) -> None:
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    roles = [m["role"] for m in body]
    if not body or roles != ["user", "assistant"] * (len(body) // 2) or len(body) % 2:
        raise Skip("dialogue turns do not alternate user/assistant ending on assistant")
    if any(not m["content"].strip() for m in body):
        raise Skip("dialogue has an empty turn")


def dialogue(opts: ConvertOptions, rows: Rows) -> Converter:
    """A list of turns -> a multi-turn conversation (written as sharegpt by default)."""
    turns_field = opts.turns_field or _first_present(rows[0][1], _TURN_FIELDS)
    if turns_field is None:
        raise DataError(f"{rows[0][0]}: no turn list found (looked for {', '.join(_TURN_FIELDS)}); set --turns-field")

    def convert(row: dict, source: str) -> Record:
        messages = _dialogue_messages(get_field(row, turns_field, source), source, turns_field)
        system = _text(row, opts.system_field, source) if opts.system_field else ""
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        _check_dialogue(messages)
        return {"messages": messages}

    return Converter(convert)


# ---------------------------------------------------------------- generic / records


def _filled(row: dict, source: str, column: str | None, template: str | None) -> str:
    if template is not None:
        return fill_template(template, row, source).strip()
    if column is not None:
        return _text(row, column, source)
    return ""


def generic(opts: ConvertOptions, rows: Rows) -> Converter:
    """A fixed (or templated) instruction; input and output from columns or ``{column}`` templates."""
    if opts.instruction is None and opts.instruction_template is None:
        raise DataError("the generic preset needs --instruction, --instruction-file or --instruction-template")
    if opts.output_column is None and opts.output_template is None:
        raise DataError("say where the answer is: --output-column or --output-template")

    def convert(row: dict, source: str) -> Record:
        instruction = _filled(row, source, None, opts.instruction_template) or opts.instruction or ""
        return {"instruction": _require(instruction.strip(), "instruction"),
                "input": _filled(row, source, opts.input_column, opts.input_template),
                "output": _require(_filled(row, source, opts.output_column, opts.output_template), "output")}

    return Converter(convert)


def records(opts: ConvertOptions, rows: Rows) -> Converter:
    """Any columns -> an instruction template such as "根据症状诊断疾病：{symptoms}" -> an output column/template."""
    if opts.instruction_template is None:
        raise DataError('the records preset needs --instruction-template, e.g. "根据症状诊断疾病：{symptoms}"')
    return generic(opts, rows)


PRESETS: dict[str, Callable[[ConvertOptions, Rows], Converter]] = {
    "generic": generic,
    "records": records,
    "classification": classification,
    "ner": ner,
    "qa": qa,
    "summarization": summarization,
    "dialogue": dialogue,
}
