"""Data checks: what `instill data check` reports (bad rows as file:line, truncation, dropped samples),
folded into the doctor's table, plus what the other checks need from the data (a real sample,
the number of training samples, the longest sample, whether answers carry <think> reasoning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from instill.config import RunConfig
from instill.console import percentile_line
from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.pairs import PAIR_KINDS, iter_items
from instill.data.registry import resolve
from instill.data.templates import ChatTemplate
from instill.doctor.table import FAIL, PASS, SKIP, WARN, Check
from instill.errors import DataError
from instill.prep.check import DatasetReport, check_dataset, dataset_items
from instill.train.stages import STAGES

AREA = "data"
_SCAN_ROWS = 5000  # rows read per dataset when looking for a sample and for <think> reasoning


@dataclass
class DataFindings:
    checks: list[Check] = field(default_factory=list)
    sample: Example | None = None  # the first loadable row of the training data
    n_train: int | None = None  # samples training would see (after max_samples, val_size and drops)
    n_val: int = 0  # samples val_size holds out of the training data
    longest: int | None = None  # tokens of the longest training sample, before truncation
    thinking: bool = False  # some assistant answer holds <think> reasoning


def loadable_examples(spec: Any, config: RunConfig):
    """Loadable rows of a dataset as Examples (bad rows skipped: check_dataset reports them)."""
    data = config.data
    for source, item in islice(dataset_items(spec, data.dataset_dir), _SCAN_ROWS):
        if isinstance(item, DataError):
            continue
        try:
            example = to_example(item, spec, source)
        except DataError:
            continue
        yield fill_placeholders(example, data.dataset_placeholders) if data.dataset_placeholders else example


def _rows_check(report: DatasetReport) -> Check:
    good = report.rows - len(report.errors)
    if report.errors:
        shown = "; ".join(report.errors[:3])
        more = f" (and {len(report.errors) - 3} more)" if len(report.errors) > 3 else ""
        return Check(FAIL, AREA, f"rows {report.name}", f"{len(report.errors)} of {report.rows} rows are bad: {shown}{more}",
                     "fix or remove those rows (`instill data check` lists every one); training stops at the first")
    if not good:
        return Check(FAIL, AREA, f"rows {report.name}", "no rows", "point file_name in dataset_info.json at the data")
    return Check(PASS, AREA, f"rows {report.name}", f"{good} rows load; tokens {percentile_line(report.lengths)}")


def _cutoff_check(report: DatasetReport, cutoff_len: int) -> Check:
    name = f"cutoff {report.name}"
    loaded = len(report.lengths)
    longest = max(report.lengths, default=0)
    fix = f"raise cutoff_len (the longest sample has {longest} tokens)"
    if loaded and report.answer_lost == loaded:
        return Check(FAIL, AREA, name, f"every one of {loaded} samples loses its whole answer at cutoff_len {cutoff_len}: "
                     "training would find no valid sample", fix)
    if report.answer_cut or report.answer_lost:
        return Check(WARN, AREA, name, f"{report.truncated} of {loaded} samples exceed cutoff_len {cutoff_len}: answer "
                     f"shortened in {report.answer_cut} (the model learns answers that stop mid-way and never end), "
                     f"lost in {report.answer_lost} (training drops those)", fix)
    if report.truncated:
        return Check(PASS, AREA, name, f"{report.truncated} of {loaded} prompts cut in the middle to fit cutoff_len "
                     f"{cutoff_len}; every answer kept")
    return Check(PASS, AREA, name, f"no sample exceeds cutoff_len {cutoff_len} (longest {longest} tokens)")


def _prompt_check(report: DatasetReport) -> Check:
    """Online stages: prompts over max_prompt_length (dropped by training) and rows without a reference answer."""
    name, loaded = f"prompts {report.name}", len(report.lengths)
    longest = max(report.lengths, default=0)
    if loaded and report.truncated == loaded:
        return Check(FAIL, AREA, name, f"every one of {loaded} prompts is longer than max_prompt_length "
                     f"{report.prompt_limit}: training would have nothing to answer",
                     f"raise max_prompt_length (the longest prompt has {longest} tokens)")
    notes = []
    if report.truncated:
        notes.append(f"{report.truncated} of {loaded} prompts are longer than max_prompt_length {report.prompt_limit} "
                     "(training drops them)")
    if report.no_answer:
        notes.append(f"{report.no_answer} of {loaded} rows have no reference answer (a label-based reward such as "
                     "label_match scores them 0)")
    if notes:
        return Check(WARN, AREA, name, "; ".join(notes),
                     f"raise max_prompt_length (the longest prompt has {longest} tokens) or give every row its answer")
    return Check(PASS, AREA, name, f"every prompt fits max_prompt_length {report.prompt_limit} (longest {longest} "
                 "tokens); every row has a reference answer")


def _pair_checks(config: RunConfig, names: list[str], found: DataFindings, kind: str) -> DataFindings:
    """Preference / KTO data: every row read and checked as training reads it (data/pairs.py)."""
    data = config.data
    try:
        n = sum(1 for _ in iter_items(names, data.dataset_dir, data.max_samples, config.train.seed, kind))
    except DataError as err:
        found.checks.append(Check(FAIL, AREA, "dataset", str(err), "fix the row, or check the entry in dataset_info.json"))
        return found
    what = "preference pairs" if kind == "pairs" else "KTO rows"
    found.checks.append(Check(PASS, AREA, "rows", f"{n} {what} read from {', '.join(names)}; every row valid"))
    return found


def data_checks(config: RunConfig, template: ChatTemplate, template_ok: bool = True) -> DataFindings:
    """Rows and truncation of every dataset of the config; `template_ok` False: rows only (no token counts)."""
    data, found = config.data, DataFindings()
    train_names, eval_names = data.dataset or [], data.eval_dataset or []
    if not train_names and config.train.do_train:
        found.checks.append(Check(FAIL, AREA, "dataset", "do_train is true but the config names no dataset",
                                  "add dataset: <names from dataset_info.json in dataset_dir>"))
    names = list(dict.fromkeys(train_names + eval_names))
    if not names:
        return found
    kind = STAGES[config.method.stage].data_kind
    if kind in PAIR_KINDS:
        return _pair_checks(config, names, found, kind)
    try:
        specs = resolve(names, data.dataset_dir, kind)
    except DataError as err:
        found.checks.append(Check(FAIL, AREA, "dataset", str(err),
                                  "check dataset / eval_dataset against dataset_info.json in dataset_dir"))
        return found

    n_train, longest = 0, 0
    for spec in specs:
        report = check_dataset(spec, data, template, kind, config.method.max_prompt_length)
        found.checks.append(_rows_check(report))
        if template_ok and report.no_answer is not None:
            found.checks.append(_prompt_check(report))
        elif template_ok:
            found.checks.append(_cutoff_check(report, data.cutoff_len))
        else:
            found.checks.append(Check(SKIP, AREA, f"cutoff {report.name}", "token counts need a working template"))
        if spec.name in train_names:
            good = report.rows - len(report.errors)
            kept = min(good, data.max_samples) if data.max_samples else good
            n_train += max(kept - report.answer_lost, 0)
            longest = max(longest, *report.lengths, 0)
            for example in loadable_examples(spec, config):
                found.sample = found.sample or example
                if any("<think>" in (m.get("content") or "") for m in example.messages if m["role"] == "assistant"):
                    found.thinking = True
                    break
    if train_names:
        if data.val_size and not data.eval_dataset:  # as data.dataset.split_examples holds out
            found.n_val = int(data.val_size) if data.val_size >= 1 else max(1, round(n_train * data.val_size))
        found.n_train, found.longest = n_train - found.n_val, longest or None
    return found
