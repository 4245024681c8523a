"""`instill data generate`: self-instruct (seed 001 §3.3.1.1) and template fill (§3.3.1.2).

Self-instruct. Each request shows the model a few demonstrations (``--demos`` seed tasks
plus up to two tasks it already wrote) and asks for ``--tasks-per-prompt`` new
instruction/input/output triples as JSON lines. A candidate is kept only if it parses,
its instruction and output lengths are within bounds, its instruction matches no
``--blacklist`` regex (by default: tasks a text model cannot do, such as images), and its
instruction's ROUGE-L F (jieba words, ``rouge_chinese``) against every seed and kept
instruction is below ``--rouge-threshold`` (0.7, as in the Self-Instruct paper).
Rounds repeat until ``--num`` rows are kept, ``--max-rounds`` is reached, or
``--patience`` rounds in a row keep nothing. Every row records its provenance.

Template fill. Instructions are made from templates and slot values (``fill_templates``)
and the model writes each answer.

The model is a local directory (``instill.infer.engine``, batched) or any
OpenAI-compatible endpoint (``chat.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from instill.console import say
from instill.errors import DataError, InstillError
from instill.prep.augment import fill_templates
from instill.prep.io import read_dataset
from instill.prep.llm_client import ChatBackend, LocalBackend, OpenAIBackend, Sampling
from instill.prep.presets import is_chinese
from instill.prep.register import add_output_args, save
from instill.prep.summary import Tally, bar, progress
from instill.textfile import read_text

DEFAULT_BLACKLIST = (r"(?i)\b(images?|pictures?|photos?|graphs?|draw|plot|diagram|flowchart|video|audio|music)\b"
                     r"|图片|图像|照片|画一|绘制|视频|音频|流程图")

PROMPTS = {
    "zh": ("你需要提出 {n} 个新的、多样化的任务，用于训练语言模型遵循指令。要求：\n"
           "1. 不要重复下面示例中的指令；措辞和任务类型要多样（问答、分类、改写、摘要、推理、写作、代码等）。\n"
           "2. 每个任务是一个 JSON 对象，包含 \"instruction\"（指令）、\"input\"（输入，没有时为空字符串）"
           "和 \"output\"（高质量的回答）。\n"
           "3. 每行输出一个 JSON 对象，不要输出其他内容。\n\n示例：\n{examples}\n\n新的任务："),
    "en": ("Come up with {n} new, diverse tasks for training a language model to follow instructions.\n"
           "1. Do not repeat the instructions of the examples; vary the wording and the kind of task "
           "(QA, classification, rewriting, summarization, reasoning, writing, code, ...).\n"
           "2. Each task is a JSON object with \"instruction\", \"input\" (an empty string if none) and "
           "\"output\" (a high-quality answer).\n"
           "3. Write one JSON object per line and nothing else.\n\nExamples:\n{examples}\n\nNew tasks:"),
}


# ---------------------------------------------------------------- parsing and filtering

_decoder = json.JSONDecoder()


def parse_tasks(text: str) -> list[dict]:
    """Every JSON object (or list of objects) in the text that has an ``instruction`` key."""
    tasks: list[dict] = []
    i = 0
    while True:
        starts = [j for j in (text.find("{", i), text.find("[", i)) if j >= 0]
        if not starts:
            return tasks
        i = min(starts)
        try:
            value, end = _decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        items = value if isinstance(value, list) else [value]
        tasks += [item for item in items if isinstance(item, dict) and "instruction" in item]
        i = end


def _words(text: str) -> str:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return " ".join(w for w in jieba.lcut(text) if w.strip())


class Similarity:
    """Highest ROUGE-L F of a text against a growing pool (jieba words, ``rouge_chinese``)."""

    def __init__(self) -> None:
        from rouge_chinese import Rouge

        self.rouge = Rouge(metrics=["rouge-l"])
        self.pool: list[tuple[str, str]] = []  # (words, original)

    def add(self, text: str) -> None:
        words = _words(text)
        if words:
            self.pool.append((words, text))

    def nearest(self, text: str) -> tuple[float, str]:
        words = _words(text)
        if not words or not self.pool:
            return 0.0, ""
        scores = self.rouge.get_scores([words] * len(self.pool), [w for w, _ in self.pool])
        best = max(range(len(scores)), key=lambda k: scores[k]["rouge-l"]["f"])
        return scores[best]["rouge-l"]["f"], self.pool[best][1]


@dataclass
class Limits:
    min_instruction: int = 4
    max_instruction: int = 500
    min_output: int = 1
    max_output: int = 4000
    blacklist: str | None = DEFAULT_BLACKLIST


def rejection(task: dict, limits: Limits) -> str | None:
    """Why a parsed task is unusable, or None."""
    instruction, output, value = task.get("instruction"), task.get("output"), task.get("input", "")
    if not isinstance(instruction, str) or not instruction.strip():
        return "no instruction"
    if not isinstance(output, str) or not output.strip():
        return "no output"
    if value is not None and not isinstance(value, str):
        return "input is not text"
    n, m = len(instruction.strip()), len(output.strip())
    if n < limits.min_instruction:
        return "instruction too short"
    if n > limits.max_instruction:
        return "instruction too long"
    if m < limits.min_output:
        return "output too short"
    if m > limits.max_output:
        return "output too long"
    if limits.blacklist and re.search(limits.blacklist, instruction):
        return "instruction matches the blacklist"
    return None


# ---------------------------------------------------------------- self-instruct


@dataclass
class SelfInstructConfig:
    num: int = 100
    tasks_per_prompt: int = 5
    requests_per_round: int = 8
    demos: int = 3
    generated_demos: int = 2
    rouge_threshold: float = 0.7
    max_rounds: int = 50
    patience: int = 5
    lang: str = "auto"
    seed: int = 42
    limits: Limits = field(default_factory=Limits)


def _demo_text(task: dict) -> str:
    return json.dumps({k: task.get(k, "") for k in ("instruction", "input", "output")}, ensure_ascii=False)


def self_instruct(seeds: list[tuple[str, dict]], backend: ChatBackend,
                  cfg: SelfInstructConfig) -> tuple[list[dict], Tally, dict[str, Any]]:
    """Generated rows (with provenance), the candidate tally, and reply counts.

    If the model fails after some rows were kept, generation stops there and
    ``counts["error"]`` says why; with nothing kept the error is raised.
    """

    if not seeds:
        raise DataError("self-instruct needs at least one seed task")
    lang = cfg.lang if cfg.lang != "auto" else (
        "zh" if is_chinese([t.get("instruction", "") for _, t in seeds]) else "en")
    rng = random.Random(cfg.seed)
    similarity = Similarity()
    for _, task in seeds:
        similarity.add(task.get("instruction", ""))
    kept: list[dict] = []
    tally, replies = Tally("generate"), {"replies": 0, "unparseable": 0, "rounds": 0}
    idle = 0
    shown = bar(cfg.num, "Generating", unit="task")
    while len(kept) < cfg.num and replies["rounds"] < cfg.max_rounds and idle < cfg.patience:
        replies["rounds"] += 1
        demo_sets = [_demos(seeds, kept, cfg, rng) for _ in range(cfg.requests_per_round)]
        prompts = [PROMPTS[lang].format(n=cfg.tasks_per_prompt, examples="\n".join(_demo_text(t) for _, t in demos))
                   for demos in demo_sets]
        try:
            answers = backend.chat([[{"role": "user", "content": p}] for p in prompts])
        except InstillError as err:
            if not kept:
                raise
            replies["error"] = str(err)  # keep what earlier rounds made
            break
        before = len(kept)
        for request, (answer, demos) in enumerate(zip(answers, demo_sets)):
            replies["replies"] += 1
            tasks = parse_tasks(answer)
            if not tasks:
                replies["unparseable"] += 1
            for task in tasks:
                if len(kept) >= cfg.num:
                    break
                tally.rows_in += 1
                reason = rejection(task, cfg.limits)
                score, nearest = (0.0, "") if reason else similarity.nearest(task["instruction"])
                if reason is None and score >= cfg.rouge_threshold:
                    reason = f"too similar (ROUGE-L >= {cfg.rouge_threshold})"
                if reason:
                    tally.drop(reason)
                    continue
                row = {"instruction": task["instruction"].strip(), "input": (task.get("input") or "").strip(),
                       "output": task["output"].strip(),
                       "provenance": {"method": "self-instruct", "model": backend.name, "round": replies["rounds"],
                                      "request": request, "demos": [src for src, _ in demos],
                                      "rouge_l_max": round(score, 4), "nearest": nearest}}
                kept.append(row)
                similarity.add(row["instruction"])
        shown.update(len(kept) - before)
        idle = 0 if len(kept) > before else idle + 1
    shown.close()
    tally.rows_out = len(kept)
    return kept, tally, replies


def _demos(seeds: list[tuple[str, dict]], kept: list[dict], cfg: SelfInstructConfig,
           rng: random.Random) -> list[tuple[str, dict]]:
    chosen = rng.sample(seeds, min(cfg.demos, len(seeds)))
    picks = rng.sample(range(len(kept)), min(cfg.generated_demos, len(kept)))
    return chosen + [(f"generated:#{i}", kept[i]) for i in picks]


# ---------------------------------------------------------------- template fill


def answer_instructions(instructions: list[str], backend: ChatBackend, batch: int = 8) -> tuple[list[dict], Tally]:
    """The model answers each instruction; empty answers are dropped."""
    tally = Tally("generate")
    rows: list[dict] = []
    for start in progress(range(0, len(instructions), batch), "Answering", unit="batch"):
        chunk = instructions[start:start + batch]
        answers = backend.chat([[{"role": "user", "content": text}] for text in chunk])
        for text, answer in zip(chunk, answers):
            tally.rows_in += 1
            if not answer.strip():
                tally.drop("empty answer")
                continue
            rows.append({"instruction": text, "input": "", "output": answer.strip(),
                         "provenance": {"method": "template-fill", "model": backend.name}})
    tally.rows_out = len(rows)
    return rows, tally


def read_templates(template_file: str, slots_file: str, n: int | None, seed: int) -> list[str]:
    """Instructions from a template file (one a line) and a JSON {slot: [values]} file."""
    try:
        templates = [t.strip() for t in read_text(template_file, error=DataError).splitlines() if t.strip()]
        slots = json.loads(read_text(slots_file, error=DataError))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read --template-file/--slots: {err}") from None
    if not isinstance(slots, dict):
        raise DataError(f'{slots_file}: expected {{"slot": ["value", ...]}}')
    out = [text for template in templates for text in fill_templates(template, slots)]
    if n is not None and n < len(out):
        out = random.Random(seed).sample(out, n)
    return out


# ---------------------------------------------------------------- CLI


def backend_from_args(args: argparse.Namespace) -> ChatBackend:
    sampling = Sampling(args.temperature, args.top_p, args.max_new_tokens)
    api_base = args.api_base
    model = args.model
    if api_base is None and model and re.match(r"https?://", model):
        api_base, model = model, None
    if api_base:
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not key:
            raise InstillError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
        return OpenAIBackend(api_base, args.api_model or model or "default", key, sampling, args.timeout, args.retries)
    if not model:
        raise InstillError("say which model writes the data: --model PATH (local) or --model/--api-base URL")
    return LocalBackend(model, sampling, args.template, args.batch_size, args.seed)


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to generate (self-instruct from seeds, or template fill)")
    what.add_argument("--seed-file", help="seed tasks: alpaca rows (instruction/input/output), .jsonl or .json")
    what.add_argument("--template-file", help="template fill: instruction templates, one a line, with {slot}s")
    what.add_argument("--slots", help='template fill: JSON {"slot": ["value", ...]}')
    what.add_argument("--num", type=int, default=100, help="rows to keep (self-instruct) or to answer (templates)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="local model directory, or the URL of an OpenAI-compatible API")
    model.add_argument("--api-base", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model.add_argument("--api-model", help="model name sent to the API (default: --model or 'default')")
    model.add_argument("--api-key-env", help="environment variable holding the API key (e.g. OPENAI_API_KEY)")
    model.add_argument("--timeout", type=float, default=120.0, help="seconds per API request")
    model.add_argument("--retries", type=int, default=2, help="API retries on 429/5xx/connection errors")
    model.add_argument("--template", default="auto", help="chat template for a local model (default: its own)")
    model.add_argument("--batch-size", type=int, default=8, help="local model: prompts per batch")
    model.add_argument("--temperature", type=float, default=0.9)
    model.add_argument("--top-p", type=float, default=0.95)
    model.add_argument("--max-new-tokens", type=int, default=1024)
    filters = parser.add_argument_group("self-instruct filters and rounds")
    filters.add_argument("--rouge-threshold", type=float, default=0.7, help="drop if ROUGE-L to any kept >= this")
    filters.add_argument("--tasks-per-prompt", type=int, default=5)
    filters.add_argument("--requests-per-round", type=int, default=8)
    filters.add_argument("--demos", type=int, default=3, help="seed tasks shown per request")
    filters.add_argument("--max-rounds", type=int, default=50)
    filters.add_argument("--patience", type=int, default=5, help="stop after this many rounds that keep nothing")
    filters.add_argument("--min-instruction-chars", type=int, default=4)
    filters.add_argument("--max-instruction-chars", type=int, default=500)
    filters.add_argument("--min-output-chars", type=int, default=1)
    filters.add_argument("--max-output-chars", type=int, default=4000)
    filters.add_argument("--blacklist", default=DEFAULT_BLACKLIST, help="drop instructions matching this regex "
                         "('' for none; default: tasks needing images/audio)")
    filters.add_argument("--lang", default="auto", choices=("auto", "zh", "en"), help="language of the prompt")
    filters.add_argument("--seed", type=int, default=42)
    add_output_args(parser)


def main(args: argparse.Namespace) -> int:
    if bool(args.template_file) != bool(args.slots) or bool(args.seed_file) == bool(args.template_file):
        raise InstillError("give either --seed-file (self-instruct) or --template-file with --slots (template fill)")
    backend = backend_from_args(args)
    if args.template_file:
        rows, tally = answer_instructions(read_templates(args.template_file, args.slots, args.num, args.seed),
                                          backend, args.batch_size)
        say(tally.line(save(rows, args.out, args.register, args.name)))
        return 0
    _, seeds = read_dataset(args.seed_file, encoding=args.encoding)
    limits = Limits(args.min_instruction_chars, args.max_instruction_chars, args.min_output_chars,
                    args.max_output_chars, args.blacklist or None)
    cfg = SelfInstructConfig(num=args.num, tasks_per_prompt=args.tasks_per_prompt,
                             requests_per_round=args.requests_per_round, demos=args.demos,
                             rouge_threshold=args.rouge_threshold, max_rounds=args.max_rounds,
                             patience=args.patience, lang=args.lang, seed=args.seed, limits=limits)
    rows, tally, replies = self_instruct(seeds, backend, cfg)
    counts = (f"{replies['rounds']} rounds, {replies['replies']} replies ({replies['unparseable']} without a "
              f"parseable task)")
    if not rows:
        say(tally.line(counts))
        raise DataError("no generated task passed the filters; see the counts above")
    say(tally.line(f"{counts}; {save(rows, args.out, args.register, args.name)}"))
    if "error" in replies:
        print(f"instill: error: stopped early, {len(rows)} rows saved: {replies['error']}", file=sys.stderr)
        return 1
    return 0
