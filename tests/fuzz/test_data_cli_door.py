"""`instill data` on fuzzed files, in this process: exit 0 with every input row counted (rows in = out + dropped,
and the output files hold `out` rows), or exit 2 with one stderr line naming the file."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from instill.errors import DataError
from instill.prep.self_instruct import read_templates
from tests.fuzz.helpers import accepted_or_refused, cli_ok_or_one_line, examples

texts = st.text(max_size=12) | st.sampled_from(["", " ", "hello world", "你好，世界", "\u2028", "a\nb"])
anything = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts | st.lists(texts, max_size=2)
turns = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                                        "content": texts | anything}), max_size=4)
alpaca = st.fixed_dictionaries({"instruction": texts, "output": texts},
                               optional={"input": texts | anything, "system": texts, "label": texts,
                                         "history": st.lists(st.lists(texts, max_size=3), max_size=2) | anything})
rows = alpaca | st.fixed_dictionaries({"messages": turns | anything}) \
    | st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries({"from": texts, "value": texts}),
                                                       max_size=3) | anything}) \
    | st.dictionaries(texts, anything, max_size=3)
lines = st.lists(rows.map(lambda r: json.dumps(r, ensure_ascii=False)) | st.sampled_from(["", "{", "[]", "1"]),
                 min_size=1, max_size=6)
files = lines.map(lambda ls: "\n".join(ls).encode()) | st.binary(max_size=60)

COMMANDS = {  # name -> argv after `instill data`, given the input file and a scratch folder
    "dedup": lambda f, d: ["dedup", f, "--out", f"{d}/o.jsonl", "--num-perm", "16"],
    "filter": lambda f, d: ["filter", f, "--max-chars", "8", "--min-chars", "1", "--blacklist", "x", "--out",
                            f"{d}/o.jsonl"],
    "split": lambda f, d: ["split", f, "--ratios", "0.5,0.5", "--out-dir", d],
    "mix": lambda f, d: ["mix", f"{f}:3", "--out", f"{d}/o.jsonl"],
    "convert": lambda f, d: ["convert", "--input", f, "--preset", "generic", "--instruction", "hi", "--input-column",
                             "instruction", "--output-column", "output", "--out", f"{d}/o.jsonl"],
    "augment": lambda f, d: ["augment", f, "--synonyms", f"{d}/syn.json", "--out", f"{d}/o.jsonl"],
}
_COUNTS = re.compile(r"(\d+) rows in, (\d+) out, (\d+) dropped")


def _output_rows(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.jsonl") if p.name != "in.jsonl"
               for line in p.read_text(encoding="utf-8").split("\n") if line.strip())  # not splitlines: U+2028 is text


@pytest.mark.parametrize("command", sorted(COMMANDS))
@examples(30)
@given(content=files)
@example(content=b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"}')
@example(content=b'{"messages": true}')  # TypeError in register.entry_for (split, mix, dedup, filter)
@example(content=b'{"\\n0": null}')  # a column name with a line break: a two-line error
@example(content=b'{"instruction": "", "output": ""}')  # split named a file it had not written (in_train.jsonl)
@example(content=b'{"instruction": "0", "output": "0"}\n{"\\n": null}')  # the second row's column list: 2 lines
@example(content=b'{"instruction": "0", "output": "0", "input": "\xe2\x80\xa8"}')  # U+2028 inside a value
def test_data_commands_count_every_row_or_name_the_file(command, content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(content)
        (Path(tmp) / "syn.json").write_text('{"a": ["b"]}')
        code, out, _ = cli_ok_or_one_line(["data", *COMMANDS[command](str(path), tmp)], str(path),
                                          str(Path(tmp) / "o.jsonl"))
        counts = _COUNTS.search(out)
        if code == 0 and counts:  # every row counted: in = out + dropped, and `out` rows were written
            rows_in, rows_out, dropped = map(int, counts.groups())
            if command not in ("augment", "mix"):  # these add rows (variants, upsampling)
                assert rows_in == rows_out + dropped, out
            assert _output_rows(Path(tmp)) == rows_out, out
            non_blank = sum(1 for line in re.split(rb"\r\n|\r|\n", content) if line.strip())
            assert rows_in == non_blank, out


@examples(8)  # each run draws a PNG (~1 s)
@given(content=files)
@example(content=b'{"messages": true}')
def test_data_stats_counts_every_row_or_names_the_file(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(content)
        code, out, _ = cli_ok_or_one_line(["data", "stats", str(path), "--plot", f"{tmp}/p.png", "--json",
                                           f"{tmp}/s.json"], str(path))
        if code == 0:  # every non-blank line is a row, good or counted bad
            rows = int(re.search(r": (\d+) rows", out).group(1))
            assert rows == sum(1 for line in re.split(rb"\r\n|\r|\n", content) if line.strip()), out


# ---------------------------------------------------------------- plain-text side files

side = st.text(max_size=40) | st.binary(max_size=40) | st.sampled_from([b"\xff\xfe", b"[1, 2", b"[]", b"\n\n"])


@examples(60)
@given(content=side, which=st.sampled_from(["--instruction-file", "--instruction-variants", "--synonyms",
                                            "--label-map"]))
@example(content=b"\x80", which="--instruction-file")  # UnicodeDecodeError tracebacks: files read as UTF-8
@example(content=b"\x80", which="--instruction-variants")  # without instill's one-line decoding error
@example(content=b"\x80", which="--synonyms")
@example(content=b"\x80", which="--label-map")
def test_plain_text_side_files_are_read_or_named(content, which):
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "in.jsonl"
        rows.write_text('{"instruction": "a", "input": "", "output": "b", "text": "t", "label": "x"}\n')
        side_file = Path(tmp) / "side.txt"
        side_file.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        out = ["--out", f"{tmp}/o.jsonl"]
        argv = {
            "--instruction-file": ["convert", "--input", str(rows), "--instruction-file", str(side_file),
                                   "--input-column", "input", "--output-column", "output", *out],
            "--instruction-variants": ["augment", str(rows), "--instruction-variants", str(side_file), *out],
            "--synonyms": ["augment", str(rows), "--synonyms", str(side_file), *out],
            "--label-map": ["convert", "--input", str(rows), "--preset", "classification", "--text-field", "text",
                            "--label-field", "label", "--label-map", str(side_file), *out],
        }[which]
        cli_ok_or_one_line(["data", *argv], str(side_file), f"{tmp}/o.jsonl")


@examples(60)
@given(templates=side, slots=side)
@example(templates=b"\x80", slots=b"{}")  # a UnicodeDecodeError traceback
def test_template_and_slot_files_are_read_or_named(templates, slots):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, content in (("t.txt", templates), ("s.json", slots)):
            paths.append(Path(tmp) / name)
            paths[-1].write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        accepted_or_refused(lambda: read_templates(str(paths[0]), str(paths[1]), None, 0), "--template-file",
                            *map(str, paths), error=DataError)
