"""The pieces under the server: incremental decoding, stop strings, tool-call parsing, request validation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from instill.infer.serve.protocol import ChatCompletionRequest, CompletionRequest
from instill.infer.serve.rows import IncrementalDecoder, Row, partial_stop
from instill.infer.serve.server import exposure_warning
from instill.infer.serve.toolcalls import ToolCallSplitter, parse_tool_calls

TEXTS = ["Hello, world! 你好，世界。", "emoji 🤖🎉 and café", "  leading spaces\n\ttabs\nand lines  ", "<tool_call>x"]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_decoding_gives_the_whole_decode(qwen2_tokenizer, text):
    ids = qwen2_tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(qwen2_tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert "".join(deltas) == qwen2_tokenizer.decode(ids) == text
    assert all("\ufffd" not in d for d in deltas)  # half a UTF-8 character is never sent


def test_partial_stop():
    assert partial_stop("hello wor", ["world"]) == 3
    assert partial_stop("hello", ["world"]) == 0
    assert partial_stop("abc<tool", ["<tool_call>", "c<"]) == 5
    assert partial_stop("anything", []) == 0


def run_row(tokenizer, text, **kwargs):
    """Feed the tokens of `text` to a Row; (events, finish_reason, tokens taken)."""
    events = []
    row = Row([1], tokenizer, frozenset([tokenizer.convert_tokens_to_ids("<|im_end|>")]),
              kwargs.pop("max_new_tokens", 100), lambda k, v: events.append((k, v)), **kwargs)
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if row.push(token):
            break
    return events, row.finish_reason, row.tokens


def texts(events):
    return "".join(v for k, v in events if k == "text")


def test_row_stops_at_end_of_turn_stop_strings_and_budget(qwen2_tokenizer):
    events, finish, n = run_row(qwen2_tokenizer, "The answer is 42.<|im_end|>ignored")
    assert texts(events) == "The answer is 42." and finish == "stop" and events[-1] == ("end", "stop")
    assert n == len(qwen2_tokenizer("The answer is 42.<|im_end|>", add_special_tokens=False)["input_ids"])

    # a stop string split over several tokens is never partly sent, and is not part of the answer
    events, finish, _ = run_row(qwen2_tokenizer, "Step one. Observation: done", stop=("Observation:",))
    assert texts(events) == "Step one. " and finish == "stop"
    assert all("Obs" not in v for k, v in events if k == "text")

    # held-back text that turned out not to be a stop string is sent when the budget ends
    n_tokens = len(qwen2_tokenizer("Step one. Obs", add_special_tokens=False)["input_ids"])
    events, finish, _ = run_row(qwen2_tokenizer, "Step one. Obs", stop=("Observation:",), max_new_tokens=n_tokens)
    assert texts(events) == "Step one. Obs" and finish == "length"


def test_cancelled_row_finishes_without_events(qwen2_tokenizer):
    events = []
    row = Row([1], qwen2_tokenizer, frozenset(), 10, lambda k, v: events.append((k, v)))
    row.cancel()
    assert row.push(100) and row.finish_reason == "cancelled" and events == []


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>'


def test_parse_tool_calls():
    [call] = parse_tool_calls(CALL)
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "巴黎"}
    two = parse_tool_calls(CALL + "\n" + CALL.replace("巴黎", "Rome"))
    assert [json.loads(c["function"]["arguments"])["city"] for c in two] == ["巴黎", "Rome"]
    assert two[0]["id"] != two[1]["id"]
    assert parse_tool_calls(CALL.removesuffix("</tool_call>"))  # cut off at end of turn, JSON complete
    assert parse_tool_calls("<tool_call>\n{not json}\n</tool_call>") is None
    assert parse_tool_calls("no call here") is None


def test_tool_call_splitter_streams_content_and_holds_the_call():
    splitter = ToolCallSplitter()
    shown = [splitter.feed(piece) for piece in ["Let me ", "check.<tool", "_call>\n{\"name\": ", "\"f\"}</tool_call>"]]
    assert shown == ["Let me", " check.", "", ""]  # a space waits for the text after it
    rest, calls = splitter.finish()
    assert rest == "" and calls[0]["function"] == {"name": "f", "arguments": "{}"}

    broken = ToolCallSplitter()
    assert broken.feed("a <tool_call> not json") == "a"
    assert broken.finish() == (" <tool_call> not json", None)  # nothing is lost
    plain = ToolCallSplitter()
    assert plain.feed("x <tool") == "x" and plain.finish() == (" <tool", None)


def test_requests_are_validated_strictly():
    ok = ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}], max_completion_tokens=5, stop="END")
    conversation = ok.conversation()
    assert conversation[0] == {"role": "system", "content": "Be brief."}
    assert conversation[2]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}
    assert ok.max_tokens == 5 and ok.stop == ["END"]
    assert ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}]).stop == []

    bad = [
        {"messages": [{"role": "user", "content": "x"}], "n": 3},
        {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
        {"messages": [{"role": "user", "content": "x"}], "stop": [""]},
        {"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5},
        {"messages": [{"role": "user", "content": "x"}], "logprobs": True},
        {"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "top_p": 0},
        {"messages": [{"role": "user", "tool_calls": [{"function": {"name": "f"}}], "content": "x"}]},
        {"messages": [{"role": "assistant", "content": None,
                       "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            ChatCompletionRequest(model="m", **body)
    assert CompletionRequest(model="m", prompt=["one"]).prompt == "one"
    for body in [{"prompt": ["a", "b"]}, {"prompt": "a", "echo": True}, {"prompt": "a", "best_of": 2}]:
        with pytest.raises(ValidationError):
            CompletionRequest(model="m", **body)


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "key") is None
    assert "without an API key" in exposure_warning("0.0.0.0", None)


def test_template_kwargs_reach_the_tokenizer_template(served):
    """chat_template_kwargs (e.g. enable_thinking) are variables of the tokenizer's own jinja template."""
    import copy

    from instill.data.templates import get_template
    from instill.infer.serve.served import ServedModel

    tokenizer = copy.deepcopy(served.models["alpha"].tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{{ m.content }}{% endfor %}"
                               "{% if enable_thinking %}<think>{% endif %}<|im_end|>")
    model = ServedModel("t", None, tokenizer, get_template("auto", tokenizer), "test")
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.decode(model.chat_prompt(messages)) == "hi<|im_end|>"
    assert tokenizer.decode(model.chat_prompt(messages, template_kwargs={"enable_thinking": True})) == \
        "hi<think><|im_end|>"
