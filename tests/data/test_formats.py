"""Rows -> Example for alpaca, sharegpt and openai, on LLaMA-Factory's demo files and planted bad rows."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.registry import DatasetSpec, read_rows, resolve
from instill.errors import DataError
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
ALPACA_ZH = SHARED / "llamafactory_alpaca_zh_demo/alpaca_zh_demo.json"
ALPACA_EN = SHARED / "llamafactory_alpaca_en_demo/alpaca_en_demo.json"
IDENTITY = SHARED / "llamafactory_identity/identity.json"
GLAIVE = SHARED / "llamafactory_glaive_toolcall_zh_demo/glaive_toolcall_zh_demo.json"
FUDAN = SHARED / "cls_fudan_derived_msswiftlearn/fudan_news_4class__val.jsonl"
FIREFLY = SHARED / "instr_firefly_dummy_multiturn/dummy_data.jsonl"
ROLE_CONTENT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def write_info(folder: Path, entries: dict) -> Path:
    (folder / "dataset_info.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return folder


def examples(name: str, folder: Path) -> list[Example]:
    (spec,) = resolve([name], folder)
    return [to_example(row, spec, source) for source, row in read_rows(spec, folder)]


def one(row: dict, formatting: str = "alpaca", **spec_fields) -> Example:
    return to_example(row, DatasetSpec(name="t", file_name="t.json", formatting=formatting, **spec_fields), "t.json:#0")


@pytest.fixture
def shared(tmp_path):
    return write_info(
        tmp_path,
        {
            "alpaca_zh_demo": {"file_name": str(ALPACA_ZH)},
            "alpaca_en_demo": {"file_name": str(ALPACA_EN)},
            "identity": {"file_name": str(IDENTITY)},
            "glaive_toolcall_zh_demo": {
                "file_name": str(GLAIVE),
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "tools": "tools"},
            },
            "fudan_openai": {"file_name": str(FUDAN), "formatting": "openai"},
            "fudan_sharegpt_tags": {
                "file_name": str(FUDAN),
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": {**ROLE_CONTENT_TAGS, "system_tag": "system"},
            },
            "fudan_sharegpt_untagged": {"file_name": str(FUDAN), "formatting": "sharegpt", "columns": {"messages": "messages"}},
            "firefly": {"file_name": str(FIREFLY), "formatting": "sharegpt"},
            "firefly_conversation": {"file_name": str(FIREFLY), "formatting": "sharegpt", "columns": {"messages": "conversation"}},
        },
    )


# ---------------------------------------------------------------- real files


def test_alpaca_zh_demo(shared):
    exs = examples("alpaca_zh_demo", shared)
    assert len(exs) == 1000
    assert all(ex.roles == ["user", "assistant"] and ex.extras == {} and ex.tools is None for ex in exs)
    assert exs[0].messages[0]["content"] == "识别并解释给定列表中的两个科学理论：细胞理论和日心说。"  # empty input: no "\n"
    assert exs[1].messages[0]["content"] == "输入三支篮球队的名称并生成一个适当的口号。\n输入：俄克拉荷马城雷霆队，芝加哥公牛队，布鲁克林网队。"
    assert exs[1].messages[1]["content"] == '输出： "雷霆，公牛和网队：各显神通，角逐群雄!"'
    assert exs[1].source == f"{ALPACA_ZH}:#1"


def test_alpaca_en_demo(shared):
    exs = examples("alpaca_en_demo", shared)
    assert len(exs) == 999  # the file holds 999 records
    raw = json.loads(ALPACA_EN.read_text())
    with_input = next(i for i, r in enumerate(raw) if r["input"])
    assert exs[with_input].messages[0]["content"] == raw[with_input]["instruction"] + "\n" + raw[with_input]["input"]
    assert exs[-1].messages[1]["content"] == raw[-1]["output"]


def test_identity_with_placeholders_filled(shared):
    exs = examples("identity", shared)
    assert len(exs) == 91
    assert all("{{name}}" in ex.messages[1]["content"] or "{{author}}" in ex.messages[1]["content"] for ex in exs[:5])
    filled = [fill_placeholders(ex, {"name": "Instill-Bot", "author": "the instill team"}) for ex in exs]
    assert filled[0].messages[1]["content"] == (
        "Hello! I am Instill-Bot, an AI assistant developed by the instill team. How can I assist you today?"
    )
    assert not any("{{" in m["content"] for ex in filled for m in ex.messages)
    assert "{{name}}" in exs[0].messages[1]["content"]  # the original is untouched
    assert filled[0].source == exs[0].source


def test_fill_placeholders_leaves_unknown_and_accepts_spaces():
    ex = Example([{"role": "user", "content": "{{ name }} and {{other}}"}, {"role": "assistant", "content": "{{name}}"}])
    out = fill_placeholders(ex, {"name": "Bo"})
    assert [m["content"] for m in out.messages] == ["Bo and {{other}}", "Bo"]
    assert fill_placeholders(ex, {}).messages == ex.messages


def test_glaive_toolcall_zh_demo(shared):
    exs = examples("glaive_toolcall_zh_demo", shared)
    assert len(exs) == 300
    first = exs[0]
    assert first.roles == ["user", "assistant", "tool", "assistant"]
    call = first.messages[1]
    assert call["content"] == "" and call["tool_calls"][0]["type"] == "function"
    assert call["tool_calls"][0]["function"] == {
        "name": "generate_invoice",
        "arguments": {
            "customer_name": "约翰·多伊",
            "items": [{"name": "苹果", "quantity": 2, "price": 1}, {"name": "香蕉", "quantity": 3, "price": 0.5}],
        },
    }
    assert json.loads(first.messages[2]["content"])["invoice_id"] == "INV12345"
    assert first.tools[0]["type"] == "function" and first.tools[0]["function"]["name"] == "generate_invoice"
    assert set(first.tools[0]["function"]) == {"name", "description", "parameters"}
    # SOURCE.txt: 216 function_call and 218 observation turns in the file
    calls = [m for ex in exs for m in ex.messages if "tool_calls" in m]
    assert len(calls) == 216
    assert all(isinstance(c["function"]["arguments"], dict) for m in calls for c in m["tool_calls"])
    assert sum(ex.roles.count("tool") for ex in exs) == 218
    assert any(ex.tools is None for ex in exs)  # rows with tools "[]"
    assert all(ex.extras == {} for ex in exs)


@pytest.mark.parametrize("name", ["fudan_openai", "fudan_sharegpt_tags", "fudan_sharegpt_untagged"])
def test_fudan_openai_messages_keep_label_in_extras(shared, name):
    exs = examples(name, shared)
    assert len(exs) == 320
    assert all(ex.roles == ["system", "user", "assistant"] for ex in exs)
    assert {ex.extras["label"] for ex in exs} == {"政治", "财经", "体育", "计算机"}
    assert exs[0].extras == {"label": "财经", "source_label": "Economy", "record_id": "Economy-val-0024"}
    assert exs[0].messages[0]["content"].startswith("你是中文新闻分类器。")
    assert exs[0].source == f"{FUDAN}:1"


def test_firefly_is_not_sharegpt_and_says_why(shared):
    with pytest.raises(DataError) as err:
        examples("firefly", shared)
    assert str(err.value) == (
        f"{FIREFLY}:1: missing column 'conversations' "
        "(row has: conversation_id, category, conversation, dataset; closest: 'conversation')"
    )
    with pytest.raises(DataError) as err:
        examples("firefly_conversation", shared)
    assert str(err.value).startswith(f"{FIREFLY}:1: message 0 has no role key 'from' (its keys: human, assistant)")


# ---------------------------------------------------------------- planted bad rows, named by file and line


def planted(tmp_path: Path, file_name: str, text: str, entry: dict) -> Path:
    path = tmp_path / file_name
    path.write_text(text, encoding="utf-8")
    write_info(tmp_path, {"d": {"file_name": file_name, **entry}})
    return path


def jsonl(*rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


GOOD_TURNS = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]


def test_two_user_turns_in_a_row(tmp_path):
    bad = [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "c"}]
    path = planted(tmp_path, "c.jsonl", jsonl({"conversations": GOOD_TURNS}, {"conversations": bad}), {"formatting": "sharegpt"})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value) == (
        f"{path}:2: message 1: expected 'gpt' or 'function_call' but got 'human' (roles: human, human, gpt)"
    )


def test_unknown_role_lists_configured_tags(tmp_path):
    bad = [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]
    path = planted(tmp_path, "c.json", json.dumps([{"conversations": GOOD_TURNS}] * 2 + [{"conversations": bad}]),
                   {"formatting": "sharegpt"})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value) == (
        f"{path}:#2: message 1: unknown role 'bot' (configured tags: user_tag='human', assistant_tag='gpt', "
        "observation_tag='observation', function_tag='function_call', system_tag='system')"
    )


@pytest.mark.parametrize(
    "turns, message",
    [
        ([{"from": "human", "value": "a"}], "message 0: the last message must be 'gpt' or 'function_call', got 'human'"),
        ([{"from": "gpt", "value": "a"}], "message 0: expected 'human' or 'observation' but got 'gpt'"),
        ([{"from": "system", "value": "s"}], "no turns after the system message (roles: system)"),
        (GOOD_TURNS + [{"from": "system", "value": "s"}, {"from": "gpt", "value": "x"}],
         "message 2: expected 'human' or 'observation' but got 'system'"),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "  "}], "message 1 ('gpt') is empty"),
        ([{"from": "human", "value": "a"}, {"from": "function_call", "value": "{\"name\": \"f\", "}],
         "message 1: function call is not valid JSON"),
        ([{"from": "human", "value": "a"}, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": \"{oops\"}"}],
         "message 1: arguments of 'f' are not valid JSON"),
        ([{"from": "human", "value": "a"}, {"from": "gpt"}], "message 1 has no content key 'value'"),
        ([{"from": "human", "value": ["a"]}, {"from": "gpt", "value": "b"}], "message 0: content must be a string, got list"),
        ([], "column 'conversations' has no messages"),
    ],
)
def test_bad_conversations_name_the_line(tmp_path, turns, message):
    path = planted(tmp_path, "c.jsonl", jsonl({"conversations": GOOD_TURNS}, {"conversations": GOOD_TURNS},
                                              {"conversations": turns}), {"formatting": "sharegpt"})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value).startswith(f"{path}:3: {message}")


def test_missing_output_column(tmp_path):
    path = planted(tmp_path, "a.json", json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q", "outptu": "a"}]), {})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value) == f"{path}:#1: missing column 'output' (row has: instruction, outptu; closest: 'outptu')"


def test_empty_output(tmp_path):
    path = planted(tmp_path, "a.jsonl", jsonl({"instruction": "q", "output": "a"}, {"instruction": "q", "input": "x", "output": ""}), {})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value) == f"{path}:2: empty response in column 'output'"


def test_csv_alpaca_rows_and_bad_row_line(tmp_path):
    text = 'instruction,input,output,label\nq1,,a1,pos\n"two\nlines",ctx,a2,neg\nq3,,,pos\n'
    path = planted(tmp_path, "a.csv", text, {})
    (spec,) = resolve(["d"], tmp_path)
    rows = read_rows(spec, tmp_path)
    first, second = (to_example(r, spec, s) for s, r in (next(rows), next(rows)))
    assert first.messages == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    assert first.extras == {"label": "pos"} and first.source == f"{path}:2"
    assert second.messages[0]["content"] == "two\nlines\nctx"
    with pytest.raises(DataError, match=rf"^{path}:5: empty response in column 'output'$"):
        source, row = next(rows)
        to_example(row, spec, source)


def test_parquet_alpaca_bad_row_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"q": ["q0", "q1", "q2"], "a": ["a0", "a1", None]}), path)
    write_info(tmp_path, {"d": {"file_name": "a.parquet", "columns": {"prompt": "q", "response": "a"}}})
    with pytest.raises(DataError) as err:
        examples("d", tmp_path)
    assert str(err.value) == f"{path}:#2: empty response: column 'a' is null"


# ---------------------------------------------------------------- alpaca details


def test_alpaca_system_history_tools_and_extras():
    row = {
        "instruction": "and now?",
        "input": "",
        "output": "done",
        "sys": "be brief",
        "hist": [["hi", "hello"], ["how?", "fine"]],
        "tools": '[{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]',
        "id": 7,
    }
    ex = one(row, columns={"system": "sys", "history": "hist", "tools": "tools"})
    assert ex.roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert ex.messages[0]["content"] == "be brief" and ex.messages[3]["content"] == "how?"
    assert ex.tools == [{"type": "function", "function": {"name": "f", "description": "d",
                                                          "parameters": {"type": "object", "properties": {}}}}]
    assert ex.tools.text == row["tools"]  # the column's own text, beside the wrapped tools
    assert ex.tools.value == json.loads(row["tools"])
    assert copy.deepcopy(ex.tools).text == pickle.loads(pickle.dumps(ex.tools)).text == row["tools"]
    assert ex.extras == {"id": 7}
    assert ex.source == "t.json:#0"


def test_alpaca_query_only_and_missing_input_column():
    assert one({"instruction": "", "input": "just input", "output": "o"}).messages[0]["content"] == "just input"
    assert one({"instruction": "only", "output": "o"}).messages[0]["content"] == "only"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"instruction": "", "input": "", "output": "o"}, "empty prompt: 'instruction' and 'input' are empty"),
        ({"instruction": "q", "output": ["a", "b"]}, "column 'output' is a list: candidate responses are preference"),
        ({"instruction": "q", "output": 3}, "column 'output' must be a string, got int"),
        ({"output": "o"}, "missing column 'instruction'"),
        ({"instruction": "q", "output": "o", "history": [["only one"]]}, "history[0] must be a [user, assistant] pair"),
        ({"instruction": "q", "output": "o", "history": "not json"}, "column 'history': invalid JSON"),
        ({"instruction": "q", "output": "o", "tools": "[{bad"}, "column 'tools': invalid JSON"),
        ({"instruction": "q", "output": "o", "tools": [{"description": "no name"}]}, "tools[0]: expected {\"name\""),
    ],
)
def test_alpaca_bad_rows(row, message):
    with pytest.raises(DataError) as err:
        one(row, columns={"history": "history", "tools": "tools"})
    assert str(err.value).startswith(f"t.json:#0: {message}")


# ---------------------------------------------------------------- conversation details


def test_sharegpt_function_call_list_and_string_arguments():
    turns = [
        {"from": "human", "value": "weather in two cities?"},
        {"from": "function_call", "value": json.dumps([
            {"name": "weather", "arguments": '{"city": "Paris"}'},
            {"name": "weather", "arguments": {"city": "Oslo"}},
        ])},
        {"from": "observation", "value": "sunny"},
        {"from": "observation", "value": "rain"},
        {"from": "gpt", "value": "Paris sunny, Oslo rain."},
    ]
    ex = one({"conversations": turns, "tools": [{"type": "function", "function": {"name": "weather"}}]}, "sharegpt",
             columns={"tools": "tools"})
    assert ex.roles == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["function"]["arguments"] for c in ex.messages[1]["tool_calls"]] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert ex.tools == [{"type": "function", "function": {"name": "weather"}}]
    assert ex.tools.text == '[{"type": "function", "function": {"name": "weather"}}]'  # a list: its JSON


def test_sharegpt_leading_system_and_system_column():
    turns = [{"from": "system", "value": "sys"}] + GOOD_TURNS
    assert one({"conversations": turns}, "sharegpt").messages[0] == {"role": "system", "content": "sys"}
    ex = one({"conversations": GOOD_TURNS, "sys": "column sys"}, "sharegpt", columns={"system": "sys"})
    assert ex.roles == ["system", "user", "assistant"] and ex.extras == {}
    with pytest.raises(DataError, match="both a leading system message and a system column 'sys'"):
        one({"conversations": turns, "sys": "column sys"}, "sharegpt", columns={"system": "sys"})


def test_sharegpt_custom_tags_and_json_string_messages():
    turns = json.dumps([{"speaker": "USER", "text": "q"}, {"speaker": "BOT", "text": "a"}])
    ex = one({"dialog": turns}, "sharegpt", columns={"messages": "dialog"},
             tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "USER", "assistant_tag": "BOT"})
    assert ex.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_openai_tool_calls_and_tool_messages():
    row = {
        "messages": [
            {"role": "user", "content": "time in Tokyo and Lima?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\": \"Asia/Tokyo\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\": \"America/Lima\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "09:00"},
            {"role": "tool", "tool_call_id": "c2", "content": "19:00"},
            {"role": "assistant", "content": "Tokyo 09:00, Lima 19:00."},
        ],
        "tools": [{"type": "function", "function": {"name": "clock", "parameters": {}}}],
        "weight": 0.5,
    }
    ex = one(row, "openai")
    assert ex.roles == ["user", "assistant", "tool", "tool", "assistant"]
    assert ex.messages[1]["content"] == ""
    assert ex.messages[1]["tool_calls"][1] == {"type": "function", "id": "c2",
                                               "function": {"name": "clock", "arguments": {"tz": "America/Lima"}}}
    assert ex.messages[2] == {"role": "tool", "content": "09:00", "tool_call_id": "c1"}
    assert ex.tools[0]["function"]["name"] == "clock"
    assert ex.extras == {"weight": 0.5}


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
         "message 1: expected 'assistant' or 'function_call' but got 'user' (roles: user, user)"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "message 1: unknown role 'robot'"),
        ([{"role": "user", "content": "a", "tool_calls": [{"function": {"name": "f"}}]}, {"role": "assistant", "content": "b"}],
         "message 0: only an assistant message ('assistant') may carry tool_calls"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "args": {}}}]}],
         "message 1: function call has unexpected keys ['args']"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}],
         "message 1: function call has no 'name'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}],
         "message 1: arguments of 'f' must be an object, got list"),
    ],
)
def test_openai_bad_rows(messages, message):
    with pytest.raises(DataError) as err:
        one({"messages": messages}, "openai")
    assert str(err.value).startswith(f"t.json:#0: {message}")


def test_unknown_formatting_on_a_spec_built_in_code():
    spec = DatasetSpec(name="t", file_name="t.json")
    spec.formatting = "chatml"
    with pytest.raises(DataError, match="t.json:#0: unknown formatting 'chatml'"):
        to_example({"instruction": "q", "output": "a"}, spec, "t.json:#0")
