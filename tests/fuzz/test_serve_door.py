"""The server's door: any request body is a valid ChatCompletionRequest / CompletionRequest or a pydantic
ValidationError, never another exception; through the FastAPI app (no model loaded: every valid body names an
unknown model) it is answered 400 or 404 with one line of OpenAI-shaped error, never a 500."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from instill.infer.serve.protocol import ChatCompletionRequest, CompletionRequest
from tests.fuzz.helpers import examples, time_limit

texts = st.text(max_size=10) | st.sampled_from(["", "tiny", "hi", "data:image/png;base64,AAAA", "{}", '{"a": 1}'])
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | texts)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(texts, inner, max_size=3), max_leaves=5)
image_url = st.fixed_dictionaries({"url": st.sampled_from(["data:image/png;base64,AAAA", "http://x/a.png", ""])
                                   | anything}, optional={"detail": st.sampled_from(["auto", "low", "x"])})
part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]) | anything},
                             optional={"text": texts | anything, "image_url": image_url | anything})
function = st.fixed_dictionaries({"name": texts | anything}, optional={"arguments": texts | anything})
tool_call = st.fixed_dictionaries({"function": function | anything},
                                  optional={"id": texts | anything, "type": st.just("function") | anything})
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "bot"]) | anything},
    optional={"content": st.none() | texts | st.lists(part | anything, max_size=3) | anything,
              "name": texts | anything, "tool_calls": st.lists(tool_call | anything, max_size=2) | anything,
              "tool_call_id": texts | anything})
tool = st.fixed_dictionaries({"type": st.just("function") | anything,
                              "function": st.fixed_dictionaries({"name": texts | anything},
                                                                optional={"parameters": anything}) | anything})
numbers = st.none() | st.integers(-3, 5000) | st.floats(-1, 3, allow_nan=False) | anything
COMMON = {"max_tokens": numbers, "temperature": numbers, "top_p": numbers, "n": numbers, "seed": numbers,
          "stop": texts | st.lists(texts, max_size=5) | anything, "stream": st.booleans() | anything,
          "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | anything}) | anything,
          "user": texts | anything, "frequency_penalty": numbers, "presence_penalty": numbers,
          "logit_bias": st.dictionaries(texts, numbers, max_size=2) | anything}
chat_bodies = st.fixed_dictionaries(
    {"model": texts | anything, "messages": st.lists(message | anything, max_size=3) | anything},
    optional={**COMMON, "max_completion_tokens": numbers, "tools": st.lists(tool | anything, max_size=2) | anything,
              "tool_choice": st.sampled_from(["none", "auto", "required"]) | anything,
              "parallel_tool_calls": anything, "chat_template_kwargs": anything, "logprobs": anything,
              "top_logprobs": numbers, "response_format": st.fixed_dictionaries({"type": texts}) | anything,
              "max_token": numbers}) | anything
text_bodies = st.fixed_dictionaries(
    {"model": texts | anything, "prompt": texts | st.lists(texts, max_size=2) | anything},
    optional={**COMMON, "echo": anything, "suffix": anything, "best_of": numbers, "logprobs": numbers}) | anything


@examples(150)
@given(body=chat_bodies)
# image_url not an object: an AttributeError in a validator (a 500 from the server)
@example(body={"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 1}]}]})
def test_any_chat_body_validates_or_is_a_validation_error(body):
    request = _validated(ChatCompletionRequest, body)
    if request is not None:
        conversation = request.conversation()  # sound: what was accepted is what a chat template renders
        assert all(isinstance(m["content"], str) and m["role"] in ("system", "user", "assistant", "tool")
                   for m in conversation)
        assert request.stop is not None and len(request.stop) <= 4


@examples(80)
@given(body=text_bodies)
def test_any_completion_body_validates_or_is_a_validation_error(body):
    request = _validated(CompletionRequest, body)
    assert request is None or isinstance(request.prompt, str)


def _validated(model, body):
    """The request, or None for a ValidationError; any other exception fails the test."""
    with time_limit():
        try:
            return model.model_validate(body)
        except ValidationError:
            return None


@pytest.fixture(scope="module")
def client():
    from starlette.testclient import TestClient

    from instill.infer.serve.batching import Batcher
    from instill.infer.serve.served import ServedModels
    from instill.infer.serve.server import build_app

    batcher = Batcher(lambda rows: None)
    served = ServedModels(model=None, models={}, context=512, pad_id=0, multi_adapter=False)
    with TestClient(build_app(served, batcher), raise_server_exceptions=False) as test_client:
        yield test_client
    batcher.close()


def _answered(client, route: str, data: bytes, valid: bool | None) -> None:
    with time_limit():
        response = client.post(route, content=data, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 404), (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert not re.search(r"[\r\n]", error["message"]), error["message"]
    if valid is not None:  # the app agrees with the models: a valid body reaches the (unknown) model
        assert (response.status_code == 404) == valid, (valid, error)


@examples(100)
@given(body=chat_bodies | text_bodies, route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
       raw=st.none() | st.binary(max_size=40) | st.sampled_from([b"", b"{", b"[]", b"null", b'{"model": NaN}',
                                                                 b'{"model": "m", "messages": [' * 50]))
@example(body={}, route="/v1/chat/completions", raw=b"[" * 5000)
def test_any_body_through_the_app_is_400_or_404_never_500(client, body, route, raw):
    model = ChatCompletionRequest if route == "/v1/chat/completions" else CompletionRequest
    if raw is not None:
        _answered(client, route, raw, None)
        return
    _answered(client, route, json.dumps(body).encode(), _validated(model, body) is not None)
