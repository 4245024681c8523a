"""instill: raw data to an instruction-tuned LLM, with the numbers to prove it."""

__version__ = "0.1.0"
