"""Quiet by default: library warnings known to be harmless are dropped at instill's entry point.

Each is matched by its exact text (and category or logger), never by a blanket level or category,
so a new or different warning still shows. `-v` / `--verbose` or `INSTILL_VERBOSITY=debug` turns
every filter off and shows instill's own debug log. tests/test_cli_front_door.py checks that each
message below still exists, word for word, in the installed library, so a filter cannot rot
silently when a library rewords it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence

# (category, exact message, the library that says it, why it is harmless)
HARMLESS_WARNINGS: list[tuple[type[Warning], str, str, str]] = [
    (FutureWarning,
     "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` instead.",
     "transformers/modeling_utils.py", "transformers 5.2x and peft call the deprecated alias themselves"),
    (UserWarning,
     "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used.",
     "torch/utils/data/dataloader.py", "Trainer asks for pinned memory by default; on the CPU there is nothing to pin"),
]

# logger name -> (regex matching the record's unformatted message exactly, the library file, why harmless)
HARMLESS_LOG_RECORDS: dict[str, list[tuple[str, str, str]]] = {
    "bitsandbytes.backends.cpu.ops": [(
        re.escape("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                  "`pip install kernels` and the kernels >= 0.11.1"),
        "bitsandbytes/backends/cpu/ops.py", "an optional kernel package; bitsandbytes' own CPU path works (STACK.md)",
    )],
    "transformers.tokenization_utils_tokenizers": [(
        re.escape("Ignoring clean_up_tokenization_spaces=True for BPE tokenizer") + r" \w+"
        + re.escape(". The clean_up_tokenization post-processing step is designed for WordPiece tokenizers and is "
                    "destructive for BPE (it strips spaces before punctuation). Set clean_up_tokenization_spaces=False "
                    "to suppress this warning, or set clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt"
                    "_output=True to force cleanup anyway."),
        "transformers/tokenization_utils_tokenizers.py", "transformers already skips the clean-up; the text is right",
    )],
}


def verbose_requested(argv: Sequence[str]) -> bool:
    return any(a in ("-v", "--verbose") for a in argv) or os.environ.get("INSTILL_VERBOSITY", "").lower() == "debug"


class _DropExact(logging.Filter):
    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p + r"\Z", re.DOTALL) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(p.match(str(record.msg)) for p in self.patterns)


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Within this block, drop the known-harmless warnings (or, verbose, show instill's debug log)."""
    if verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[instill] %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("instill")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            root.removeHandler(handler)
        return
    installed = []
    with warnings.catch_warnings():
        for category, message, _, _ in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message) + r"\Z", category=category)
        for name, entries in HARMLESS_LOG_RECORDS.items():
            log_filter = _DropExact([pattern for pattern, _, _ in entries])
            logging.getLogger(name).addFilter(log_filter)  # a logger's filters see the records it creates
            installed.append((name, log_filter))
        try:
            yield
        finally:
            for name, log_filter in installed:
                logging.getLogger(name).removeFilter(log_filter)
