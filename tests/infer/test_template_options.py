"""`default_system` / `enable_thinking` reach serve and chat (training renders with the same template object)."""

from __future__ import annotations

from instill.config import build_config
from instill.data.templates import TemplateChoice
from instill.infer.engine import load_generator
from instill.infer.serve.served import load_served


def test_serve_and_chat_render_the_default_system(tiny_qwen2, tmp_path):
    config = build_config({"model_name_or_path": str(tiny_qwen2), "do_train": False, "default_system": "Be a pirate.",
                           "output_dir": str(tmp_path / "run")})
    hi = [{"role": "user", "content": "hi"}]
    [served] = load_served(config).models.values()
    assert served.template.render(hi, add_generation_prompt=True).startswith("<|im_start|>system\nBe a pirate.")
    generator = load_generator(config.model, TemplateChoice.of(config.data))
    assert generator.template.render(hi).startswith("<|im_start|>system\nBe a pirate.")
