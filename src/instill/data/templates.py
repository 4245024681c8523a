"""Chat templates: the tokenizer's own jinja first (`template: auto`), named ones as a fallback.

Every template is a jinja string rendered by the tokenizer's own `apply_chat_template`, so what
training renders is exactly what is saved with the trained tokenizer (and what transformers,
vLLM or our server render later): one source per template. Label masks are derived later by
rendering the conversation prefix by prefix (see `tokenize.py`), so a template only has to
render — it never needs to know which tokens are trained.

A `TemplateChoice` carries the data keys that change what a template renders (`default_system`,
`enable_thinking`, `tool_format`); they are baked into the jinja, so training, evaluation, chat, serve and the saved
tokenizer render alike.

Named templates live in `NAMED_JINJA`. `qwen` is checked token for token against
Qwen2.5-Instruct's real template in the tests; write new ones the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from instill.config import DataArgs
from instill.data import lf_templates
from instill.data.example import RowTools
from instill.errors import TemplateError

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class TemplateChoice:
    """The data keys that decide what a chat template renders: its name and LLaMA-Factory's options."""

    name: str = "auto"
    default_system: str | None = None  # the system prompt of conversations without one
    enable_thinking: bool = True  # false: reasoning templates render with thinking off
    tool_format: str | None = None  # LLaMA-Factory's tool format, in place of the template's own

    @classmethod
    def of(cls, data: DataArgs) -> TemplateChoice:
        return cls(data.template, data.default_system, data.enable_thinking, data.tool_format)


