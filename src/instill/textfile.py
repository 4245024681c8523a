"""Reading text files users give us (configs, registries, data): one encoding policy, one error line.

UTF-8 by default, a UTF-8 byte-order mark accepted; any other encoding (``gbk``, ``gb18030``, ...)
only when asked for. A file that does not decode is reported as ``path:LINE: not UTF-8 (byte 0x.. at
column N)``, with LINE and the byte column (1-based) of the first undecodable byte, never a traceback.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from instill.errors import EncodingError, InstillError

DEFAULT_ENCODING = "utf-8"


def codec_name(encoding: str | None, error: type[InstillError] = EncodingError) -> str:
    """The Python codec for a user's encoding name; UTF-8 becomes utf-8-sig (a BOM is accepted and dropped)."""
    name = (encoding or DEFAULT_ENCODING).strip()
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise error(f"unknown encoding '{printable(name)}' (e.g. utf-8, gbk, gb18030, big5, utf-16)") from None
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def _label(codec: str) -> str:
    return "UTF-8" if codec in ("utf-8", "utf-8-sig") else codec.upper()


_DATA_HINT = "; save it as UTF-8, or name its encoding (--encoding, or \"encoding\" in dataset_info.json)"


def undecodable(path: str | Path, encoding: str | None = None, hint: str | None = None) -> str:
    """The one-line message for a file that does not decode: where the first bad byte is, then `hint` (for
    UTF-8, by default: how to name another encoding)."""
    codec = codec_name(encoding)
    data = Path(path).read_bytes()
    try:
        data.decode(codec)
    except UnicodeDecodeError as err:
        start = err.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        if hint is None:
            hint = _DATA_HINT if codec == "utf-8-sig" else ""
        return f"{path}:{line}: not {_label(codec)} (byte 0x{data[start]:02x} at column {column}){hint}"
    return f"{path}:1: not {_label(codec)} (it does not start with a byte-order mark)"


def read_text(path: str | Path, encoding: str | None = None, error: type[InstillError] = EncodingError,
              hint: str | None = None) -> str:
    """The whole file as text; a decoding failure becomes ``error`` with the line and column of the bad byte
    (and `hint`, see `undecodable`)."""
    codec = codec_name(encoding, error)
    try:
        return Path(path).read_text(encoding=codec)
    except UnicodeError:  # UnicodeDecodeError, or UTF-16 without a byte-order mark
        raise error(undecodable(path, encoding, hint)) from None


def printable(text: str) -> str:
    """`text` with control characters (a newline in a key or a name) escaped, so an error stays one line."""
    return text if text.isprintable() else repr(text)[1:-1]
