"""`eval_task: preference`: how often a model prefers the chosen answer of a preference pair.

Pairs come from `eval_dataset` (or the `val_size` split of `dataset`), read and tokenized as for
training (data/pairs.py, same template and truncation). For each pair we sum the model's
log-probabilities of the chosen and the rejected answer tokens given the prompt:

* `preference_accuracy`: share of pairs with logp(chosen) > logp(rejected); comparable between the
  base and the tuned model (`--compare base`).
* `implicit_reward_accuracy` (tuned LoRA models): share of pairs where DPO's implicit reward
  logp_tuned - logp_base ranks chosen above rejected, the base being the model with the adapter
  disabled; `reward_margin` is the mean of that difference (before multiplying by beta).

Written by hand because trl computes these only inside a training step.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from instill.config import RunConfig
from instill.console import say
from instill.data.dataset import split_examples
from instill.data.pairs import encode_items, iter_items
from instill.data.templates import TemplateChoice
from instill.data.tokenize import EncodeOptions
from instill.errors import ConfigError
from instill.model.choice import choose_model
from instill.model.load import Precision


def load_pairs(config: RunConfig, template: Any) -> dict[str, list]:
    """prompt_ids / chosen_ids / rejected_ids of the evaluation pairs (capped at eval_max_samples)."""
    d, seed = config.data, config.train.seed
    if d.eval_dataset:
        items = list(iter_items(d.eval_dataset, d.dataset_dir, d.max_samples, seed, "pairs"))
    elif d.val_size and d.dataset:
        items = split_examples(list(iter_items(d.dataset, d.dataset_dir, d.max_samples, seed, "pairs")),
                               d.val_size, seed)[1]
    else:
        raise ConfigError("eval_task: preference needs eval_dataset (or val_size with dataset) naming ranking data")
    items = items[: config.eval.eval_max_samples] if config.eval.eval_max_samples else items
    columns, summary = encode_items(items, template, EncodeOptions.from_args(d), "pairs")
    for line in summary.lines("eval pairs"):
        say(line)
    return columns


@torch.no_grad()
def answer_logps(model: Any, prompts: list[list[int]], answers: list[list[int]], pad_id: int,
                 batch_size: int) -> list[float]:
    """Summed log-probability of each answer's tokens after its prompt."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        seqs = [p + a for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
        token_logps = logps.gather(-1, ids[:, 1:, None])[..., 0]
        for row, (p, a) in enumerate(zip(prompts[start:start + batch_size], answers[start:start + batch_size])):
            out.append(token_logps[row, len(p) - 1:len(p) - 1 + len(a)].sum().item())
    return out


def _pair_logps(model: Any, pairs: dict[str, list], pad_id: int, batch_size: int) -> tuple[list[float], list[float]]:
    return (answer_logps(model, pairs["prompt_ids"], pairs["chosen_ids"], pad_id, batch_size),
            answer_logps(model, pairs["prompt_ids"], pairs["rejected_ids"], pad_id, batch_size))


def preference_metrics(model: Any, pairs: dict[str, list], pad_id: int, batch_size: int) -> dict[str, float]:
    chosen, rejected = _pair_logps(model, pairs, pad_id, batch_size)
    n = len(chosen)
    metrics = {"pairs": n, "preference_accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
               "mean_logp_margin": sum(c - r for c, r in zip(chosen, rejected)) / n}
    disable = getattr(model, "disable_adapter", None)
    if disable is not None:
        with disable() if callable(disable) else contextlib.nullcontext():
            base_c, base_r = _pair_logps(model, pairs, pad_id, batch_size)
        margins = [(c - bc) - (r - br) for c, r, bc, br in zip(chosen, rejected, base_c, base_r)]
        metrics["implicit_reward_accuracy"] = sum(m > 0 for m in margins) / n
        metrics["reward_margin"] = sum(margins) / n
    return metrics


def run_preference(config: RunConfig, output_dir: str | Path | None, which: str, compare_base: bool,
                   headline: tuple[str, ...]) -> dict[str, dict]:
    """`instill eval` with eval_task: preference; writes metrics.json per model, naming the task's `headline`
    (evaluate/tasks.py), and comparison.json."""
    from instill.infer.engine import load_generator

    out = Path(output_dir) if output_dir else Path(config.train.output_dir) / "eval"
    choices = [choose_model(config, "base"), choose_model(config, "tuned")] if compare_base else \
        [choose_model(config, which)]
    batch = config.eval.eval_batch_size or 4
    reports: dict[str, dict] = {}
    pairs = None
    for choice in choices:
        say(f"evaluating {choice.name} model: {choice.describe()}")
        generator = load_generator(choice.model_args, TemplateChoice.of(config.data), choice.adapters,
                                   Precision(config.train.bf16, config.train.fp16), merge=False)
        pairs = pairs or load_pairs(config, generator.template)
        metrics = preference_metrics(generator.model.eval(), pairs, generator.pad_id, batch)
        report = {"task": "preference", **metrics, "headline": list(headline)}
        target = out / choice.name if compare_base else out
        target.mkdir(parents=True, exist_ok=True)
        (target / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        say(f"{choice.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + f"; written to {target}")
        reports[choice.name] = report
        del generator
    if compare_base:
        comparison = {k: {"base": reports["base"].get(k), "tuned": reports["tuned"].get(k)}
                      for k, v in reports["tuned"].items() if isinstance(v, (int, float))}
        (out / "comparison.json").write_text(json.dumps(comparison, indent=2), encoding="utf-8")
    return reports
