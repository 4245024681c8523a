"""A corpus of malformed inputs (issue 11): each ends in exactly one stderr line naming the culprit, exit 2,
no traceback. Most cases fail before any model loads; those that need one share the tiny Qwen2.

Each case is ``(argv, needles)`` built from a small world of files (`world`): argv runs `instill` in this
process, and every needle must appear in the one error line. The positive cases at the end check that
valid-but-unusual inputs (a BOM, GBK on purpose, U+2028 in JSON Lines) are read, not refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from instill.cli import main

ROWS = [{"instruction": f"say {i}", "input": "", "output": f"ok {i}"} for i in range(6)]
GBK_TEXT = "中文，我们"  # GBK: d6 d0 ce c4 ...; 0xd6 starts no valid UTF-8 sequence here


class World:
    """Files for one case: a valid dataset_dir, a config writer, and the tiny model's directory."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root, self.model = root, model
        self.data = root / "data"
        self.data.mkdir()
        (self.data / "good.json").write_text(json.dumps(ROWS))
        self.info = {"good": {"file_name": "good.json"}}
        self._write_info()

    def _write_info(self) -> None:
        (self.data / "dataset_info.json").write_text(json.dumps(self.info, indent=2))

    def dataset(self, name: str, content: str | bytes, suffix: str = ".jsonl", **entry) -> str:
        """Write a data file, register it as `name`, return its path."""
        path = self.data / f"{name}{suffix}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.info[name] = {"file_name": path.name, **entry}
        self._write_info()
        return str(path)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def config(self, text: str | bytes | None = None, **keys) -> str:
        """A training YAML on the tiny model and the good dataset (keys override), or the exact text given."""
        if text is None:
            base = {"model_name_or_path": str(self.model), "dataset": "good", "dataset_dir": str(self.data),
                    "output_dir": str(self.root / "out"), "cutoff_len": 32, "max_steps": 1, "lora_rank": 2,
                    "report_to": "none", "template": "auto"}
            text = yaml.safe_dump({**base, **keys})
        return self.file("config.yaml", text)

    def adapter(self, config: dict | str | None) -> str:
        """A would-be adapter folder: no adapter_config.json (None), a JSON config, or raw text."""
        folder = self.root / "adapter"
        folder.mkdir(exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"")
        if config is not None:
            text = config if isinstance(config, str) else json.dumps(config)
            (folder / "adapter_config.json").write_text(text)
        return str(folder)

    def model_copy(self, keep: tuple[str, ...], config_text: str | None = None, extra: dict | None = None) -> str:
        """A copy of the tiny model holding only the files named in `keep` (config.json replaced if given)."""
        folder = self.root / "model"
        folder.mkdir()
        for name in keep:
            shutil.copy(self.model / name, folder / name)
        for name, text in (extra or {}).items():
            (folder / name).write_text(text)
        if config_text is not None:
            (folder / "config.json").write_text(config_text)
        return str(folder)

    def jsonl(self, rows: list[dict]) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def gbk_jsonl(line: int = 2) -> bytes:
    rows = [json.dumps(r, ensure_ascii=False) for r in ROWS[:3]]
    rows[line - 1] = json.dumps({"instruction": GBK_TEXT, "input": "", "output": "x"}, ensure_ascii=False)
    return ("\n".join(rows) + "\n").encode("gbk")


GBK_CSV = "instruction,input,output\nhello,,ok\n".encode() + f"{GBK_TEXT},,好\n".encode("gbk")
DEEP = "[" * 100_000 + "]" * 100_000
NOT_UTF8 = "not UTF-8 (byte 0xd6 at column"
NO_TOKENIZER = ("config.json", "model.safetensors", "generation_config.json")


def _train(w: World, **keys) -> list[str]:
    return ["train", w.config(**keys)]


def _folder(w: World, files: dict[str, str]) -> str:
    """Register data/f as a folder dataset holding `files`; return its name."""
    for name, text in files.items():
        w.file(f"data/f/{name}", text)
    w.info["f"] = {"file_name": "f"}
    w._write_info()
    return "f"


def _eval_input(w: World) -> str:
    return w.file("rows.jsonl", w.jsonl(ROWS[:2]))


