"""The OpenAI API of `instill serve`, driven with the official `openai` client (tiny Qwen2, two adapters)."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

HELLO = [{"role": "user", "content": "Hello! Who are you?"}]
MODELS = ("tiny", "alpha", "beta")


def ask(client, model="alpha", messages=HELLO, **kwargs):
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=messages, **kwargs)


def streamed(client, model="alpha", messages=HELLO, **kwargs):
    """(text, finish_reason, usage, number of content chunks) of a streamed answer."""
    kwargs.setdefault("temperature", 0)
    parts, finish, usage, chunks = [], None, None, 0
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True,
                                                stream_options={"include_usage": True}, **kwargs):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
                chunks += 1
            finish = choice.finish_reason or finish
    return "".join(parts), finish, usage, chunks


def http(url, body=None, headers=None, method=None):
    """(status, JSON body, headers) of a raw request; errors included."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_models_health_and_metrics(serve_app):
    app = serve_app()
    client = app.client()
    assert [m.id for m in client.models.list().data] == list(MODELS)
    status, body, _ = http(f"{app.url}/health")
    assert status == 200 and body == {"status": "ok", "models": list(MODELS)}
    status, body, _ = http(f"{app.url}/metrics")
    assert status == 200 and body["batches"] == 0 and body["max_concurrency"] == 8


@pytest.mark.parametrize("model", MODELS)
def test_stream_reassembles_to_the_non_stream_answer(serve_app, model):
    client = serve_app().client()
    answer = ask(client, model, max_tokens=12)
    text, finish, usage, chunks = streamed(client, model, max_tokens=12)
    assert answer.object == "chat.completion" and answer.model == model
    assert answer.choices[0].message.role == "assistant"
    assert text == answer.choices[0].message.content and text
    assert finish == answer.choices[0].finish_reason == "length"  # a random model does not stop by itself
    assert usage.completion_tokens == answer.usage.completion_tokens == 12
    assert usage.prompt_tokens == answer.usage.prompt_tokens
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert chunks > 1  # streamed piece by piece, not in one chunk


def test_each_adapter_is_its_own_model_with_its_own_template(serve_app, served, serve_yaml):
    """alpha answers as eval's generator (base + alpha) does; beta renders with the template saved beside it."""
    from instill.config import ModelArgs, load_config
    from instill.infer.engine import load_generator

    client = serve_app().client()
    answers = {m: ask(client, m, max_tokens=10) for m in MODELS}
    assert len({a.choices[0].message.content for a in answers.values()}) == 3, "three models, three answers"

    config = load_config(serve_yaml)
    alpha = load_generator(ModelArgs(model_name_or_path=config.model.model_name_or_path), "auto",
                           config.model.adapter_name_or_path[0])
    assert answers["alpha"].choices[0].message.content.strip() == alpha.generate([HELLO], max_new_tokens=10)[0]

    tokenizer = served.models["beta"].tokenizer
    chatml = "<|im_start|>user\nHello! Who are you?<|im_end|>\n<|im_start|>assistant\n"
    qwen = alpha.render(HELLO)
    assert qwen.startswith("<|im_start|>system\nYou are Qwen")  # the base template adds a system prompt
    assert answers["beta"].usage.prompt_tokens == len(tokenizer(chatml, add_special_tokens=False)["input_ids"])
    assert answers["alpha"].usage.prompt_tokens == len(tokenizer(qwen, add_special_tokens=False)["input_ids"])


