"""The config door: any YAML text, and any mapping of LLaMA-Factory / instill keys to values of any type,
either loads into a RunConfig whose run_config.yaml loads back to the same values, or is one ConfigError line
naming the file (and the key)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from instill.config import ALIASES, KNOWN_KEYS, build_config, is_secret, load_config, save_config
from instill.errors import ConfigError
from instill.key_policy import POLICY
from tests.fuzz.helpers import accepted_or_refused, examples

LF_KEYS = sorted(json.loads((Path(__file__).parents[1] / "fixtures/llamafactory_0.9.5_keys.json").read_text()))
KEYS = sorted({*LF_KEYS, *KNOWN_KEYS, *POLICY, *ALIASES, "use_swanlab", "disable_gradient_checkpointing"})

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["auto", "lora", "sft", "dpo", "true", "no", "1e-4", "a,b", "", "steps", "ppo", "oft"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
keys = st.sampled_from(KEYS) | st.text(max_size=10)
# Mostly wrong: any keys, any values; mostly right: instill's own keys with scalars (so many configs load and
# the round trip through run_config.yaml is checked).
configs = st.dictionaries(keys, values, max_size=6) | st.dictionaries(st.sampled_from(sorted(KNOWN_KEYS)), scalars,
                                                                     max_size=3)


def _loads_back(config, root: Path) -> None:
    """Soundness: the resolved config, saved as run_config.yaml, loads back to the same values."""
    saved = root / "run_config.yaml"
    save_config(config, saved)
    again = load_config(saved)
    first, second = config.flat(), again.flat()
    for key, value in first.items():
        if is_secret(key, value):
            continue
        assert _same(second[key], value), (key, value, second[key])


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b) or (isinstance(a, float | int) and isinstance(b, float | int) and a == b)


def _load(text: str | bytes, root: Path):
    path = root / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return accepted_or_refused(lambda: load_config(path), str(path), error=ConfigError)


@examples(300)
@given(raw=configs, with_model=st.booleans())
@example(raw={"\n": None}, with_model=False)  # an unknown key holding a newline was printed on two lines
@example(raw={"fsdp": True}, with_model=True)  # TypeError in the fsdp validator (found by bench/fuzz_long.py)
def test_any_keys_and_values_load_or_name_the_key(raw, with_model):
    if with_model:
        raw = {"model_name_or_path": "some/model", **raw}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            text = yaml.safe_dump(raw, allow_unicode=True)
        except yaml.YAMLError:
            return
        config = _load(text, root)
        if config is not None:
            _loads_back(config, root)


@examples(200)
@given(text=st.text(max_size=200) | st.binary(max_size=200)
       | st.lists(st.sampled_from(KEYS), min_size=1, max_size=4).flatmap(
           lambda ks: st.lists(st.sampled_from([": 1", ": [", ": {a: b}", ": .nan", ": !!python/object:os.system x",
                                                ": \t", ": *a", ": &a 1", ":", ": 'x", ": 1e400", ": -"]),
                               min_size=len(ks), max_size=len(ks)).map(
               lambda vs: "model_name_or_path: m\n" + "\n".join(k + v for k, v in zip(ks, vs)))))
@example(text="\x1f")  # yaml's ReaderError: a two-line message without a line number
@example(text=b"model_name_or_path: m\nstage: \xff\n")
@example(text="model_name_or_path: m\nmodel_name_or_path: n\n")
def test_any_yaml_text_loads_or_is_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        config = _load(text, Path(tmp))
        if config is not None:
            _loads_back(config, Path(tmp))


@examples(200)
@given(overrides=st.lists(st.tuples(keys, st.text(max_size=12) | values.map(json.dumps)).map("=".join)
                          | st.text(max_size=12), max_size=4))
@example(overrides=["\n"])  # printed on two lines
@example(overrides=['fsdp="\\ud800\\udc00"'])  # UnicodeEncodeError from pydantic (found by bench/fuzz_long.py)
@example(overrides=["fsdp=[[]]"])  # TypeError in the fsdp validator
def test_any_overrides_apply_or_name_the_override(overrides):
    def build():
        return build_config({"model_name_or_path": "m"}, overrides, source="cfg.yaml")

    config = accepted_or_refused(build, "cfg.yaml", "override", error=ConfigError)
    if config is not None:
        with tempfile.TemporaryDirectory() as tmp:
            _loads_back(config, Path(tmp))
