"""Reward functions for the online stages (`reward_funcs:`), with trl's signature.

trl calls each as `fn(prompts=..., completions=..., completion_ids=..., **columns)`, the columns
being every other column of the dataset rows by name (one value per completion), and takes one
float per completion back (None: no opinion, left out of that function's mean).

Built in (the names a YAML lists):
- `label_match`: 1 when the answer names the row's label, else 0 — the matcher `instill eval`'s
  classification uses (evaluate/classify.py: `<answer>` tags, `\\boxed{}`, case and width folded).
  The gold label is the row's `label_column` (eval key) or its reference answer (`output`); the
  candidates are `labels`, the row's `choices_column`, or every gold label of the training set.
- `entity_f1`: the NER metric (evaluate/ner.py) on one answer: F1 of its (text, type) entities
  against the reference's.
- `accuracy`: a math answer (`\\boxed{}` or a plain number) equal to the reference, through
  `math-verify` (the `rl` extra).
- `format`: the whole answer is `<think>...</think><answer>...</answer>`; `think_format`: a closed
  `<think>...</think>` followed by an answer.
- `length`: 1 inside `length_range` (completion tokens), falling linearly to 0 at twice the
  distance.
- `json_valid`: the answer (code fences allowed) parses as JSON.
- `repetition`: minus the share of repeated word 3-grams (0 for an answer that never repeats).

Your own: `my_rewards.py:fn` — a function with trl's signature in a file the YAML names (a relative
path is read from the YAML's folder). Loading it runs that file's code. A missing file or name,
or a function that raises or returns the wrong count, stops the run with one line.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.errors import ConfigError, InstillError

RewardFunc = Callable[..., list[float | None]]


class RewardError(InstillError):
    """A reward function failed while training (a plugin that raised, or returned the wrong count)."""


def text_of(completion: Any) -> str:
    """A completion's text: trl passes strings for text prompts, [{"role", "content"}] for conversations."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)


