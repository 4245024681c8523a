"""LLaMA-Factory 0.9.5's tool-call formats (its data/tool_utils.py) as jinja, for the templates that
data/lf_templates.py writes from LLaMA-Factory's slots.

Each format is two jinja pieces over instill's OpenAI-style messages (data/example.py): one sets `tool_text`,
the tool list as the format writes it after the system text (`tool_formatter`), the other sets `calls_text`,
an assistant message's `tool_calls` as the format writes them (`function_formatter`); gemma4 also has a macro
(`macros_jinja`), put at the top of the template. The text is LLaMA-Factory's: its prompts (copied; Apache-2.0,
(c) the LlamaFactory team), `json.dumps(..., ensure_ascii=False)` spacing and key order (transformers' `tojson`
filter is that call), llama3's "Today Date" line (`date_string` when the caller gives one, as Llama 3.1's own
template takes it, else today).

seed_oss writes the tools column's JSON as the row has it (bare or wrapped functions), and phi4_mini's plain
tools slot (`ROW_TEXT`) the column's text itself: the jinja takes them from `tools_value` and `tools_text`,
which ChatTemplate.render gives for a row's tools (data/example.py `RowTools`); tools without them (a server
request) are written as their functions in JSON, as LLaMA-Factory's API server writes a request's tools.

The calls are read back from a model's answer by data/lf_tool_calls.py.
"""

from __future__ import annotations

# ------------------------------------------------------------------ LLaMA-Factory's prompts (tool_utils.py)

DEFAULT_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    """(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n"""
    "```\n"
)

GLM4_TOOL_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)

GLM4_MOE_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, output the function name and arguments within the following XML format:"
    "\n<tool_call>{{function-name}}"
    "\n<arg_key>{{arg-key-1}}</arg_key>"
    "\n<arg_value>{{arg-value-1}}</arg_value>"
    "\n<arg_key>{{arg-key-2}}</arg_key>"
    "\n<arg_value>{{arg-value-2}}</arg_value>"
    "\n...\n</tool_call>\n"
)

LLAMA3_TOOL_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function call. "
    """Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. """
    "Do not use variables.\n\n{tool_text}"
)

MINIMAX_M1_TOOL_PROMPT = (
    "You are provided with these tools:\n<tools>\n{tool_text}</tools>\n\n"
    "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide tool-name and "
    "json-object of arguments, following the format below:\n<tool_calls>\n"
    """{{"name": <tool-name-1>, "arguments": <args-json-object-1>}}\n...\n</tool_calls>"""
)

MINIMAX_M2_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more tools to assist with the user query.\n"
    "Here are the tools available in JSONSchema format:\n\n<tools>\n{tool_text}</tools>\n\n"
    "When making tool calls, use XML format to invoke tools and pass parameters:\n"
    """\n<minimax:tool_call>\n<invoke name="tool-name-1">\n<parameter name="param-key-1">param-value-1</parameter>\n"""
    """<parameter name="param-key-2">param-value-2</parameter>\n...\n</invoke>\n</minimax:tool_call>"""
)

QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    """<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, """
    """"arguments": <args-json-object>}}\n</tool_call>"""
)

QWEN35_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>{tool_text}"
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: "
    "an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language "
    "BEFORE the function call, but NOT after\n"
    "- If there is no function call available, answer the question like normal with your current knowledge "
    "and do not tell the user about function calls\n</IMPORTANT>"
)

LING_TOOL_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    """<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, """
    """"arguments": <args-json-object>}}\n</tool_call>"""
)

LFM2_TOOL_PROMPT = "List of tools: <|tool_list_start|>{tool_text}<|tool_list_end|>"

SEED_TOOL_PROMPT = (
    "system\nYou are Doubao, a helpful AI assistant. You may call one or more functions to assist with the user query."
    "Tool List:\nYou are authorized to use the following tools (described in JSON Schema format). Before performing "
    "any task, you must decide how to call them based on the descriptions and parameters of these tools.{tool_text}\n"
    "工具调用请遵循如下格式:\n<seed:tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>value_1"
    "</parameter>\n<parameter=example_parameter_2>This is the value for the second parameter\nthat can span\nmultiple "
    "lines</parameter>\n</function>\n</seed:tool_call>\n"
)


