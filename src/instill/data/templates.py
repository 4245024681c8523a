"""Chat templates: the tokenizer's own jinja first (`template: auto`), named ones as a fallback.

Every template turns (messages, tools) into text; label masks are derived later by
rendering the conversation prefix by prefix (see `tokenize.py`), so a template only
has to render — it never needs to know which tokens are trained.

Named templates are small Python renderers, one function each, registered in
`NAMED`. `qwen` is checked token for token against Qwen2.5-Instruct's real jinja in
the tests; write new ones the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from instill.errors import TemplateError

Messages = list[dict[str, Any]]
Renderer = Callable[[Messages, "list[dict] | None", bool, Any], str]


def _tojson(obj: Any) -> str:
    # Same as transformers' jinja `tojson` filter: json.dumps without ASCII escaping.
    return json.dumps(obj, ensure_ascii=False)


@dataclass
class ChatTemplate:
    """Renders conversations to text; `end_of_turn` is the text that closes an assistant turn."""

    name: str
    render_fn: Callable[..., str]
    end_of_turn: str | None = None

    def render(self, messages: Messages, tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
        try:
            return self.render_fn(messages, tools, add_generation_prompt)
        except TemplateError:
            raise
        except Exception as err:  # jinja errors from user templates: report, don't crash with a traceback
            raise TemplateError(f"template '{self.name}' failed to render: {type(err).__name__}: {err}") from None


# ---------------------------------------------------------------------------- named renderers

_QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
_HERMES_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_HERMES_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)


def _chatml(messages: Messages, tools: list[dict] | None, gen: bool, default_system: str | None) -> str:
    """ChatML with Hermes-style tool calls, exactly as Qwen2.5-Instruct's template renders it."""
    has_system = bool(messages) and messages[0]["role"] == "system"
    system = messages[0]["content"] if has_system else default_system
    out: list[str] = []
    if tools:
        body = "".join("\n" + _tojson(tool) for tool in tools)
        out.append("<|im_start|>system\n" + (system or "") + _HERMES_TOOLS_HEAD + body + _HERMES_TOOLS_TAIL)
    elif system is not None:
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for i, msg in enumerate(messages):
        role = msg["role"]
        if i == 0 and has_system:
            continue
        if role in ("user", "system") or (role == "assistant" and not msg.get("tool_calls")):
            out.append(f"<|im_start|>{role}\n{msg['content']}<|im_end|>\n")
        elif role == "assistant":
            text = "<|im_start|>assistant"
            if msg.get("content"):
                text += "\n" + msg["content"]
            for call in msg["tool_calls"]:
                fn = call.get("function", call)
                text += '\n<tool_call>\n{"name": "' + fn["name"] + '", "arguments": ' + _tojson(fn["arguments"])
                text += "}\n</tool_call>"
            out.append(text + "<|im_end|>\n")
        elif role == "tool":
            first = i == 0 or messages[i - 1]["role"] != "tool"
            last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
            out.append(("<|im_start|>user" if first else "") + "\n<tool_response>\n" + msg["content"] + "\n</tool_response>")
            if last:
                out.append("<|im_end|>\n")
        else:
            raise TemplateError(f"role '{role}' is not supported by the ChatML template")
    if gen:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _llama3(messages: Messages, tools: list[dict] | None, gen: bool) -> str:
    if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        raise TemplateError("template 'llama3' has no tool format here; use template: auto with a Llama 3.1 tokenizer")
    out = ["<|begin_of_text|>"]
    for msg in messages:
        out.append(f"<|start_header_id|>{msg['role']}<|end_header_id|>\n\n{msg['content']}<|eot_id|>")
    if gen:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _plain(messages: Messages, tools: list[dict] | None, gen: bool, eos: str, user: str, system: str) -> str:
    """'default' and 'empty': plain-text turns; the assistant turn ends with the tokenizer's eos."""
    if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        raise TemplateError("plain-text templates have no tool format; use template: qwen or auto")
    out = []
    for msg in messages:
        if msg["role"] == "system":
            out.append(system.format(content=msg["content"]))
        elif msg["role"] == "user":
            out.append(user.format(content=msg["content"]))
        else:
            out.append(msg["content"] + eos + "\n")
    return "".join(out)  # `gen` adds nothing: the user format already ends where the answer starts


def _named(tokenizer: Any) -> dict[str, ChatTemplate]:
    eos = tokenizer.eos_token or ""
    return {
        "qwen": ChatTemplate("qwen", lambda m, t, g: _chatml(m, t, g, _QWEN_SYSTEM), "<|im_end|>"),
        "chatml": ChatTemplate("chatml", lambda m, t, g: _chatml(m, t, g, None), "<|im_end|>"),
        "llama3": ChatTemplate("llama3", _llama3, "<|eot_id|>"),
        "default": ChatTemplate(
            "default", lambda m, t, g: _plain(m, t, g, eos, "Human: {content}\nAssistant: ", "System: {content}\n"), eos
        ),
        "empty": ChatTemplate("empty", lambda m, t, g: _plain(m, t, g, eos, "{content}", "{content}"), eos),
    }


NAMED = ("qwen", "chatml", "llama3", "default", "empty")


def _from_tokenizer(tokenizer: Any) -> ChatTemplate:
    def render(messages: Messages, tools: list[dict] | None, gen: bool) -> str:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)

    template = ChatTemplate("auto", render)
    template.end_of_turn = _infer_end_of_turn(template, tokenizer)
    return template


def _infer_end_of_turn(template: ChatTemplate, tokenizer: Any) -> str:
    """The first token the template writes after an assistant's content (e.g. <|im_end|>)."""
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    text = template.render(probe)
    after = text[text.rindex("pong") + len("pong"):]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    if not ids or not after.strip():
        raise TemplateError(
            "the tokenizer's chat template writes nothing after an assistant turn, so a model trained with it "
            "never learns to stop; choose a named template (template: qwen | chatml | llama3 | default | empty)"
        )
    return tokenizer.decode(ids[:1])


def get_template(name: str, tokenizer: Any) -> ChatTemplate:
    """`auto`: the tokenizer's own chat template, else an error; a named template otherwise."""
    if name == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "template: auto, but the tokenizer has no chat template; "
                f"set template to one of: {', '.join(NAMED)}"
            )
        return _from_tokenizer(tokenizer)
    named = _named(tokenizer)
    if name not in named:
        import difflib

        close = difflib.get_close_matches(name, ["auto", *NAMED], n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise TemplateError(f"unknown template '{name}'{hint} (choose from auto, {', '.join(NAMED)})")
    return named[name]


def template_text(name: str) -> str | None:
    """A jinja version of a named template, saved with the tokenizer so exported models chat the same way."""
    return _JINJA.get(name)


# Jinja equivalents saved beside trained models (tokenizer_config.json's chat_template), so
# `transformers` users of an exported model render prompts exactly as training did.
_JINJA = {
    # Qwen2.5's own template also renders tools; this one covers plain chat (the tokenizer's own
    # template, when it has one, is kept instead).
    "qwen": (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n" + _QWEN_SYSTEM + "<|im_end|>\\n' }}{% endif %}"
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "default": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\nAssistant: ' }}"
        "{% else %}{{ message['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
    ),
    "empty": (
        "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\\n' }}"
        "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
    ),
}