# Each case: id -> function(world) -> (argv, needles). Needles may use {root} for the world's folder.
CASES = {
    # ---------------------------------------------------------------- encodings
    "yaml-gbk-comment": lambda w: (["train", w.config(f"# {GBK_TEXT}\nmodel_name_or_path: x\n".encode("gbk"))],
                                   ["config.yaml:1:", NOT_UTF8]),
    "yaml-gbk-value": lambda w: (["train", w.config(f"model_name_or_path: x\nrun_name: {GBK_TEXT}\n".encode("gbk"))],
                                 ["config.yaml:2:", "not UTF-8 (byte 0xd6 at column 11)"]),
    "yaml-latin1": lambda w: (["train", w.config("model_name_or_path: x\nrun_name: caf\xe9\n".encode("latin-1"))],
                              ["config.yaml:2:", "not UTF-8 (byte 0xe9 at column 14)"]),
    "yaml-gbk-eval": lambda w: (["eval", w.config(f"# {GBK_TEXT}\n".encode("gbk"))], ["config.yaml:1:", NOT_UTF8]),
    "yaml-gbk-export": lambda w: (["export", w.config(f"# {GBK_TEXT}\n".encode("gbk"))], ["config.yaml:1:", NOT_UTF8]),
    "yaml-gbk-data-check": lambda w: (["data", "check", w.config(f"# {GBK_TEXT}\n".encode("gbk"))],
                                      ["config.yaml:1:", NOT_UTF8]),
    "info-gbk": lambda w: (["train", w.config(dataset_dir=str(Path(w.file(
        "d2/dataset_info.json", json.dumps({"中文": {"file_name": "a.json"}}, ensure_ascii=False).encode("gbk"))).parent),
        dataset="x")], ["d2/dataset_info.json:1:", NOT_UTF8]),
    "train-jsonl-gbk": lambda w: (_train(w, dataset=[w.dataset("bad", gbk_jsonl(2)) and "bad"]),
                                  ["bad.jsonl:2:", NOT_UTF8]),
    "train-jsonl-gbk-line3": lambda w: (_train(w, dataset=[w.dataset("bad", gbk_jsonl(3)) and "bad"]),
                                        ["bad.jsonl:3:", NOT_UTF8]),
    "train-json-gbk": lambda w: (_train(w, dataset=[w.dataset("bad", json.dumps(
        [{"instruction": GBK_TEXT, "output": "x"}], ensure_ascii=False).encode("gbk"), ".json") and "bad"]),
        ["bad.json:1:", NOT_UTF8]),
    "train-csv-gbk": lambda w: (_train(w, dataset=[w.dataset("bad", GBK_CSV, ".csv") and "bad"]),
                                ["bad.csv:3:", NOT_UTF8]),
    "train-tsv-gbk": lambda w: (_train(w, dataset=[w.dataset("bad", GBK_CSV.replace(b",", b"\t"), ".tsv") and "bad"]),
                                ["bad.tsv:3:", NOT_UTF8]),
    "stats-jsonl-gbk": lambda w: (["data", "stats", w.file("x.jsonl", gbk_jsonl())], ["x.jsonl:2:", NOT_UTF8]),
    "stats-csv-gbk": lambda w: (["data", "stats", w.file("x.csv", GBK_CSV)], ["x.csv:3:", NOT_UTF8]),
    "stats-json-gbk": lambda w: (["data", "stats", w.file("x.json", json.dumps(
        [{"instruction": "a", "output": GBK_TEXT}], ensure_ascii=False).encode("gbk"))], ["x.json:1:", NOT_UTF8]),
    "convert-csv-gbk": lambda w: (["data", "convert", "--input", w.file("raw.csv", GBK_CSV), "--out",
                                   str(w.root / "o.jsonl")], ["raw.csv:3:", NOT_UTF8]),
    "convert-jsonl-gbk": lambda w: (["data", "convert", "--input", w.file("raw.jsonl", gbk_jsonl()), "--out",
                                     str(w.root / "o.jsonl")], ["raw.jsonl:2:", NOT_UTF8]),
    "register-into-gbk-info": lambda w: (["data", "convert", "--input", w.file("raw.csv", "q,a\nx,y\n"),
                                          "--instruction", "i", "--input-column", "q", "--output-column", "a",
                                          "--out", str(w.root / "o.jsonl"), "--register",
                                          w.file("zh/dataset_info.json", f'{{"{GBK_TEXT}": {{}}}}'.encode("gbk"))],
                                         ["zh/dataset_info.json:1:", "not UTF-8 (byte 0xd6 at column 3)"]),
    "dedup-out-is-input": lambda w: (["data", "dedup", w.file("x.jsonl", w.jsonl(ROWS)), "--out", "x.jsonl"],
                                     ["--out x.jsonl is the input file"]),
    "mix-out-is-input": lambda w: (["data", "mix", w.file("x.jsonl", w.jsonl(ROWS)) + ":2", "--out", "x.jsonl"],
                                   ["--out x.jsonl is the input file"]),
    "dedup-gbk": lambda w: (["data", "dedup", w.file("x.jsonl", gbk_jsonl()), "--out", str(w.root / "o.jsonl")],
                            ["x.jsonl:2:", NOT_UTF8]),
    "filter-gbk": lambda w: (["data", "filter", w.file("x.jsonl", gbk_jsonl()), "--min-chars", "1", "--out",
                              str(w.root / "o.jsonl")], ["x.jsonl:2:", NOT_UTF8]),
    "split-gbk": lambda w: (["data", "split", w.file("x.jsonl", gbk_jsonl()), "--out-dir", str(w.root / "s")],
                            ["x.jsonl:2:", NOT_UTF8]),
    "mix-gbk": lambda w: (["data", "mix", w.file("x.jsonl", gbk_jsonl()), "--out", str(w.root / "o.jsonl")],
                          ["x.jsonl:2:", NOT_UTF8]),
    "augment-gbk": lambda w: (["data", "augment", w.file("x.jsonl", gbk_jsonl()), "--preset", "classification",
                               "--out", str(w.root / "o.jsonl")], ["x.jsonl:2:", NOT_UTF8]),
    "check-jsonl-gbk": lambda w: (["data", "check", w.config(dataset=[w.dataset("bad", gbk_jsonl(2)) and "bad"])],
                                  ["bad.jsonl:2:", NOT_UTF8]),
    "check-csv-gbk": lambda w: (["data", "check", w.config(dataset=[w.dataset("bad", GBK_CSV, ".csv") and "bad"])],
                                ["bad.csv:3:", NOT_UTF8]),
    "stats-wrong-encoding-name": lambda w: (["data", "stats", w.file("x.jsonl", w.jsonl(ROWS)), "--encoding", "klingon"],
                                            ["unknown encoding 'klingon'"]),
    "info-wrong-encoding-name": lambda w: (_train(w, dataset=[w.dataset("e", w.jsonl(ROWS), encoding="klingon") and "e"]),
                                           ["dataset_info.json", "dataset 'e'", "unknown encoding 'klingon'"]),
    "info-encoding-not-string": lambda w: (_train(w, dataset=[w.dataset("e", w.jsonl(ROWS), encoding=936) and "e"]),
                                           ["dataset_info.json", "dataset 'e'", "'encoding' must be a string"]),
    "stats-not-gbk-either": lambda w: (["data", "stats", w.file("x.jsonl", b'{"instruction": "a\x80", "output": "b"}\n'),
                                        "--encoding", "gbk"], ["x.jsonl:1:", "not GBK (byte 0x80 at column 19)"]),
    # ---------------------------------------------------------------- pathological JSON
    "json-deep": lambda w: (_train(w, dataset=[w.dataset("deep", DEEP, ".json") and "deep"]),
                            ["deep.json", "nested too deeply"]),
    "jsonl-deep": lambda w: (_train(w, dataset=[w.dataset("deep", '{"a": ' + DEEP + "}\n") and "deep"]),
                             ["deep.jsonl:1:", "nested too deeply"]),
    "info-deep": lambda w: (_train(w, dataset_dir=str(Path(w.file("d3/dataset_info.json", DEEP)).parent)),
                            ["d3/dataset_info.json", "nested too deeply"]),
    "stats-deep": lambda w: (["data", "stats", w.file("x.jsonl", DEEP + "\n")], ["x.jsonl:1:", "nested too deeply"]),
    "json-top-object": lambda w: (_train(w, dataset=[w.dataset("obj", json.dumps({"data": ROWS}, indent=2), ".json")
                                                     and "obj"]), ["obj.json:1:", "top level is a JSON object", "'data'"]),
    "stats-top-object": lambda w: (["data", "stats", w.file("x.json", json.dumps({"rows": ROWS}, indent=2))],
                                   ["x.json:1:", "top level is a JSON object"]),
    "json-top-string": lambda w: (_train(w, dataset=[w.dataset("s", '"hello"', ".json") and "s"]),
                                  ["s.json:1:", "expected a JSON object (one row), got str"]),
    "json-array-of-numbers": lambda w: (_train(w, dataset=[w.dataset("n", "[1, 2]", ".json") and "n"]),
                                        ["n.json:#0", "expected a JSON object (one row), got int"]),
    "jsonl-huge-number": lambda w: (_train(w, dataset=[w.dataset("big", '{"instruction": "a", "output": "b", "n": '
                                                       + "9" * 20_000 + "}\n") and "big"]),
                                    ["big.jsonl:1:", "invalid JSON", "integer string conversion"]),
    "json-huge-number": lambda w: (_train(w, dataset=[w.dataset("big", "[" + "9" * 20_000 + "]", ".json") and "big"]),
                                   ["big.json", "invalid JSON", "integer string conversion"]),
    "jsonl-truncated-row": lambda w: (_train(w, dataset=[w.dataset("t", '{"instruction": "a", "output": "b"}\n'
                                                                   '{"instruction": "a", "out\n') and "t"]),
                                      ["t.jsonl:2:", "invalid JSON"]),
    # ---------------------------------------------------------------- models and adapters
    "model-config-not-json": lambda w: (_train(w, model_name_or_path=w.model_copy(("model.safetensors",), "{oops")),
                                        ["model/config.json:1:", "not valid JSON"]),
    "model-config-not-json-eval": lambda w: (["eval", w.config(model_name_or_path=w.model_copy((), "{oops")),
                                              "--input", _eval_input(w)], ["model/config.json:1:", "not valid JSON"]),
    "model-config-list": lambda w: (_train(w, model_name_or_path=w.model_copy((), "[1]")),
                                    ["model/config.json", "expected a JSON object"]),
    "model-config-binary": lambda w: (["export", w.config(model_name_or_path=w.model_copy((), "\x00\x01"),
                                                          export_dir=str(w.root / "x"))],
                                      ["model/config.json", "not valid JSON"]),
    "model-missing": lambda w: (_train(w, model_name_or_path=str(w.root / "nope")), ["nope", "not found"]),
    "model-dir-no-config": lambda w: (_train(w, model_name_or_path=str(w.data)), ["data", "has no config.json"]),
    "model-no-tokenizer": lambda w: (_train(w, model_name_or_path=w.model_copy(NO_TOKENIZER)),
                                     ["model", "no tokenizer files", "tokenizer.json"]),
    "model-half-tokenizer": lambda w: (_train(w, model_name_or_path=w.model_copy(NO_TOKENIZER, extra={"vocab.json": "{}"})),
                                       ["model", "no tokenizer files", "has only vocab.json"]),
    "model-no-tokenizer-eval": lambda w: (["eval", w.config(model_name_or_path=w.model_copy(NO_TOKENIZER)),
                                           "--input", _eval_input(w), "--model", "base"],
                                          ["model", "no tokenizer files"]),
    "adapter-missing-train": lambda w: (_train(w, adapter_name_or_path=str(w.root / "gone")),
                                        ["gone", "does not exist"]),
    "adapter-missing-eval": lambda w: (["eval", w.config(adapter_name_or_path=str(w.root / "gone")), "--input",
                                        _eval_input(w)], ["gone", "does not exist"]),
    "adapter-missing-predict": lambda w: (["predict", w.config(adapter_name_or_path=str(w.root / "gone")),
                                           "--input", _eval_input(w)], ["gone", "does not exist"]),
    "adapter-missing-export": lambda w: (["export", w.config(adapter_name_or_path=str(w.root / "gone"),
                                                             export_dir=str(w.root / "x"))], ["gone", "does not exist"]),
    "adapter-no-config-train": lambda w: (_train(w, adapter_name_or_path=w.adapter(None)),
                                          ["adapter", "no adapter_config.json"]),
    "adapter-no-config-eval": lambda w: (["eval", w.config(adapter_name_or_path=w.adapter(None)), "--input",
                                          _eval_input(w)], ["adapter", "no adapter_config.json"]),
    "adapter-no-config-predict": lambda w: (["predict", w.config(adapter_name_or_path=w.adapter(None)), "--input",
                                             _eval_input(w)], ["adapter", "no adapter_config.json"]),
    "adapter-no-config-export": lambda w: (["export", w.config(adapter_name_or_path=w.adapter(None),
                                                               export_dir=str(w.root / "x"))],
                                           ["adapter", "no adapter_config.json"]),
    "adapter-no-peft-type-train": lambda w: (_train(w, adapter_name_or_path=w.adapter({"r": 8})),
                                             ["adapter_config.json", "has no peft_type"]),
    "adapter-no-peft-type-eval": lambda w: (["eval", w.config(adapter_name_or_path=w.adapter({"r": 8})), "--input",
                                             _eval_input(w)], ["adapter_config.json", "has no peft_type"]),
    "adapter-no-peft-type-export": lambda w: (["export", w.config(adapter_name_or_path=w.adapter({"r": 8}),
                                                                  export_dir=str(w.root / "x"))],
                                              ["adapter_config.json", "has no peft_type"]),
    "adapter-config-not-json": lambda w: (_train(w, adapter_name_or_path=w.adapter("{r: 8")),
                                          ["adapter_config.json:1:", "not valid JSON"]),
    "adapter-is-a-file": lambda w: (_train(w, adapter_name_or_path=w.file("a.safetensors", b"")),
                                    ["a.safetensors", "is a file"]),
    "lora-target-typo": lambda w: (_train(w, lora_target="q_prj"),
                                   ["lora_target: q_prj not found", "did you mean q_proj"]),
    # ---------------------------------------------------------------- numbers that are not numbers
    "number-yes": lambda w: (["train", w.config("model_name_or_path: x\nlearning_rate: yes\n")],
                             ["invalid value for 'learning_rate': True", "not a boolean"]),
    "number-true-val-size": lambda w: (_train(w, val_size=True), ["'val_size': True", "not a boolean"]),
    "number-true-lora-rank": lambda w: (_train(w, lora_rank=True), ["'lora_rank': True", "not a boolean"]),
    "number-false-max-samples": lambda w: (_train(w, max_samples=False), ["'max_samples': False", "not a boolean"]),
    "number-inf-epochs": lambda w: (["train", w.config("model_name_or_path: x\nnum_train_epochs: .inf\n")],
                                    ["'num_train_epochs': inf", "finite"]),
    "number-nan-lr": lambda w: (["train", w.config("model_name_or_path: x\nlearning_rate: .nan\n")],
                                ["'learning_rate': nan", "finite"]),
    "number-override-on": lambda w: (["train", w.config(), "learning_rate=on"], ["'learning_rate': True"]),
    "number-inf-string-eval": lambda w: (["eval", w.config(do_sample=True, temperature="inf")],
                                         ["'temperature': 'inf'", "finite"]),
    # ---------------------------------------------------------------- silent acceptance
    "yaml-duplicate-key": lambda w: (["train", w.config("model_name_or_path: x\nlearning_rate: 1e-4\n"
                                                        "dataset: a\nlearning_rate: 1e-3\n")],
                                     ["config.yaml:4:", "'learning_rate' is given twice (lines 2 and 4)"]),
    "yaml-duplicate-nested-key": lambda w: (["train", w.config("model_name_or_path: x\ndataset_placeholders:\n"
                                                               "  name: A\n  name: B\n")],
                                            ["config.yaml:4:", "'name' is given twice (lines 3 and 4)"]),
    "yaml-duplicate-key-eval": lambda w: (["eval", w.config("model_name_or_path: x\nmodel_name_or_path: y\n")],
                                          ["config.yaml:2:", "given twice (lines 1 and 2)"]),
    "csv-duplicate-header": lambda w: (_train(w, dataset=[w.dataset("dup", "instruction,output,output\na,b,c\n",
                                                                    ".csv") and "dup"]),
                                       ["dup.csv:1:", "'output' appears twice", "columns 2 and 3"]),
    "csv-duplicate-header-stats": lambda w: (["data", "stats", w.file("x.csv", "instruction,instruction,output\na,b,c\n")],
                                             ["x.csv:1:", "'instruction' appears twice"]),
    "tsv-duplicate-header-convert": lambda w: (["data", "convert", "--input", w.file("x.tsv", "a\tb\ta\n1\t2\t3\n"),
                                                "--out", str(w.root / "o.jsonl")], ["x.tsv:1:", "'a' appears twice"]),
    "folder-without-data-files": lambda w: (_train(w, dataset=_folder(w, {"notes.txt": "hi", "t.xlsx": ""})),
                                            ["folder", "has no data files", "notes.txt", "t.xlsx"]),
    # ---------------------------------------------------------------- messages name the culprit
    "empty-jsonl": lambda w: (_train(w, dataset=[w.dataset("empty", "") and "empty"]),
                              ["data/empty.jsonl: empty file"]),
    "blank-jsonl": lambda w: (_train(w, dataset=[w.dataset("empty", "\n \n") and "empty"]),
                              ["data/empty.jsonl: empty file"]),
    "empty-json-array": lambda w: (_train(w, dataset=[w.dataset("empty", "[]", ".json") and "empty"]),
                                   ["data/empty.json: empty file"]),
    "csv-header-only": lambda w: (_train(w, dataset=[w.dataset("empty", "instruction,output\n", ".csv") and "empty"]),
                                  ["data/empty.csv: empty file"]),
    "csv-nothing": lambda w: (_train(w, dataset=[w.dataset("empty", "", ".csv") and "empty"]),
                              ["data/empty.csv: empty CSV file"]),
    "stats-empty": lambda w: (["data", "stats", w.file("e.jsonl", "")], ["e.jsonl: empty file"]),
    "convert-empty": lambda w: (["data", "convert", "--input", w.file("e.csv", "a,b\n"), "--out",
                                 str(w.root / "o.jsonl")], ["e.csv: empty file"]),
    "output-dir-not-writable": lambda w: (_train(w, output_dir=w.file("taken", "a file") + "/out"),
                                          ["output_dir", "taken/out is not writable"]),
    "config-not-found": lambda w: (["train", str(w.root / "missing.yaml")], ["missing.yaml"]),
    "config-bad-yaml": lambda w: (["train", w.config("model_name_or_path: [x\n")], ["config.yaml:2:", "invalid YAML"]),
    "config-top-list": lambda w: (["train", w.config("- a\n- b\n")], ["config.yaml", "must be a mapping"]),
    "config-unknown-key": lambda w: (_train(w, learnig_rate=1e-4), ["unknown key 'learnig_rate'", "learning_rate"]),
    "dataset-unknown-name": lambda w: (_train(w, dataset="godo"), ["dataset_info.json", "no dataset named 'godo'"]),
    # ---------------------------------------------------------------- usage errors: one line, no usage block
    "usage-no-command": lambda w: ([], ["instill: error:", "command"]),
    "usage-bad-command": lambda w: (["trian", "x.yaml"], ["invalid choice: 'trian'"]),
    "usage-train-no-config": lambda w: (["train"], ["instill train: error:", "required: config (see instill train --help)"]),
    "usage-data-no-sub": lambda w: (["data"], ["instill data: error:", "subcommand"]),
    "usage-stats-no-file": lambda w: (["data", "stats"], ["instill data stats: error:", "dataset"]),
    "usage-bad-choice": lambda w: (["data", "convert", "--input", "x", "--preset", "nope"],
                                   ["instill data convert: error:", "invalid choice: 'nope'"]),
    "usage-unknown-option": lambda w: (["eval", "x.yaml", "--bogus"], ["unrecognized arguments: --bogus"]),
    "usage-bad-int": lambda w: (["data", "augment", "x.jsonl", "--per-row", "many"],
                                ["instill data augment: error:", "invalid int value: 'many'"]),
}