def _lit(text: str) -> str:
    """`text` as a jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r") + "'"


def _prompt(template: str, **fields: str) -> str:
    """A jinja expression for one of the prompts above: its text with jinja expressions put in for `{field}`."""
    text = template.replace("{{", "\0").replace("}}", "\1")
    parts, rest = [], text
    while "{" in rest:
        before, after = rest.split("{", 1)
        field, rest = after.split("}", 1)
        parts += [_lit(before.replace("\0", "{").replace("\1", "}")), "(" + fields[field] + ")"]
    parts.append(_lit(rest.replace("\0", "{").replace("\1", "}")))
    return " + ".join(p for p in parts if p != "''")


# ------------------------------------------------------------------ jinja pieces

# The function of a tool: LLaMA-Factory's `tool.get("function") if tool.get("type") == "function" else tool`.
_FN = "{%- set fn = tool['function'] if tool['type'] == 'function' else tool -%}"
# The tool in OpenAI's wrapped form: LLaMA-Factory's `tool if tool.get("type") == "function" else {...}`.
_WRAPPED = "(tool if tool['type'] == 'function' else {'type': 'function', 'function': tool})"
_EACH_TOOL = "{%- set ns = namespace(text='', items=[]) -%}{%- for tool in tools -%}"
# A call's function and arguments (a dict: data/formats.py and the server parse JSON-text arguments).
_EACH_CALL = ("{%- set ns = namespace(items=[], text='', args=[]) -%}{%- for call in message['tool_calls'] -%}"
              "{%- set fn = call['function'] if call['function'] is defined else call -%}"
              "{%- set args = fn['arguments'] if fn['arguments'] is defined else {} -%}")
_NAME_ARGS = "'{\"name\": ' + (fn['name'] | tojson) + ', \"arguments\": ' + (args | tojson) + '}'"
# An argument value as LLaMA-Factory writes it inside XML-like calls: strings as they are, others as JSON.
_VALUE = "(value if value is string else value | tojson)"


def _add(expr: str) -> str:
    return "{%- set ns.items = ns.items + [" + expr + "] -%}"


def _calls(body: str, sep: str, before: str = "''", after: str = "''") -> str:
    """Jinja setting calls_text: each call's `body` (which adds to ns.items), joined by `sep`."""
    return (_EACH_CALL + body + "{%- endfor -%}"
            "{%- set calls_text = " + before + " + ns.items | join(" + _lit(sep) + ") + " + after + " -%}")


def _json_each_tool(prompt: str, tool: str, before: str, after: str, dump: str = "tojson", **extra: str) -> str:
    """Tools written one JSON object each, between `before` and `after`, into `prompt`'s {tool_text}."""
    return (_EACH_TOOL + _FN + "{%- set ns.text = ns.text + " + before + " + (" + tool + " | " + dump + ") + " + after
            + " -%}{%- endfor -%}{%- set tool_text = " + _prompt(prompt, tool_text="ns.text", **extra) + " -%}")


def _xml_call(head: str, param: str, tail: str) -> str:
    """A call written as `head`, then `param` for each argument (`key`, `value`), then `tail`."""
    return ("{%- set ns.text = " + head + " -%}{%- for key, value in args.items() -%}{%- set ns.text = ns.text + "
            + param + " -%}{%- endfor -%}" + _add("ns.text + " + tail))


def _default_tools() -> str:
    """DefaultToolUtils.tool_formatter: a text block per tool with one line per parameter."""
    param = ("{%- set ns.args = ns.args ~ '  - ' ~ pname ~ ' (' ~ (param['type'] if 'type' in param else '')"
             " ~ (', required' if pname in required else '') ~ '): '"
             " ~ (param['description'] if 'description' in param else '')"
             " ~ ((', should be one of [' ~ param['enum'] | join(', ') ~ ']') if param['enum'] else '')"
             " ~ ((', where each item should be ' ~ (param['items']['type'] if 'type' in param['items'] else ''))"
             " if 'items' in param and param['items'] else '') ~ '\\n' -%}")
    return (
        "{%- set ns = namespace(text='', names=[], args='') -%}{%- for tool in tools -%}" + _FN
        + "{%- set params = fn['parameters'] if fn['parameters'] is mapping else {} -%}"
        "{%- set props = params['properties'] if params['properties'] is mapping else {} -%}"
        "{%- set required = params['required'] if params['required'] is defined else [] -%}"
        "{%- set ns.args = '' -%}"
        "{%- for pname, param in props.items() -%}" + param + "{%- endfor -%}"
        "{%- set ns.text = ns.text ~ '> Tool Name: ' ~ fn['name'] ~ '\\nTool Description: ' ~ "
        "(fn['description'] if 'description' in fn else '') ~ '\\nTool Args:\\n' ~ ns.args ~ '\\n' -%}"
        "{%- set ns.names = ns.names + [fn['name']] -%}{%- endfor -%}"
        + "{%- set tool_text = " + _prompt(DEFAULT_TOOL_PROMPT, tool_text="ns.text",
                                           tool_names="ns.names | join(', ')") + " -%}"
    )