def _column(kwargs: dict, name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * n


# ---------------------------------------------------------------- label_match, entity_f1


def label_match(config: RunConfig, train_rows: Any) -> RewardFunc:
    """1.0 when the answer names the row's gold label, 0.0 otherwise (None: the row has no gold label)."""
    from instill.evaluate.classify import match_label, parse_label_set

    e = config.eval
    gold_column = e.label_column or "output"
    shared: list[str] | None = None
    if e.labels:
        shared = parse_label_set(e.labels)
    elif not e.choices_column:
        if train_rows is None or gold_column not in train_rows.column_names:
            raise ConfigError(f"reward_funcs: label_match needs the gold label in column '{gold_column}' "
                              "(set label_column, or give rows a reference answer)")
        found = [str(v) for v in train_rows[gold_column] if v is not None and str(v).strip()]
        shared = parse_label_set(list(dict.fromkeys(found))) if found else None
        if not shared:
            raise ConfigError("reward_funcs: label_match found no labels; set labels or choices_column")

    def reward(completions: list, **kwargs: Any) -> list[float | None]:
        n = len(completions)
        golds = _column(kwargs, gold_column, n)
        choices = _column(kwargs, e.choices_column, n) if e.choices_column else [shared] * n
        out: list[float | None] = []
        for completion, gold, labels in zip(completions, golds, choices):
            if gold is None or labels is None:
                out.append(None)
                continue
            target = match_label(str(gold), labels)
            out.append(None if target is None else float(match_label(text_of(completion), labels) == target))
        return out

    return reward


def entity_f1(config: RunConfig, train_rows: Any) -> RewardFunc:
    """F1 of the answer's (text, type) entities against the reference's (1.0 when both have none)."""
    from instill.evaluate.ner import parse_entities

    gold_column = config.eval.label_column or "output"

    def reward(completions: list, **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for completion, gold_text in zip(completions, _column(kwargs, gold_column, len(completions))):
            gold = parse_entities(gold_text if isinstance(gold_text, str) else json.dumps(gold_text))
            if gold_text is None or gold is None:
                out.append(None)
                continue
            guess = parse_entities(text_of(completion)) or []
            out.append(_f1(gold, guess))
        return out

    return reward


def _f1(gold: list, guess: list) -> float:
    from collections import Counter

    if not gold and not guess:
        return 1.0
    gold_c = Counter((str(t).strip(), str(k).strip()) for t, k in gold)
    guess_c = Counter((str(t).strip(), str(k).strip()) for t, k in guess)
    tp = sum((gold_c & guess_c).values())
    p = tp / sum(guess_c.values()) if guess_c else 0.0
    r = tp / sum(gold_c.values()) if gold_c else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


# ---------------------------------------------------------------- accuracy (math)


def accuracy(config: RunConfig, train_rows: Any) -> RewardFunc:
    """1.0 when the answer's math (\\boxed{} or a number) equals the reference's, through math-verify."""
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ConfigError("reward_funcs: accuracy needs math-verify; pip install 'instill[rl]' "
                          "(or pip install math-verify)") from None
    gold_column = config.eval.label_column or "output"

    def reward(completions: list, **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for completion, gold_text in zip(completions, _column(kwargs, gold_column, len(completions))):
            gold = parse(str(gold_text)) if gold_text is not None else []
            if not gold:
                out.append(None)
                continue
            out.append(float(verify(gold, parse(text_of(completion)))))
        return out

    return reward


# ---------------------------------------------------------------- rules on the text

_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
_THINK = re.compile(r"^\s*<think>.*?</think>\s*\S", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _rule(pattern: re.Pattern) -> Callable[[RunConfig, Any], RewardFunc]:
    def make(config: RunConfig, train_rows: Any) -> RewardFunc:
        def reward(completions: list, **kwargs: Any) -> list[float | None]:
            return [float(bool(pattern.match(text_of(c)))) for c in completions]
        return reward
    return make


def length(config: RunConfig, train_rows: Any) -> RewardFunc:
    """1.0 inside length_range (completion tokens), linearly down to 0 at twice the distance from it."""
    bounds = config.method.length_range
    if bounds is None:
        raise ConfigError("reward_funcs: length needs length_range: [min, max] (completion tokens)")
    low, high = bounds

    def reward(completions: list, completion_ids: list | None = None, **kwargs: Any) -> list[float | None]:
        sizes = [len(ids) for ids in completion_ids] if completion_ids is not None else \
            [len(text_of(c).split()) for c in completions]
        out: list[float | None] = []
        for n in sizes:
            if low <= n <= high:
                out.append(1.0)
            else:
                edge = low if n < low else high
                out.append(max(0.0, 1.0 - abs(n - edge) / max(edge, 1)))
        return out

    return reward


def json_valid(config: RunConfig, train_rows: Any) -> RewardFunc:
    """1.0 when the answer (a ``` fence allowed) parses as JSON."""
    def reward(completions: list, **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for c in completions:
            text = text_of(c)
            fenced = _FENCE.match(text)
            try:
                json.loads(fenced.group(1) if fenced else text)
                out.append(1.0)
            except (json.JSONDecodeError, ValueError):
                out.append(0.0)
        return out
    return reward


def repetition(config: RunConfig, train_rows: Any) -> RewardFunc:
    """Minus the share of repeated word 3-grams: 0 for an answer that never repeats, toward -1 for a loop."""
    def reward(completions: list, **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for c in completions:
            words = text_of(c).split()
            if len(words) < 4:  # one character per word for CJK text: fall back to characters
                words = list(text_of(c).replace(" ", ""))
            grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
            out.append(-(1 - len(set(grams)) / len(grams)) if grams else 0.0)
        return out
    return reward


BUILT_IN: dict[str, Callable[[RunConfig, Any], RewardFunc]] = {
    "label_match": label_match, "entity_f1": entity_f1, "accuracy": accuracy, "format": _rule(_FORMAT),
    "think_format": _rule(_THINK), "length": length, "json_valid": json_valid, "repetition": repetition,
}


# ---------------------------------------------------------------- your own


def load_plugin(spec: str) -> RewardFunc:
    """The function `name` of `path.py:name` (path as the config resolved it), run only from that file."""
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"reward_funcs: {spec}: no file {path}")
    module_spec = importlib.util.spec_from_file_location(f"instill_reward_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"reward_funcs: {spec}: {path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report it in one line
        raise ConfigError(f"reward_funcs: {spec}: loading {path.name} raised {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = ", ".join(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                          and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"reward_funcs: {spec}: {path.name} has no function '{name}'"
                          + (f" (it has: {found})" if found else ""))
    return _guarded(fn, spec)


def _guarded(fn: Callable, label: str) -> RewardFunc:
    """`fn` with its failures as one-line RewardErrors."""
    def reward(*args: Any, **kwargs: Any) -> list[float | None]:
        n = len(kwargs.get("completions", args[1] if len(args) > 1 else []))
        try:
            out = list(fn(*args, **kwargs))
        except Exception as err:  # the user's code
            raise RewardError(f"reward_funcs: {label} raised {type(err).__name__}: {err}") from None
        if len(out) != n:
            raise RewardError(f"reward_funcs: {label} returned {len(out)} rewards for {n} completions")
        bad = next((v for v in out if v is not None and not isinstance(v, (int, float))), None)
        if bad is not None:
            raise RewardError(f"reward_funcs: {label} returned {bad!r}; a reward is a number or None")
        return out
    return reward


def is_plugin(name: str) -> bool:
    return ".py:" in name


def reward_functions(config: RunConfig, train_rows: Any) -> list[RewardFunc]:
    """The functions `reward_funcs` names, each named for trl's logs (rewards/<name>/mean)."""
    funcs = []
    for name in config.method.reward_funcs:
        if is_plugin(name):
            fn = load_plugin(name)
            fn.__name__ = name.rpartition(":")[2]
        elif name in BUILT_IN:
            fn = BUILT_IN[name](config, train_rows)
            fn.__name__ = name
        else:  # config.py refuses unknown names; kept for callers that build configs by hand
            raise ConfigError(f"reward_funcs: unknown '{name}' (built in: {', '.join(BUILT_IN)}; or file.py:function)")
        funcs.append(fn)
    return funcs
