"""User-facing errors: each carries a message fit for the terminal; the CLI prints it and exits 2."""


class InstillError(Exception):
    """A mistake the user can fix (bad config, bad data row, missing model). Never a bug of ours."""


class ConfigError(InstillError):
    """The YAML or a command-line override is invalid."""


class DataError(InstillError):
    """A dataset, a registry entry or a row is invalid. Message names the file and the row/line."""


class EncodingError(DataError):
    """A file does not decode with its encoding (UTF-8 unless one was named). Message: path:LINE, byte, column."""


class ModelError(InstillError):
    """A model or tokenizer cannot be found or loaded."""


class ReportError(InstillError):
    """A run report cannot be written (no such run directory)."""


class TemplateError(InstillError):
    """A chat template cannot render a conversation, or is not prefix-stable."""