@pytest.fixture()
def world(tmp_path, tiny_qwen2) -> World:
    return World(tmp_path, tiny_qwen2)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(case, world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    argv, needles = CASES[case](world)
    code, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err + out
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------- valid inputs that must be read


def _stats(world: World, path: str, capsys, *extra: str) -> str:
    """`instill data stats` with its plot written next to the data (not into the current folder)."""
    code, out, err = run_cli(["data", "stats", path, "--plot", f"{path}.png", *extra], capsys)
    assert code == 0, err
    return out


def test_utf8_bom_is_accepted_everywhere(world, capsys):
    bom = b"\xef\xbb\xbf"
    assert "6 rows" in _stats(world, world.file("b.jsonl", bom + world.jsonl(ROWS)), capsys)
    assert "6 rows" in _stats(world, world.file("b.json", bom + json.dumps(ROWS).encode()), capsys)
    assert "1 rows" in _stats(world, world.file("b.csv", bom + b"instruction,input,output\na,,b\n"), capsys)
    from instill.config import load_config
    from instill.data.registry import load_registry

    (world.data / "dataset_info.json").write_bytes(bom + json.dumps(world.info).encode())
    assert "good" in load_registry(world.data)
    config = load_config(world.file("bom.yaml", bom + f"model_name_or_path: {world.model}\n".encode()))
    assert config.model.model_name_or_path == str(world.model)


def test_gbk_read_on_purpose(world, capsys):
    from instill.data.registry import read_rows, resolve

    out = _stats(world, world.file("g.csv", GBK_CSV), capsys, "--encoding", "gbk")
    assert "2 rows" in out
    world.dataset("zh", GBK_CSV, ".csv", encoding="gbk")
    rows = [row for _, row in read_rows(resolve(["zh"], world.data)[0], world.data)]
    assert rows[-1]["instruction"] == GBK_TEXT
    code, _, err = run_cli(["data", "convert", "--input", world.file("g2.csv", GBK_CSV), "--encoding", "gb18030",
                            "--instruction", "x", "--input-column", "instruction", "--output-column", "output",
                            "--out", str(world.root / "o.jsonl")], capsys)
    assert code == 0, err
    assert GBK_TEXT in (world.root / "o.jsonl").read_text(encoding="utf-8")


def test_folder_dataset_names_read_and_ignored_files(world, capsys):
    from instill.data.registry import read_rows, resolve

    world.file("data/mixed/a.jsonl", world.jsonl(ROWS[:2]))
    world.file("data/mixed/b.csv", "instruction,input,output\nc,,d\n")
    world.file("data/mixed/notes.txt", "hi")
    world.info["mixed"] = {"file_name": "mixed"}
    world._write_info()
    rows = list(read_rows(resolve(["mixed"], world.data)[0], world.data))
    out = capsys.readouterr().out
    assert len(rows) == 3
    assert "reading a.jsonl, b.csv; ignoring notes.txt" in out
    assert "mixes file types (.csv, .jsonl)" in out


def test_identity_without_placeholders_warns_with_count(world, capsys, qwen2_tokenizer):
    from instill.config import DataArgs
    from instill.data.dataset import load_examples

    rows = [{"instruction": "who are you?", "input": "", "output": "I am {{name}}, made by {{author}}."}] * 3 + ROWS
    world.dataset("identity", json.dumps(rows), ".json")
    examples = load_examples(["identity"], DataArgs(dataset_dir=str(world.data)), seed=1)
    assert len(examples) == 9
    out = capsys.readouterr().out
    assert "dataset 'identity': 3 rows hold {{author}}, {{name}}" in out
    filled = DataArgs(dataset_dir=str(world.data), dataset_placeholders={"name": "N", "author": "A"})
    load_examples(["identity"], filled, seed=1)
    assert "warning" not in capsys.readouterr().out


def test_export_without_adapter_says_nothing_was_merged(world, capsys):
    code, out, err = run_cli(["export", world.config(export_dir=str(world.root / "exp"), export_dtype="float32")],
                             capsys)
    assert code == 0, err
    assert "nothing merged: the base model re-saved" in out
    assert "merged model written" not in out
