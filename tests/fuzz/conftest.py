"""Loads the hypothesis profile (helpers.py) before any fuzz test module builds its settings."""

import tests.fuzz.helpers  # noqa: F401
