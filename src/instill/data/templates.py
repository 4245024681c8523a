"""Chat templates: the tokenizer's own jinja first (`template: auto`), named ones as a fallback.

Every template is a jinja string rendered by the tokenizer's own `apply_chat_template`, so what
training renders is exactly what is saved with the trained tokenizer (and what transformers,
vLLM or our server render later): one source per template. Label masks are derived later by
rendering the conversation prefix by prefix (see `tokenize.py`), so a template only has to
render — it never needs to know which tokens are trained.

Named templates live in `NAMED_JINJA`. `qwen` is checked token for token against
Qwen2.5-Instruct's real template in the tests; write new ones the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from instill.data import lf_templates
from instill.errors import TemplateError

Messages = list[dict[str, Any]]


@dataclass
class ChatTemplate:
    """A jinja chat template and the tokenizer that renders it; `end_of_turn` closes an assistant turn."""

    name: str
    jinja: str
    tokenizer: Any
    end_of_turn: str | None = None

    def render(self, messages: Messages, tools: list[dict] | None = None, add_generation_prompt: bool = False,
               **template_kwargs: Any) -> str:
        try:
            compiled = self._compiled()
            if compiled is None:
                return self.tokenizer.apply_chat_template(
                    messages, tools=tools, chat_template=self.jinja, tokenize=False,
                    add_generation_prompt=add_generation_prompt, **template_kwargs,
                )
            # What apply_chat_template renders (same compiled template, same variables), without its
            # per-call checks and deep copies: rendering is half of tokenizing time.
            return compiled.render(messages=messages, tools=tools, documents=None,
                                   add_generation_prompt=add_generation_prompt,
                                   **{**self._special_tokens, **template_kwargs})
        except Exception as err:  # jinja errors (raise_exception included): report, don't crash with a traceback
            raise TemplateError(f"template '{self.name}' failed to render: {err}") from None

    def _compiled(self) -> Any:
        if "_template" not in self.__dict__:
            try:  # transformers' own compiler: its jinja environment, filters and globals
                from transformers.utils.chat_template_utils import _compile_jinja_template
            except ImportError:  # another transformers: the public (slower) path
                _compile_jinja_template = None
            self._template = _compile_jinja_template(self.jinja) if _compile_jinja_template else None
            self._special_tokens = dict(self.tokenizer.special_tokens_map)
        return self._template

    def __getstate__(self) -> dict:  # for worker processes: the compiled template is rebuilt there
        return {k: v for k, v in self.__dict__.items() if k not in ("_template", "_special_tokens")}


# ---------------------------------------------------------------------------- named templates

_QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def _chatml_jinja(default_system: str | None) -> str:
    """ChatML with Hermes-style tool calls (as Qwen2.5-Instruct writes them); `default_system` when none is given."""
    fallback = "'" + default_system + "'" if default_system is not None else "none"
    return (
        "{%- set has_system = messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] if has_system else " + fallback + " -%}"
        "{%- if tools -%}"
        "{{- '<|im_start|>system\\n' + (system or '') + '\\n\\n# Tools\\n\\nYou may call one or more functions to "
        "assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML "
        "tags:\\n<tools>' -}}"
        "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
        "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
        "<args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
        "{%- elif system is not none -%}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- set role = message['role'] -%}"
        "{%- if loop.first and has_system -%}"
        "{%- elif role == 'user' or role == 'system' or (role == 'assistant' and not message.get('tool_calls')) -%}"
        "{{- '<|im_start|>' + role + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- elif role == 'assistant' -%}"
        "{{- '<|im_start|>assistant' + ('\\n' + message['content'] if message['content'] else '') -}}"
        "{%- for call in message['tool_calls'] -%}"
        "{%- set fn = call['function'] if call['function'] is defined else call -%}"
        "{{- '\\n<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' + (fn['arguments'] | tojson)"
        " + '}\\n</tool_call>' -}}"
        "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- elif role == 'tool' -%}"
        "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
        "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' -}}"
        "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- else -%}{{- raise_exception(\"role '\" + role + \"' is not supported by the ChatML template\") -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def _no_tools(name: str) -> str:
    return (
        "{%- if tools or messages | selectattr('role', 'equalto', 'tool') | list "
        "or messages | selectattr('tool_calls', 'defined') | selectattr('tool_calls') | list -%}"
        "{{- raise_exception(\"template '" + name + "' has no tool format; use template: qwen or auto\") -}}"
        "{%- endif -%}"
    )


# name -> (jinja, end of turn; None = the tokenizer's eos token)
NAMED_JINJA: dict[str, tuple[str, str | None]] = {
    "qwen": (_chatml_jinja(_QWEN_SYSTEM), "<|im_end|>"),
    "chatml": (_chatml_jinja(None), "<|im_end|>"),
    # Qwen2-VL / Qwen2.5-VL: ChatML with Qwen2-VL-Instruct's default system; `<image>` stays in the text and
    # becomes the image block when tokenized (data/multimodal.py), as the model's processor expands it.
    "qwen2_vl": (_chatml_jinja("You are a helpful assistant."), "<|im_end|>"),
    "llama3": (
        _no_tools("llama3")
        + "{{- '<|begin_of_text|>' -}}{%- for message in messages -%}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",
        "<|eot_id|>",
    ),
    # Plain-text turns; the assistant's turn ends with the tokenizer's eos. The user format already ends
    # where the answer starts, so the generation prompt adds nothing.
    "default": (
        _no_tools("default")
        + "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{{- 'System: ' + message['content'] + '\\n' -}}"
        "{%- elif message['role'] == 'user' -%}{{- 'Human: ' + message['content'] + '\\nAssistant: ' -}}"
        "{%- else -%}{{- message['content'] + eos_token + '\\n' -}}{%- endif -%}{%- endfor -%}",
        None,
    ),
    "empty": (
        _no_tools("empty")
        + "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}{{- message['content'] + eos_token + '\\n' -}}"
        "{%- else -%}{{- message['content'] -}}{%- endif -%}{%- endfor -%}",
        None,
    ),
}

NAMED = tuple(NAMED_JINJA)


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
        template = ChatTemplate("auto", tokenizer.chat_template, tokenizer)
        template.end_of_turn = _infer_end_of_turn(template, tokenizer)
        return template
    from_lf = lf_templates.lookup(name, tokenizer)  # LLaMA-Factory's template names (data/lf_templates.py)
    if from_lf is not None:
        template = ChatTemplate(name, from_lf[0], tokenizer, from_lf[1])
        template.end_of_turn = template.end_of_turn or _infer_end_of_turn(template, tokenizer)
        return template
    if name not in NAMED_JINJA:
        close = difflib.get_close_matches(name, ["auto", *NAMED, *lf_templates.names()], n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise TemplateError(f"unknown template '{name}'{hint} (choose from auto, {', '.join(NAMED)} "
                            "or a LLaMA-Factory 0.9.5 template name)")
    jinja, end_of_turn = NAMED_JINJA[name]
    return ChatTemplate(name, jinja, tokenizer, end_of_turn or tokenizer.eos_token or "")


