"""The data door: any dataset_info.json and any file in every format the readers take (JSON, JSON Lines,
CSV/TSV, parquet, Excel, plain text) either reads, every row accounted for, or is one DataError line naming the
file (and the line or row where there is one)."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from instill.data.readers import file_rows
from instill.data.registry import ENTRY_KEYS, FORMATTINGS, TAG_KEYS, load_registry
from instill.errors import DataError
from instill.prep.io import read_table
from tests.fuzz.helpers import accepted_or_refused, examples

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
rows = st.dictionaries(st.sampled_from(["instruction", "input", "output", "text", "messages"]) | st.text(max_size=5),
                       json_values, max_size=4)
# Bytes that are often not UTF-8, or hold a BOM, NUL or a lone surrogate's encoding.
bad_bytes = st.binary(max_size=120) | st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\xed\xa0\x80"])


def _file(root: Path, suffix: str, content: str | bytes) -> Path:
    path = root / f"data{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


def _read(path: Path, encoding: str | None = None) -> list | None:
    return accepted_or_refused(lambda: list(file_rows(path, encoding=encoding)), str(path), error=DataError)


@examples(100)
@given(content=bad_bytes, suffix=st.sampled_from([".json", ".jsonl", ".csv", ".tsv"]),
       encoding=st.sampled_from(["utf-8", "gbk", "gb18030", "big5", "utf-16", "latin-1"]))
@example(content=b"\x00\x00\x00\x00", suffix=".json", encoding="utf-16")  # UnicodeError: no BOM, a traceback
@example(content=b"\x00\x00\x00\x00", suffix=".jsonl", encoding="utf-16")
@example(content=b"\x00\x00\x00\x00", suffix=".csv", encoding="utf-16")
def test_any_bytes_in_any_named_encoding_read_or_name_the_file(content, suffix, encoding):
    with tempfile.TemporaryDirectory() as tmp:
        _read(_file(Path(tmp), suffix, content), encoding)


# ---------------------------------------------------------------- dataset_info.json

entries = st.dictionaries(
    st.sampled_from(ENTRY_KEYS) | st.text(max_size=8),
    json_values | st.sampled_from([*FORMATTINGS, "a.json", "gbk", "utf-16", "nope"])
    | st.dictionaries(st.sampled_from(["prompt", "query", "response", "messages", "system", *TAG_KEYS]), json_values,
                      max_size=3),
    max_size=5)


@examples(200)
@given(info=st.dictionaries(st.text(max_size=8), entries | json_values, max_size=3) | json_values,
       junk=st.none() | bad_bytes)
@example(info={"\r": None}, junk=None)  # a dataset name or key holding a line break made a two-line error
@example(info={"a": {"\n": 1}}, junk=None)
@example(info={"a": {"file_name": "a.json", "encoding": "a\nb"}}, junk=None)
def test_any_dataset_info_loads_or_is_one_line(info, junk):
    with tempfile.TemporaryDirectory() as tmp:
        path = _file(Path(tmp), "", junk if junk is not None else json.dumps(info))
        path.rename(Path(tmp) / "dataset_info.json")
        registry = accepted_or_refused(lambda: load_registry(tmp), "dataset_info.json", error=DataError)
        if registry is not None:  # sound: every entry, each with a formatting instill reads
            assert isinstance(info, dict) and junk is None and list(registry) == list(info)
            assert all(spec.formatting in FORMATTINGS for spec in registry.values())


# ---------------------------------------------------------------- JSON Lines and JSON


def _lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text)  # text-mode reading: universal newlines


@examples(200)
@given(parts=st.lists(rows.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=20), max_size=6),
       newline=st.sampled_from(["\n", "\r\n"]), junk=st.none() | bad_bytes)
def test_any_jsonl_reads_every_line_or_names_it(parts, newline, junk):
    with tempfile.TemporaryDirectory() as tmp:
        text = newline.join(parts)
        path = _file(Path(tmp), ".jsonl", junk if junk is not None else text)
        got = _read(path)
        if got is not None and junk is None:  # no row dropped: one row per non-blank line, sourced by line
            expected = [n for n, line in enumerate(_lines(text), 1) if line.strip()]
            assert [source for source, _ in got] == [f"{path}:{n}" for n in expected]


@examples(200)
@given(records=st.lists(rows | json_values, max_size=5), text=st.none() | st.text(max_size=40),
       junk=st.none() | bad_bytes)
def test_any_json_reads_every_record_or_names_it(records, text, junk):
    with tempfile.TemporaryDirectory() as tmp:
        content = junk if junk is not None else text if text is not None else json.dumps(records, indent=1)
        path = _file(Path(tmp), ".json", content)
        got = _read(path)
        if got is not None and junk is None and text is None:
            assert [row for _, row in got] == records


# ---------------------------------------------------------------- CSV / TSV

cells = st.text(max_size=8) | st.sampled_from(['"', '""', ",", "\t", "\n", "\r\n", "a,b", " "])


@examples(200)
@given(table=st.integers(1, 4).flatmap(lambda width: st.lists(st.lists(cells, min_size=width, max_size=width),
                                                             min_size=1, max_size=5)),
       delimiter=st.sampled_from([",", "\t"]), text=st.none() | st.text(max_size=60), junk=st.none() | bad_bytes)
@example(table=[["a"], [""]], delimiter=",", text=None, junk=None)
def test_any_csv_reads_every_record_or_names_it(table, delimiter, text, junk):
    suffix = ".csv" if delimiter == "," else ".tsv"
    with tempfile.TemporaryDirectory() as tmp:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter).writerows(table)
        content = junk if junk is not None else text if text is not None else buffer.getvalue()
        path = _file(Path(tmp), suffix, content)
        got = _read(path)
        if got is not None and junk is None and text is None:  # written by csv: every record comes back
            header, *body = table
            assert [list(row.values()) for _, row in got] == [r for r in body if r != []]
            assert all(list(row) == header for _, row in got)


# ---------------------------------------------------------------- parquet, Excel, plain text

columns = st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from(["str", "int", "float"]), min_size=1,
                          max_size=3)


@examples(60)
@given(spec=columns, height=st.integers(0, 4), data=st.data(), junk=st.none() | bad_bytes)
def test_any_parquet_reads_every_row_or_names_it(spec, height, data, junk):
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"str": st.text(max_size=6), "int": st.integers(-2**63, 2**63 - 1), "float": st.floats()}
    table = {name: data.draw(st.lists(st.none() | kinds[kind], min_size=height, max_size=height))
             for name, kind in spec.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        if junk is not None:
            path.write_bytes(junk)
        else:
            pq.write_table(pa.table(table), path)
        got = _read(path)
        if junk is None:
            assert got is not None and len(got) == height
            assert [list(row) for _, row in got] == [list(spec)] * height


@examples(30)
@given(table=st.lists(st.lists(st.none() | st.text(max_size=6).filter(lambda s: s.isprintable()) | st.integers(-999, 999),
                               min_size=2, max_size=2), min_size=1, max_size=4),
       header=st.booleans(), junk=st.none() | bad_bytes)
def test_any_excel_reads_every_row_or_names_it(table, header, junk):
    from openpyxl import Workbook

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.xlsx"
        if junk is not None:
            path.write_bytes(junk)
        else:
            book = Workbook()
            for row in [["a", "b"] if header else None, *table]:
                if row is not None:
                    book.active.append(row)
            book.save(path)
        got = accepted_or_refused(lambda: read_table(path, header=header), str(path), error=DataError)
        if junk is None and got is not None:  # every row with a value comes back, sourced by its sheet row
            filled = [n for n, row in enumerate(table, 2 if header else 1) if any(v not in (None, "") for v in row)]
            assert [source for source, _ in got] == [f"{path}:{n}" for n in filled]
        elif junk is None:
            assert not any(v not in (None, "") for row in table for v in row)


@examples(30)
@given(content=st.text(max_size=40) | bad_bytes, suffix=st.sampled_from([".txt", ".md", "", ".JSONL", ".Csv"]))
def test_other_files_are_refused_or_read_by_their_type(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = _file(Path(tmp), suffix, content)
        accepted_or_refused(lambda: read_table(path), str(path), error=DataError)
