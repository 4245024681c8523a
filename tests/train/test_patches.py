"""Every private trl / transformers name we override still exists with the parameters we expect.

An upgrade that renames or reshapes one fails here, by name, instead of in a training run.
"""

from __future__ import annotations

import pytest

from instill.train.patches import OVERRIDES, Override, mismatch, resolve

ENTRIES = [(owner, entry) for entry in OVERRIDES for owner in entry.owners]


@pytest.mark.parametrize("owner, entry", ENTRIES, ids=[f"{o.split(':')[-1]}.{e.name}" for o, e in ENTRIES])
def test_overridden_name_fits_the_installed_library(owner, entry):
    assert mismatch(resolve(owner), entry) is None, entry.why


def test_the_trainers_install_the_overrides_declared():
    """Each mixin method that stands in for a library name is declared in OVERRIDES."""
    from instill.train import patches

    declared = {entry.name for entry in OVERRIDES}
    mixins = (patches.SeededLengthGroups, patches.IdsAsGiven, patches.PairRowsAsGiven, patches.KLPairs,
              patches.OwnTokenCount)
    for mixin in mixins:
        for name, value in vars(mixin).items():
            if callable(value) and (name == "__init__" or not name.startswith("__")):
                assert name in declared, f"{mixin.__name__}.{name} is not declared in OVERRIDES"


class _Library:
    """A stand-in owner, as an installed library might have it."""

    def __init__(self, args):
        self._batch = args

    def _step(self, model, inputs):
        pass

    def _loop(self, model, epoch, more):
        pass


def test_a_changed_or_missing_name_is_reported():
    assert mismatch(_Library, Override(("x:_Library",), "_step", ("self", "model", "inputs"), "")) is None
    assert "parameters" in mismatch(_Library, Override(("x:_Library",), "_step", ("self", "model"), ""))
    assert "parameters" in mismatch(_Library, Override(("x:_Library",), "_step", ("self", "inputs", "model"), ""))
    assert "gone" in mismatch(_Library, Override(("x:_Library",), "_gone", ("self",), ""))
    # a wrapped method: only the leading parameters must match
    assert mismatch(_Library, Override(("x:_Library",), "_loop", ("self", "model", "epoch", ...), "")) is None
    assert "parameters" in mismatch(_Library, Override(("x:_Library",), "_loop", ("self", "epoch", ...), ""))
    # an attribute the library's __init__ sets
    assert mismatch(_Library, Override(("x:_Library",), "_batch", None, "")) is None
    assert "no longer set" in mismatch(_Library, Override(("x:_Library",), "_size", None, ""))
