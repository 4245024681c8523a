"""A run directory's files, broken one at a time (wrong encoding, bad JSON / YAML, wrong types): `instill report`
says which file and line in one line and exits 2; intact files give a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from instill.cli import main
from instill.report.html import try_write_report

LOG = [{"step": 1, "epoch": 0.5, "loss": 2.0, "learning_rate": 1e-3, "tokens_per_s": 10.0},
       {"step": 2, "epoch": 1.0, "loss": 1.5, "eval_loss": 1.6, "tokens_per_s": 12.0}]
METRICS = {"task": "classification", "mode": "score", "samples": 2, "accuracy": 0.5, "samples_per_second": 4.0,
           "model": {"name": "tuned", "model_name_or_path": "m", "adapters": []},
           "per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}}}


def _jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _run(root: Path) -> Path:
    """A small run directory with every file the report reads, as instill writes them."""
    out = root / "run"
    (out / "eval").mkdir(parents=True)
    files = {
        "run_config.yaml": yaml.safe_dump({"model_name_or_path": "m", "dataset": ["memo"], "run_name": "café",
                                           "finetuning_type": "lora", "lora_rank": 8}, allow_unicode=True).encode(),
        "trainer_log.jsonl": _jsonl(LOG),
        "all_results.json": json.dumps({"train_loss": 1.7, "train_runtime": 3.2, "epoch": 1.0,
                                        "num_input_tokens_seen": 100}).encode(),
        "run_info.json": json.dumps({"finished": "2025-01-01T00:00:00", "wall_seconds": 5.0,
                                     "peak": {"peak_rss_mb": 900.0},
                                     "environment": {"torch_threads": 2, "packages": {"torch": "2"}}}).encode(),
        "eval/metrics.json": json.dumps(METRICS).encode(),
        "eval/predictions.jsonl": _jsonl([{"id": "1", "prompt": "p", "prediction": "a", "reference": "a",
                                           "correct": True}]),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def test_an_intact_run_gives_a_report(tmp_path, capsys):
    out = _run(tmp_path)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "could not be rendered" not in page and "café" in page
    assert capsys.readouterr().err == ""


BROKEN = [
    # (file, its bytes, what the one line says after the file's path)
    ("run_config.yaml", b"model_name_or_path: m\nrun_name: caf\xe9\n", ":2: not UTF-8 (byte 0xe9 at column 14)"),
    ("run_config.yaml", b"model_name_or_path: m\ndataset: [memo\n", ":3: not valid YAML"),
    ("run_config.yaml", b"- a\n- b\n", ": holds [\"a\", \"b\"], expected a mapping of keys"),
    ("run_config.yaml", b"model_name_or_path: m\ndataset: 3\n", ": 'dataset' is 3, expected dataset names"),
    ("trainer_log.jsonl", _jsonl(LOG[:1]) + b'{"step": 2, "loss": "\xff"}\n', ":2: not UTF-8 (byte 0xff"),
    ("trainer_log.jsonl", _jsonl(LOG[:1]) + b'{"step": 2, "loss": 1.5\n', ":2: not valid JSON"),
    ("trainer_log.jsonl", b"[1, 2]\n", ":1: holds [1, 2], expected a JSON object"),
    ("trainer_log.jsonl", _jsonl([LOG[0], {"step": 2, "loss": "low"}]), ":2: 'loss' is \"low\", expected a number"),
    ("trainer_log.jsonl", _jsonl([LOG[0], {"step": "2", "loss": 1.0}]), ":2: 'step' is \"2\", expected an integer"),
    ("trainer_log.jsonl", _jsonl([{"loss": 1.0}]), ":1: no 'step' in this log record"),
    ("all_results.json", b'{"train_loss": 1.7,}', ":1: not valid JSON (Expecting property name"),
    ("all_results.json", b"[1.7]", ": holds [1.7], expected a JSON object"),
    ("all_results.json", b'{"train_runtime": "3 s"}', ": 'train_runtime' is \"3 s\", expected a number"),
    ("all_results.json", b'{"train_loss": 1.7}\x80', ":1: not UTF-8 (byte 0x80 at column 20)"),
    ("run_info.json", b'{"wall_seconds": "5"}', ": 'wall_seconds' is \"5\", expected a number"),
    ("run_info.json", b'{"environment": {"torch_threads": "two"}}',
     ": 'environment.torch_threads' is \"two\", expected a number"),
    ("run_info.json", b'{"peak": {"peak_rss_mb": [1]}}', ": 'peak.peak_rss_mb' is [1], expected a number"),
    ("run_info.json", b'{\n"finished": "\xe9t\xe9"}', ":2: not UTF-8 (byte 0xe9 at column 14)"),
    ("eval/metrics.json", b'{"task": "classification",\n "accuracy": }', ":2: not valid JSON"),
    ("eval/metrics.json", b'{"accuracy": "high"}', ": 'accuracy' is \"high\", expected a number"),
    ("eval/metrics.json", b'{"model": "m"}', ": 'model' is \"m\", expected a JSON object"),
    ("eval/metrics.json", b'{"model": {"adapters": "a"}}', ": 'model.adapters' is \"a\", expected a list"),
    ("eval/metrics.json", b'{"per_class": {"a": 1}}', ": 'per_class.a' is 1, expected a JSON object"),
    ("eval/metrics.json", b'"\xfe"', ":1: not UTF-8 (byte 0xfe at column 2)"),
    ("eval/predictions.jsonl", b'{"id": "1"}\n{"id": \n', ":2: not valid JSON"),
]


@pytest.mark.parametrize(("name", "data", "said"), BROKEN, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BROKEN)])
def test_a_broken_file_is_one_line_naming_it(tmp_path, capsys, name, data, said):
    out = _run(tmp_path)
    (out / name).write_bytes(data)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"instill: error: {out / name}{said}"), err


def test_the_end_of_a_run_warns_in_one_line_and_keeps_going(tmp_path):
    """train and eval write the report last: a broken file there warns (naming it) instead of failing the run."""
    out = _run(tmp_path)
    (out / "trainer_log.jsonl").write_bytes(b'{"step": 1, "loss": NaN}\n{"step": 2')
    with pytest.warns(RuntimeWarning, match=r"trainer_log\.jsonl:2: not valid JSON"):
        assert try_write_report(out) is None


def test_eval_of_a_run_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "run_config.yaml"
    path.write_bytes(b"model_name_or_path: m\nrun_name: caf\xe9\n")
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2: not UTF-8 (byte 0xe9" in err, err