@dataclass
class ChatTemplate:
    """A jinja chat template and the tokenizer that renders it; `end_of_turn` closes an assistant turn.
    `tool_format` is the LLaMA-Factory tool format its tool calls are read back in (data/lf_tool_calls.py);
    None: Hermes `<tool_call>{json}</tool_call>`, as instill's own templates write them and as `auto` assumes."""

    name: str
    jinja: str
    tokenizer: Any
    end_of_turn: str | None = None
    tool_format: str | None = None

    def render(self, messages: Messages, tools: list[dict] | None = None, add_generation_prompt: bool = False,
               **template_kwargs: Any) -> str:
        """The template's text for `messages`. A row's tools (RowTools) also give the jinja `tools_text`, the
        column's own text, and `tools_value`, that text parsed (LLaMA-Factory's phi4_mini and seed_oss write them)."""
        if isinstance(tools, RowTools):
            template_kwargs = {"tools_text": tools.text, "tools_value": tools.value, **template_kwargs}
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
    """ChatML with Hermes-style tool calls (as Qwen2.5-Instruct writes them); `default_system` when none is
    given (or it is empty, as LLaMA-Factory's `system or default_system`)."""
    fallback = lf_templates.literal(default_system) if default_system else "none"
    return (
        "{%- set has_system = messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = (messages[0]['content'] or " + fallback + ") if has_system else " + fallback + " -%}"
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


def system_preamble(default_system: str) -> str:
    """Jinja put before a template that puts `default_system` first in a conversation without a system
    message (or with an empty one); the rest of the template sees it as the data's own."""
    message = "{'role': 'system', 'content': " + lf_templates.literal(default_system) + "}"
    return ("{%- if not messages or messages[0]['role'] != 'system' -%}"
            "{%- set messages = [" + message + "] + messages -%}"
            "{%- elif not messages[0]['content'] -%}"
            "{%- set messages = [" + message + "] + messages[1:] -%}{%- endif -%}")


# The templates whose jinja is built around its default system (`_chatml_jinja`): name -> that default.
CHATML_SYSTEM = {"qwen": _QWEN_SYSTEM, "chatml": None, "qwen2_vl": "You are a helpful assistant."}

# name -> (jinja, end of turn; None = the tokenizer's eos token)
NAMED_JINJA: dict[str, tuple[str, str | None]] = {
    "qwen": (_chatml_jinja(CHATML_SYSTEM["qwen"]), "<|im_end|>"),
    "chatml": (_chatml_jinja(CHATML_SYSTEM["chatml"]), "<|im_end|>"),
    # Qwen2-VL / Qwen2.5-VL: ChatML with Qwen2-VL-Instruct's default system; `<image>` stays in the text and
    # becomes the image block when tokenized (data/multimodal.py), as the model's processor expands it.
    "qwen2_vl": (_chatml_jinja(CHATML_SYSTEM["qwen2_vl"]), "<|im_end|>"),
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


def _with_system(jinja: str, name: str, default_system: str | None, writes_own_default: bool) -> str:
    """`jinja` with `default_system` put into conversations without a system message."""
    if default_system is None:
        return jinja
    if default_system:
        return system_preamble(default_system) + jinja
    if writes_own_default:  # "" asks for no system prompt, which only a template built from parts can promise
        raise TemplateError(f"default_system: '' asks for no system prompt, but template '{name}' is the "
                            "tokenizer's own jinja, which may write its own default; choose a named template "
                            "(e.g. the LLaMA-Factory name of the model) or give a system prompt")
    return jinja


def get_template(choice: str | TemplateChoice, tokenizer: Any) -> ChatTemplate:
    """`auto`: the tokenizer's own chat template, else an error; a named template otherwise. The choice's
    `default_system`, `enable_thinking` and `tool_format` are baked into the jinja (`TemplateChoice`)."""
    choice = TemplateChoice(choice) if isinstance(choice, str) else choice
    name, default_system = choice.name, choice.default_system
    if name == "auto":
        if choice.tool_format is not None:
            raise TemplateError(f"tool_format: {choice.tool_format} needs a LLaMA-Factory template name (e.g. "
                                "template: qwen3 or llama3): template: auto renders the tokenizer's own chat template, "
                                "which writes tool calls its own way")
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "template: auto, but the tokenizer has no chat template; "
                f"set template to one of: {', '.join(NAMED)}"
            )
        # thinking off reaches the tokenizer's own jinja as its `enable_thinking` variable (Qwen3's and others')
        options = "" if choice.enable_thinking else lf_templates.THINKING_OFF
        jinja = _with_system(options + tokenizer.chat_template, name, default_system, writes_own_default=True)
        template = ChatTemplate("auto", jinja, tokenizer)
        template.end_of_turn = _infer_end_of_turn(template, tokenizer)
        return template
    # LLaMA-Factory's template names (data/lf_templates.py)
    from_lf = lf_templates.lookup(name, tokenizer, default_system, choice.enable_thinking, choice.tool_format)
    if from_lf is not None:
        jinja, end_of_turn, needs_system = from_lf
        if needs_system:
            jinja = _with_system(jinja, name, default_system, writes_own_default=True)
        # calls are read back in the format the name writes them, own jinja or not (LLaMA-Factory's `extract_tool`
        # reads with its tools formatter: the same format, except phi4_mini's plain tools slot, which reads none)
        tool_format = choice.tool_format or lf_templates.table()[name]["function_tool_format"]
        template = ChatTemplate(name, jinja, tokenizer, end_of_turn, tool_format)
        template.end_of_turn = template.end_of_turn or _infer_end_of_turn(template, tokenizer)
        return template
    if name not in NAMED_JINJA:
        close = difflib.get_close_matches(name, ["auto", *NAMED, *lf_templates.names()], n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise TemplateError(f"unknown template '{name}'{hint} (choose from auto, {', '.join(NAMED)} "
                            "or a LLaMA-Factory 0.9.5 template name)")
    jinja, end_of_turn = NAMED_JINJA[name]
    if name in CHATML_SYSTEM and default_system is not None:  # the template's own default, replaced
        jinja = _chatml_jinja(default_system)
    elif name not in CHATML_SYSTEM:  # llama3, default, empty: no default of their own
        jinja = _with_system(jinja, name, default_system, writes_own_default=False)
    return ChatTemplate(name, jinja, tokenizer, end_of_turn or tokenizer.eos_token or "")