def test_completions_endpoint(serve_app):
    client = serve_app().client()
    answer = client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens == 5 and answer.usage.completion_tokens == 8
    chunks = list(client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=8,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == answer.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_strings_cut_the_answer(serve_app):
    client = serve_app().client()
    full = ask(client, max_tokens=16).choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 2]
    expected = full[:full.index(stop)]
    cut = ask(client, max_tokens=16, stop=[stop, "never-appears"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < 16
    text, finish, _, _ = streamed(client, max_tokens=16, stop=stop)
    assert (text, finish) == (expected, "stop")


def test_seed_makes_sampling_reproducible_alone_or_batched(serve_app):
    client = serve_app(window_s=0.3).client()
    kwargs = dict(max_tokens=12, temperature=1.0, top_p=0.9)
    alone = [ask(client, seed=s, **kwargs).choices[0].message.content for s in (1, 2)]
    assert alone[0] != alone[1]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(lambda s: ask(client, seed=s, **kwargs).choices[0].message.content, (1, 2, 1, 2)))
    assert batched == alone * 2


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_vllm_fields_top_k_and_repetition_penalty_apply_per_request(serve_app, batching):
    client = serve_app(batching=batching).client()
    greedy = ask(client, max_tokens=12).choices[0].message.content
    top1 = ask(client, max_tokens=12, temperature=1.5, seed=5, extra_body={"top_k": 1}).choices[0].message.content
    assert top1 == greedy  # sampling from the single most likely token is greedy decoding
    sampled = ask(client, max_tokens=12, temperature=1.5, seed=5, extra_body={"top_k": -1}).choices[0].message.content
    assert sampled != greedy  # vLLM's -1: no top-k cut
    long = ask(client, max_tokens=40).choices[0].message.content
    penalised = ask(client, max_tokens=40, extra_body={"repetition_penalty": 2.0}).choices[0].message.content
    assert penalised != long  # the random model's greedy answer comes back to tokens it has said
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, extra_body={"top_k": -2})
    assert err.value.body["param"] == "top_k"


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_concurrent_requests_are_batched_and_answer_as_sequential_ones(serve_app, batching):
    app = serve_app(window_s=0.3, batching=batching)
    client = app.client()
    jobs = [(m, f"Question {i}: {'why ' * i}?", 6 + i) for i, m in enumerate(MODELS * 2)]

    def run(job):
        model, question, max_tokens = job
        answer = ask(client, model, [{"role": "user", "content": question}], max_tokens=max_tokens)
        return answer.choices[0].message.content, answer.usage.completion_tokens

    sequential = [run(job) for job in jobs]
    assert http(f"{app.url}/metrics")[1]["max_batch_size"] == 1
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        concurrent_ = list(pool.map(run, jobs))
    assert concurrent_ == sequential
    assert [n for _, n in sequential] == [6 + i for i in range(len(jobs))]
    metrics = http(f"{app.url}/metrics")[1]
    assert metrics["max_batch_size"] > 1, metrics
    assert metrics["requests"] == 2 * len(jobs) and metrics["batches"] < 2 * len(jobs)
    assert metrics["batching"] == batching


def test_a_request_arriving_mid_answer_is_answered_before_that_answer_ends(serve_app):
    """Continuous batching: the new request joins the running batch instead of waiting for it to end."""
    app = serve_app()
    client = app.client()
    long = client.chat.completions.create(model="alpha", messages=HELLO, max_tokens=400, temperature=0, stream=True)
    chunks = iter(long)
    next(chunks), next(chunks)  # the long answer is decoding
    for model in MODELS:
        assert ask(client, model, max_tokens=3).usage.completion_tokens == 3
    metrics = http(f"{app.url}/metrics")[1]
    assert metrics["running"] == 1 and metrics["max_batch_size"] == 2, metrics  # the long one still runs
    assert metrics["mean_rows_per_step"] > 1 and metrics["batching"] == "continuous"
    long.close()


