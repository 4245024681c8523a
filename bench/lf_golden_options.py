"""Golden token ids of LLaMA-Factory 0.9.5's template options: `default_system` and `enable_thinking`.

Run once in the side venv that has llamafactory==0.9.5 (bench/README.md, "LLaMA-Factory" recipe), from the
repository root; no network, no GPU:

    /work/lf-venv/bin/python bench/lf_golden_options.py

For a few templates of each kind (instill's own ChatML names, templates built from LLaMA-Factory's slots, a
`Llama2Template` that fuses the system into the first user message, reasoning templates), it encodes a few
conversations with LLaMA-Factory's own `get_template_and_fix_tokenizer` and supervised processor under each
option set, and writes the ids and labels to tests/fixtures/lf_options_golden.json. The stand-in tokenizer
is the one bench/lf_golden_templates.py uses (the real Qwen2 tokenizer, chat template removed, every
template's stop words and token slots added as special tokens).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "lf_options_golden.json"

TEMPLATES = ("qwen", "chatml", "llama3", "alpaca", "mistral", "qwen3", "deepseekr1", "glm4_7", "gemma4")
OPTIONS = {
    "system": {"default_system": "You are a pirate.", "enable_thinking": True},
    "nothink": {"default_system": None, "enable_thinking": False},
    "system_nothink": {"default_system": "You are a pirate.", "enable_thinking": False},
}
# LLaMA-Factory's converted rows: _prompt, _response, _system
ROWS = [
    {"_prompt": [{"role": "user", "content": "Name a colour."}],
     "_response": [{"role": "assistant", "content": "Blue."}], "_system": ""},
    {"_prompt": [{"role": "user", "content": "Name a colour."}],
     "_response": [{"role": "assistant", "content": "Blue."}], "_system": "Answer in one word."},
    {"_prompt": [{"role": "user", "content": "2+2?"}],
     "_response": [{"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}], "_system": ""},
    {"_prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\ngreet\n</think>\n\nhello"},
                 {"role": "user", "content": "2+2?"}],
     "_response": [{"role": "assistant", "content": "4"}], "_system": ""},
]


def _helpers():
    spec = importlib.util.spec_from_file_location("lf_golden_templates", ROOT / "bench" / "lf_golden_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from llamafactory.data.mm_plugin import get_mm_plugin
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES as LF_TEMPLATES
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from tokenizers import AddedToken

    helpers = _helpers()
    base = helpers._load_stand_in()
    union = sorted({w for t in LF_TEMPLATES.values() for w in [*t.stop_words, *helpers._token_slots(t)]} - {"###"})
    base.add_tokens([AddedToken(t, special=True, normalized=False) for t in union], special_tokens=True)
    eos, pad = base.eos_token, base.pad_token
    golden = {"stand_in_special_tokens": union, "cutoff_len": helpers.CUTOFF, "rows": ROWS, "options": OPTIONS,
              "templates": {}}
    for name in TEMPLATES:
        golden["templates"][name] = {}
        for option, values in OPTIONS.items():
            # get_template_and_fix_tokenizer writes the options into the registered template: a fresh copy each time
            saved = copy.deepcopy(LF_TEMPLATES[name])
            tokenizer = copy.deepcopy(base)
            tokenizer.eos_token, tokenizer.pad_token = eos, pad
            data_args = SimpleNamespace(template=name, train_on_prompt=False, tool_format=None, preserve_thinking=False,
                                        mask_history=False, cutoff_len=helpers.CUTOFF, **values)
            template = get_template_and_fix_tokenizer(tokenizer, data_args)
            template = dataclasses.replace(template, mm_plugin=get_mm_plugin(name="base"))
            processor = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None,
                                                   data_args=data_args)
            encoded = []
            for row in ROWS:
                ids, labels = processor._encode_data_example(row["_prompt"], row["_response"], row["_system"], "",
                                                             [], [], [])
                encoded.append({"input_ids": ids, "labels": helpers._labels(ids, labels)})
            golden["templates"][name][option] = {"eos_token": tokenizer.eos_token, "data": encoded}
            LF_TEMPLATES[name] = saved
    OUT.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(TEMPLATES)} templates x {len(OPTIONS)} option sets x {len(ROWS)} rows -> {OUT.relative_to(ROOT)} "
          f"({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
