"""The files `instill report` and `instill eval` read back from a run directory (run_config.yaml,
trainer_log.jsonl, metrics.json, all_results.json): any content is read (every log line a record) or is one
ReportError / ConfigError line naming the file; `instill report` exits 0 with every section rendered, or 2."""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from instill.errors import InstillError
from instill.report.run_files import Run
from tests.fuzz.helpers import accepted_or_refused, cli_ok_or_one_line, examples

texts = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | texts
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(texts, inner, max_size=3), max_leaves=5)
numbers = st.integers(-10, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
junk = st.binary(max_size=40) | st.sampled_from([b"\xff", b"\x1f", b"{", b"[1]", b"null", b"NaN", b"\xef\xbb\xbf{}"])

log_record = st.fixed_dictionaries({"step": st.integers(0, 1000) | anything},
                                   optional={"loss": numbers | anything, "learning_rate": numbers, "epoch": numbers,
                                             "grad_norm": numbers, "tokens_per_s": numbers, "eval_loss": numbers})
trainer_log = st.lists(log_record.map(json.dumps) | st.sampled_from(["", "{", "[]", '{"loss": 1}']), max_size=5).map(
    lambda lines: "\n".join(lines).encode()) | junk
metrics = st.fixed_dictionaries({}, optional={
    "task": st.sampled_from(["classification", "generation", "ner"]) | anything, "mode": texts | anything,
    "model": st.fixed_dictionaries({}, optional={"name": texts | anything, "adapters": anything}) | anything,
    "samples": numbers | anything, "accuracy": numbers | anything, "labels": st.lists(texts, max_size=3) | anything,
    "confusion_matrix": st.lists(st.lists(st.integers(0, 9), max_size=3), max_size=3) | anything,
    "per_class": st.dictionaries(texts, st.dictionaries(texts, numbers, max_size=2) | anything, max_size=2) | anything,
}) | anything
results = st.dictionaries(st.sampled_from(["epoch", "train_loss", "eval_loss", "train_runtime", "mfu"]) | texts,
                          numbers | anything, max_size=4) | anything
config = st.dictionaries(st.sampled_from(["model_name_or_path", "dataset", "eval_dataset", "run_name", "stage",
                                          "hf_hub_token", "learning_rate"]) | texts, anything, max_size=4) | anything

files = st.fixed_dictionaries({}, optional={
    "run_config.yaml": config.map(lambda c: yaml.safe_dump(c, allow_unicode=True).encode()) | junk,
    "trainer_log.jsonl": trainer_log,
    "eval/metrics.json": metrics.map(lambda m: json.dumps(m).encode()) | junk,
    "all_results.json": results.map(lambda r: json.dumps(r).encode()) | junk,
})


def _write(root: Path, contents: dict[str, bytes]) -> None:
    for name, content in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


def _lines(content: bytes) -> int:
    return sum(1 for line in content.decode("utf-8").splitlines() if line.strip())


@examples(250)
@given(contents=files)
@example(contents={"run_config.yaml": b"model_name_or_path: m\nrun_name: \xff\n"})  # issue 30: a traceback once
@example(contents={"run_config.yaml": b"run_name: a\x1f"})  # yaml's ReaderError: a two-line message
def test_any_run_files_are_read_or_named(contents):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root, contents)
        run = accepted_or_refused(lambda: Run.read(root), *(str(root / name) for name in contents))
        if run is not None and "trainer_log.jsonl" in contents:  # sound: no log line dropped
            assert len(run.log) == _lines(contents["trainer_log.jsonl"])


@examples(150)
@given(content=config.map(lambda c: yaml.safe_dump(c, allow_unicode=True).encode()) | junk)
@example(content=b"run_name: a\x1f")
def test_eval_reads_any_run_config_or_names_it(content):
    from instill.evaluate.cli import _config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run_config.yaml"
        path.write_bytes(content)
        accepted_or_refused(lambda: _config(argparse.Namespace(config=str(path), overrides=[])), str(path),
                            error=InstillError)


@examples(10)  # each report draws its plots (~1 s)
@given(contents=files)
@example(contents={"trainer_log.jsonl": b'{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}'})
@example(contents={"eval/metrics.json": b'{"mode": null}'})  # null where the report added a string: TypeError
def test_instill_report_exits_0_with_every_section_or_2(contents):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root, {"trainer_log.jsonl": b"", **contents})
        code, _, err = cli_ok_or_one_line(["report", tmp], *(str(root / name) for name in contents), tmp)
        if code == 0:  # every section rendered: none fell back to "could not be rendered"
            assert not re.search(r"report section '\w+' failed", err), err
            assert "could not be rendered" not in (root / "report.html").read_text(encoding="utf-8")