_LLAMA3_DATE = ("{%- if date_string is not defined -%}{%- if strftime_now is defined -%}"
                "{%- set date_string = strftime_now('%d %b %Y') -%}{%- else -%}{%- set date_string = '26 Jul 2024' -%}"
                "{%- endif -%}{%- endif -%}")
_QWEN_CALL = _add("'<tool_call>\\n' + " + _NAME_ARGS + " + '\\n</tool_call>'")

# The functions of `tools` in ns.items (LLaMA-Factory's API server writes a request's tools so).
_FUNCTIONS = _EACH_TOOL + _FN + "{%- set ns.items = ns.items + [fn] -%}{%- endfor -%}"
# The tools column's text as the row has it, as `row_text` (phi4_mini's plain tools slot writes it).
ROW_TEXT = ("{%- if tools_text is defined and tools_text is not none -%}{%- set row_text = tools_text -%}"
            "{%- else -%}" + _FUNCTIONS + "{%- set row_text = ns.items | tojson -%}{%- endif -%}")
# The tools column's JSON value, as `row_tools` (seed_oss writes it again).
_ROW_TOOLS = ("{%- if tools_value is defined and tools_value is not none -%}{%- set row_tools = tools_value -%}"
              "{%- else -%}" + _FUNCTIONS + "{%- set row_tools = ns.items -%}{%- endif -%}")

_Q = '<|"|>'  # Gemma 4's string marker


def _gemma4_tools() -> str:
    """Gemma4ToolUtils.tool_formatter: one `declaration:name{...}` line per tool, strings between markers, types
    upper-case, keys in the tool's order."""
    quoted = "'" + _Q + "' ~ {} ~ '" + _Q + "'"
    prop = ("{%- set ns.args = [] -%}"
            "{%- if schema['description'] -%}{%- set ns.args = ns.args + ['description:' ~ "
            + quoted.format("schema['description']") + "] -%}{%- endif -%}"
            "{%- if schema['type'] -%}{%- set ns.args = ns.args + ['type:' ~ "
            + quoted.format("(schema['type'] | string | upper)") + "] -%}{%- endif -%}"
            "{%- set ns.names = ns.names + [pname ~ ':{' ~ ns.args | join(',') ~ '}'] -%}")
    params = ("{%- set params = fn['parameters'] -%}{%- if params -%}{%- set ns.parts = [] -%}"
              "{%- if params['properties'] -%}{%- set ns.names = [] -%}"
              "{%- for pname, schema in params['properties'].items() -%}" + prop + "{%- endfor -%}"
              "{%- set ns.parts = ns.parts + ['properties:{' ~ ns.names | join(',') ~ '}'] -%}{%- endif -%}"
              "{%- if params['required'] -%}{%- set ns.parts = ns.parts + ['required:[' ~ "
              + quoted.format("params['required'] | join('" + _Q + "," + _Q + "')") + " ~ ']'] -%}{%- endif -%}"
              "{%- if params['type'] -%}{%- set ns.parts = ns.parts + ['type:' ~ "
              + quoted.format("(params['type'] | string | upper)") + "] -%}{%- endif -%}"
              "{%- set ns.text = ns.text ~ ',parameters:{' ~ ns.parts | join(',') ~ '}' -%}{%- endif -%}")
    response = ("{%- set response = fn['response'] -%}{%- if response -%}{%- set ns.parts = [] -%}"
                "{%- if response['description'] -%}{%- set ns.parts = ns.parts + ['description:' ~ "
                + quoted.format("response['description']") + "] -%}{%- endif -%}"
                "{%- if (response['type'] if 'type' in response else '') | string | upper == 'OBJECT' -%}"
                "{%- set ns.parts = ns.parts + ['type:" + _Q + "OBJECT" + _Q + "'] -%}{%- endif -%}"
                "{%- set ns.text = ns.text ~ ',response:{' ~ ns.parts | join(',') ~ '}' -%}{%- endif -%}")
    return ("{%- set ns = namespace(items=[], text='', parts=[], names=[], args=[]) -%}{%- for tool in tools -%}"
            + _FN + "{%- set ns.text = 'declaration:' ~ fn['name'] ~ '{description:' ~ "
            + quoted.format("(fn['description'] if 'description' in fn else '')") + " -%}"
            + params + response + "{%- set ns.items = ns.items + [ns.text ~ '}'] -%}{%- endfor -%}"
            "{%- set tool_text = ns.items | join('\\n') -%}")