def test_bad_requests_get_openai_errors(serve_app):
    app = serve_app(max_tokens=64)
    client = app.client()
    cases = [
        (dict(messages=[{"role": "robot", "content": "hi"}]), "messages.0.role"),
        (dict(messages=[]), "messages"),
        (dict(messages=HELLO, n=2), "n"),
        (dict(messages=HELLO, temperature=3), "temperature"),
        (dict(messages=HELLO, max_tokens=65), "max_tokens"),
        (dict(messages=HELLO, extra_body={"max_token": 3}), "max_token"),
        (dict(messages=[{"role": "user"}]), "messages.0"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="alpha", **kwargs)
        assert err.value.status_code == 400
        assert set(err.value.body) == {"message", "type", "param", "code"}, err.value.body
        assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.NotFoundError) as err:
        ask(client, "gpt-4o")
    assert err.value.body["code"] == "model_not_found" and "alpha" in err.value.body["message"]

    status, body, _ = http(f"{app.url}/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["message"] == "the request body is not valid JSON"
    status, body, _ = http(f"{app.url}/v1/chat/completions", method="POST")
    assert status == 400 and body["error"]["message"] == "a JSON request body is required"
    status, body, _ = http(f"{app.url}/v1/nothing-here")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_prompt_longer_than_the_context_is_a_400_with_the_counts(serve_app, served):
    client = serve_app().client()
    long = [{"role": "user", "content": "word " * 600}]  # context is 512 (max_model_len)
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, messages=long, max_tokens=8)
    body = err.value.body
    prompt_tokens = len(served.models["alpha"].chat_prompt(long))
    assert body["code"] == "context_length_exceeded"
    assert "context length is 512 tokens" in body["message"]
    assert f"prompt has {prompt_tokens} tokens" in body["message"] and f"{prompt_tokens + 8} in all" in body["message"]
    fits = [{"role": "user", "content": "word " * 400}]  # fits, but not with 200 more tokens
    with pytest.raises(openai.BadRequestError):
        ask(client, messages=fits, max_tokens=200)
    assert ask(client, messages=fits).usage.total_tokens <= 512  # without max_tokens the answer gets the room left


def test_api_key(serve_app):
    app = serve_app(api_key="s3cret")
    with pytest.raises(openai.AuthenticationError) as err:
        ask(app.client("wrong"), max_tokens=2)
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    assert http(f"{app.url}/v1/models")[0] == 401
    assert http(f"{app.url}/metrics")[0] == 401
    assert http(f"{app.url}/health")[0] == 200
    assert ask(app.client("s3cret"), max_tokens=2).usage.completion_tokens == 2


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_queue_bound_429_and_a_disconnect_frees_the_slot(serve_app, batching):
    app = serve_app(max_batch=1, max_queue=1, window_s=0, batching=batching)
    client = app.client()
    long = client.chat.completions.create(model="alpha", messages=HELLO, max_tokens=400, temperature=0, stream=True)
    chunks = iter(long)
    next(chunks), next(chunks)  # a token came: the one batch slot is taken
    assert app.batcher.running == 1
    waiting = threading.Thread(target=lambda: ask(client, max_tokens=2))
    waiting.start()
    deadline = time.monotonic() + 20
    while app.batcher.queued < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(openai.RateLimitError) as err:
        ask(client, max_tokens=2)
    assert err.value.status_code == 429 and int(err.value.response.headers["retry-after"]) >= 1
    assert err.value.body["code"] == "queue_full"

    long.close()  # the client goes away mid-stream
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    metrics = http(f"{app.url}/metrics")[1]
    assert metrics["cancelled"] == 1 and metrics["rejected"] == 1 and metrics["running"] == 0
    assert metrics["generated_tokens"] < 400  # the abandoned answer stopped early
    assert ask(client, max_tokens=2).usage.completion_tokens == 2


def test_generation_failure_is_a_500_and_the_server_keeps_serving(serve_app, served):
    client = serve_app().client()
    layer = served.model.get_base_model().model.layers[0]

    def boom(module, args):
        raise RuntimeError("simulated kernel failure")

    handle = layer.register_forward_pre_hook(boom)
    try:
        with pytest.raises(openai.InternalServerError) as err:
            ask(client, max_tokens=4)
        assert err.value.status_code == 500 and err.value.body["code"] == "generation_failed"
        assert "simulated kernel failure" in err.value.body["message"]
        with pytest.raises(openai.APIError, match="simulated kernel failure"):
            streamed(client, max_tokens=4)
    finally:
        handle.remove()
    assert ask(client, max_tokens=4).usage.completion_tokens == 4


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


