"""What every config section shares: the strict base model and the comma-list reader.

Each section of `RunConfig` (config_model.py, config_data.py, config_method.py, config_train.py,
config_eval.py, config_export.py) is a `_Section`: unknown keys are refused, numbers are strict, and a
field's attribute docstring is its help text. `config.py` routes the flat YAML into the sections.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _is_number_type(annotation: Any) -> bool:
    """int or float, alone or in a union (`int | None`); bool is a subclass of int but not a number here."""
    return annotation in (int, float) or any(_is_number_type(a) for a in get_args(annotation))


class _Section(BaseModel):
    # Numbers are strict for every key at once: finite (no .inf / .nan) and never a boolean.
    # A field's docstring is its help text (`instill keys`, the README).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False,
                              use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes/no/true/false/on/off as booleans, which pydantic would turn into 1 and 0."""
        if isinstance(value, bool) and _is_number_type(cls.model_fields[info.field_name].annotation):
            raise ValueError("a number is needed, not a boolean: YAML reads yes/no/true/false/on/off as booleans")
        return value


def _comma_list(value: Any) -> Any:
    """'a, b' -> ['a', 'b']; lists pass through; None stays None."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value

