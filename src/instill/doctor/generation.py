"""One greedy generation on a real prompt: does the model stop at the end-of-turn token?

The model is the one `instill eval` would pick (the tuned run in output_dir when there is one,
else the base), loaded through `infer.engine.load_generator` with the configured template, in
fp32 (this check is about stopping, not speed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.data.example import Example
from instill.data.templates import TemplateChoice
from instill.doctor.table import FAIL, PASS, SKIP, WARN, Check
from instill.doctor.template import PROBE
from instill.errors import InstillError

AREA = "generation"
MAX_NEW_TOKENS = 256


def _prompt(sample: Example | None) -> tuple[list[dict], list[dict] | None, str]:
    """The sample's conversation up to its last assistant turn (the probe's first question without one)."""
    if sample is not None:
        last = max((i for i, m in enumerate(sample.messages) if m["role"] == "assistant"), default=None)
        if last:
            return sample.messages[:last], sample.tools, sample.source
    return PROBE.messages[:1], None, "a probe question"


def greedy_reply(generator: Any, messages: list[dict], tools: list[dict] | None, max_new_tokens: int) -> tuple[list[int], str]:
    """Generated token ids (stop token included) and the reply text."""
    import torch

    ids = generator.encode(generator.render(messages, tools))
    model = generator.model
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids], device=model.device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=generator.stop_ids, pad_token_id=generator.pad_id)
    new = out[0, len(ids):].tolist()
    return new, generator.tokenizer.decode(new, skip_special_tokens=True).strip()


def generation_check(config: RunConfig, run_dir: Path, sample: Example | None, has_chat_template: bool) -> Check:
    from instill.infer.engine import load_generator
    from instill.model.choice import choose_model

    run_config = config.model_copy(update={"train": config.train.model_copy(update={"output_dir": str(run_dir)})})
    choice = choose_model(run_config, "auto")
    if choice.name == "base" and not has_chat_template:
        return Check(SKIP, AREA, "stops", "a base model without a chat template is not expected to stop before training")
    try:
        generator = load_generator(choice.model_args, TemplateChoice.of(config.data), adapter=choice.adapters)
    except InstillError as err:
        return Check(FAIL, AREA, "stops", f"cannot load {choice.describe()}: {err}", "fix the model paths above")
    messages, tools, where = _prompt(sample)
    try:
        new, reply = greedy_reply(generator, messages, tools, MAX_NEW_TOKENS)
    except InstillError as err:  # the template cannot render this prompt
        return Check(FAIL, AREA, "stops", f"cannot render the prompt of {where}: {err}", "see the template rows")
    shown = reply if len(reply) <= 80 else reply[:77] + "..."
    if new and new[-1] in generator.stop_ids:
        stop = generator.tokenizer.decode(new[-1:])
        return Check(PASS, AREA, "stops", f"the {choice.name} model stopped at {stop!r} after {len(new)} tokens on "
                     f"{where}: {shown!r}")
    what = (f"the {choice.name} model wrote {len(new)} tokens on {where} without a stop token "
            f"({', '.join(repr(generator.tokenizer.decode([i])) for i in generator.stop_ids)}): {shown!r}")
    if choice.name == "tuned":
        return Check(FAIL, AREA, "stops", what, "train and serve with the same template, with its end of turn trained "
                     "(see the template rows); if the loss is still high, train longer")
    return Check(WARN, AREA, "stops", what, "use the template the model was made with (template: auto), "
                 "or expect training to teach it to stop")