# Gemma4ToolUtils' `_format_argument` (keys not marked): strings between markers, objects with sorted keys.
_GEMMA4_VALUE = (
    "{%- macro lf_gemma4_value(value) -%}"
    "{%- if value is string -%}{{- '" + _Q + "' ~ value ~ '" + _Q + "' -}}"
    "{%- elif value is boolean -%}{{- 'true' if value else 'false' -}}"
    "{%- elif value is mapping -%}{{- '{' -}}{%- for key, item in value | dictsort(true) -%}"
    "{{- (',' if not loop.first else '') ~ key ~ ':' ~ lf_gemma4_value(item) -}}{%- endfor -%}{{- '}' -}}"
    "{%- elif value is none -%}{{- 'null' -}}"
    "{%- elif value is sequence -%}{{- '[' -}}{%- for item in value -%}"
    "{{- (',' if not loop.first else '') ~ lf_gemma4_value(item) -}}{%- endfor -%}{{- ']' -}}"
    "{%- else -%}{{- value | string -}}{%- endif -%}"
    "{%- endmacro -%}"
)

# format -> (jinja setting tool_text from `tools`, jinja setting calls_text from `message['tool_calls']`)
FORMATS: dict[str, tuple[str, str]] = {
    "default": (
        _default_tools(),
        _calls(_add("'Action: ' + fn['name'] + '\\nAction Input: ' + (args | tojson)"), "\n"),
    ),
    "qwen": (_json_each_tool(QWEN_TOOL_PROMPT, _WRAPPED, "'\\n'", "''"), _calls(_QWEN_CALL, "\n")),
    "ling": (_json_each_tool(LING_TOOL_PROMPT + "\ndetailed thinking off", _WRAPPED, "'\\n'", "''"),
             _calls(_QWEN_CALL, "\n")),
    "mistral": (
        _EACH_TOOL + "{%- set ns.items = ns.items + [" + _WRAPPED + "] -%}{%- endfor -%}"
        "{%- set tool_text = '[AVAILABLE_TOOLS] ' + (ns.items | tojson) + '[/AVAILABLE_TOOLS]' -%}",
        _calls(_add(_NAME_ARGS), ", ", "'['", "']'"),
    ),
    "glm4": (
        _EACH_TOOL + _FN + "{%- set ns.text = ns.text + '\\n\\n## ' + fn['name'] + '\\n\\n' + (fn | tojson(indent=4))"
        " + '\\n在调用上述函数时，请使用 Json 格式表示调用的参数。' -%}{%- endfor -%}"
        "{%- set tool_text = " + _prompt(GLM4_TOOL_PROMPT, tool_text="ns.text") + " -%}",
        "{%- if message['tool_calls'] | length > 1 -%}{{- raise_exception('the glm4 tool format writes one tool "
        "call per assistant turn (GLM-4 does not support parallel functions)') -}}{%- endif -%}"
        + _calls(_add("fn['name'] + '\\n' + (args | tojson)"), ""),
    ),
    "glm4_moe": (
        _json_each_tool(GLM4_MOE_TOOL_PROMPT, _WRAPPED, "'\\n'", "''"),
        _calls(_xml_call("'\\n<tool_call>' + fn['name']",
                         "'\\n<arg_key>' + key + '</arg_key>\\n<arg_value>' + " + _VALUE + " + '</arg_value>'", "''"),
               "\n"),
    ),
    "llama3": (
        _LLAMA3_DATE + _json_each_tool(LLAMA3_TOOL_PROMPT, _WRAPPED, "''", "'\\n\\n'", dump="tojson(indent=4)",
                                       date="date_string"),
        _calls(_add("'{\"name\": ' + (fn['name'] | tojson) + ', \"parameters\": ' + (args | tojson) + '}'"), ", ")
        + "{%- if ns.items | length > 1 -%}{%- set calls_text = '[' + calls_text + ']' -%}{%- endif -%}",
    ),
    "qwen3_5": (
        _json_each_tool(QWEN35_TOOL_PROMPT, "fn", "'\\n'", "''"),
        _calls(_xml_call("'<tool_call>\\n<function=' + fn['name'] + '>'",
                         "'\\n<parameter=' + key + '>\\n' + " + _VALUE + " + '\\n</parameter>'",
                         "'\\n</function>\\n</tool_call>'"), "\n"),
    ),
    "minimax1": (
        _json_each_tool(MINIMAX_M1_TOOL_PROMPT, "fn", "''", "'\\n'"),
        _calls(_add(_NAME_ARGS), "\n", "'<tool_calls>\\n'", "'\\n</tool_calls>'"),
    ),
    "minimax2": (
        _json_each_tool(MINIMAX_M2_TOOL_PROMPT, "fn", "'<tool>'", "'</tool>\\n'"),
        _calls(_xml_call("'<invoke name=\"' + fn['name'] + '\">'",
                         "'\\n<parameter name=\"' + key + '\">' + " + _VALUE + " + '</parameter>'", "'\\n</invoke>'"),
               "\n"),
    ),
    "lfm2": (
        _FUNCTIONS + "{%- set tool_text = " + _prompt(LFM2_TOOL_PROMPT, tool_text="ns.items | tojson") + " -%}",
        _calls("{%- set ns.args = [] -%}{%- for key, value in args.items() -%}{%- set ns.args = ns.args + [key + '='"
               " + ('\"' + value + '\"' if value is string else value | tojson)] -%}{%- endfor -%}"
               + _add("fn['name'] + '(' + ns.args | join(', ') + ')'"), ", ", "'<|tool_call_start|>['",
               "']<|tool_call_end|>'"),
    ),
    "gemma4": (
        _gemma4_tools(),
        _calls("{%- set ns.args = [] -%}{%- for key, value in args | dictsort(true) -%}"
               "{%- set ns.args = ns.args + [key ~ ':' ~ lf_gemma4_value(value)] -%}{%- endfor -%}"
               + _add("'<|tool_call>call:' ~ fn['name'] ~ '{' ~ ns.args | join(',') ~ '}<tool_call|>'"), ""),
    ),
    "seed_oss": (
        _ROW_TOOLS + "{%- set tool_text = " + _prompt(SEED_TOOL_PROMPT, tool_text="'\\n' + (row_tools | tojson)")
        + " -%}",
        _calls(_xml_call("'\\n<seed:tool_call>\\n<function=' + fn['name']",
                         "'\\n<parameter=' + key + '>' + " + _VALUE + " + '</parameter>'",
                         "'\\n</function>\\n</seed:tool_call>'"), "\n"),
    ),
}

# format -> jinja macros its pieces call, defined once at the top of the template
_MACROS = {"gemma4": _GEMMA4_VALUE}


def tools_jinja(tool_format: str) -> str:
    """Jinja that sets `tool_text`: the tool list as `tool_format` writes it ('' without tools)."""
    return "{%- set tool_text = '' -%}{%- if tools -%}" + FORMATS[tool_format][0] + "{%- endif -%}"


def calls_jinja(tool_format: str) -> str:
    """Jinja that sets `calls_text`: `message`'s tool calls as `tool_format` writes them."""
    return FORMATS[tool_format][1]


def macros_jinja(tool_format: str) -> str:
    """Jinja macros that `calls_jinja(tool_format)` calls ('' for most formats), for the top of the template."""
    return _MACROS.get(tool_format, "")