def test_tool_calls_are_parsed_streamed_or_not(serve_app, served, request):
    """A random model never writes a tool call, so its output is scripted (a forward hook on the base model
    forces the tokens of a Hermes call, whatever the batcher); everything else — template with tools,
    decoding, parsing — is the real path. Requests here run one at a time."""
    tokenizer = served.models["alpha"].tokenizer
    script = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    ids = tokenizer(script, add_special_tokens=False)["input_ids"]
    step = [0]

    def scripted(module, args, kwargs, output):
        step[0] = 0 if kwargs["input_ids"].shape[1] > 1 else step[0] + 1  # a prompt starts the script over
        output.logits[:, -1] = -float("inf")
        output.logits[:, -1, ids[min(step[0], len(ids) - 1)]] = 0.0
        return output

    request.addfinalizer(served.model.get_base_model().register_forward_hook(scripted, with_kwargs=True).remove)
    client = serve_app().client()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    answer = ask(client, messages=messages, tools=[WEATHER], max_tokens=64)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")
    plain = ask(client, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=64)
    assert plain.usage.prompt_tokens < answer.usage.prompt_tokens  # no tools in the prompt
    assert plain.choices[0].message.tool_calls is None and "<tool_call>" in plain.choices[0].message.content

    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model="alpha", messages=messages, tools=[WEATHER], max_tokens=64,
                                                temperature=0, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            calls[call.index] = call
        finish = chunk.choices[0].finish_reason or finish
    assert content == "Let me check." and finish == "tool_calls"
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Paris"}

    # The call and the tool's answer go back in; OpenAI's string arguments render as a JSON object.
    from instill.infer.serve.protocol import ChatCompletionRequest

    follow = messages + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}]
    request = ChatCompletionRequest(model="alpha", messages=follow, tools=[WEATHER])
    prompt = served.models["alpha"].chat_prompt(request.conversation(), request.tool_list())
    text = tokenizer.decode(prompt)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in text
    assert ask(client, messages=follow, tools=[WEATHER], max_tokens=64).usage.prompt_tokens == len(prompt)


# (template, scripted answer, content expected beside the call): LLaMA-Factory formats without a <tool_call> tag
LF_SCRIPTS = {
    "llama3": ('{"name": "get_weather", "parameters": {"city": "Paris"}}', None),
    "default": ('I will look it up.\nAction: get_weather\nAction Input: {"city": "Paris"}', "I will look it up."),
}


@pytest.mark.parametrize("template", list(LF_SCRIPTS))
def test_tool_calls_in_the_templates_own_format(tiny_qwen2, tmp_path, request, template):
    """A model served with `template: llama3` (or `default`) has its calls read in that format (JSON with
    "parameters"; ReAct's Action lines), streamed or not; its output is scripted as above."""
    from instill.config import load_config
    from instill.infer.serve.served import load_served
    from tests.infer.conftest import AppServer, write_yaml

    config = write_yaml(tmp_path / "serve.yaml", model_name_or_path=str(tiny_qwen2), template=template,
                        output_dir=str(tmp_path / "out"), max_new_tokens=16)
    served = load_served(load_config(config), max_model_len=512)
    [(name, model)] = served.models.items()
    assert model.template.tool_format == template
    script, content = LF_SCRIPTS[template]
    ids = model.tokenizer(script + model.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    step = [0]

    def scripted(module, args, kwargs, output):
        step[0] = 0 if kwargs["input_ids"].shape[1] > 1 else step[0] + 1
        output.logits[:, -1] = -float("inf")
        output.logits[:, -1, ids[min(step[0], len(ids) - 1)]] = 0.0
        return output

    request.addfinalizer(served.model.register_forward_hook(scripted, with_kwargs=True).remove)
    app = AppServer(served)
    request.addfinalizer(app.stop)
    client = app.client()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    choice = ask(client, name, messages, tools=[WEATHER], max_tokens=64).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    shown, calls, finish = "", [], None
    for chunk in client.chat.completions.create(model=name, messages=messages, tools=[WEATHER], max_tokens=64,
                                                temperature=0, stream=True):
        shown += chunk.choices[0].delta.content or ""
        calls += chunk.choices[0].delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert shown == (content or "") and finish == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
