"""Media columns of a row (LLaMA-Factory's `images` / `videos` / `audios`): paths checked, images opened.

A row lists its media as paths relative to `media_dir` (default: `dataset_dir`, as LLaMA-Factory) or
absolute; the text marks where each one
goes with a placeholder (`<image>`, `<video>`, `<audio>`), and the counts must agree. Everything wrong
is one line naming the row: a count mismatch, a URL (nothing is downloaded), a relative path that
climbs out of that folder (write it absolute if you mean it), a missing file, an unreadable image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from instill.data.example import Example
from instill.data.registry import DatasetSpec
from instill.errors import DataError

PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
_NOUN = {"images": ("image", "images"), "videos": ("video", "videos"), "audios": ("audio", "audios")}


def placeholder_count(example: Example, placeholder: str) -> int:
    return sum(m["content"].count(placeholder) for m in example.messages if isinstance(m.get("content"), str))


def _paths(value: Any, column: str, source: str) -> list[str]:
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
        raise DataError(f"{source}: column '{column}' must be a list of file paths, got {str(value)[:80]}")
    return items


def resolve_path(path: str, dataset_dir: str | os.PathLike, where: str, folder: str = "dataset_dir") -> str:
    """The absolute path of one media file relative to `dataset_dir` (the key named `folder`); `where`
    ("x.json:#0: images[1]") starts every error."""
    if "://" in path:
        raise DataError(f"{where}: '{path}' is a URL; media are read from local files only "
                        "(download it and list its path)")
    root = Path(dataset_dir).resolve()
    given = Path(path).expanduser()
    full = given if given.is_absolute() else (root / given).resolve()
    if not given.is_absolute() and not full.is_relative_to(root):
        raise DataError(f"{where}: '{path}' climbs out of {folder} {root}; give such a file as an absolute path")
    if not full.is_file():
        raise DataError(f"{where}: '{path}' not found ({full})")
    return str(full)


def open_image(path: str, where: str, shown: str | None = None) -> Any:
    """The image as RGB, fully decoded (a truncated or corrupt file fails here, not in a training step).

    `path` may also be a base64 data URL (`data:image/png;base64,...`, as OpenAI's image_url parts carry)."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    source: Any = path
    if path.startswith("data:"):
        shown = shown or "the data URL"
        try:
            source = io.BytesIO(base64.b64decode(path.partition(";base64,")[2], validate=True))
        except (binascii.Error, ValueError):
            raise DataError(f"{where}: {shown} is not valid base64") from None
    try:
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        why = str(err).splitlines()[0].replace(f" '{path}'", "")[:120] if str(err) else type(err).__name__
        raise DataError(f"{where}: '{shown or path}' is not a readable image ({why})") from None


def attach_media(example: Example, spec: DatasetSpec, dataset_dir: str | os.PathLike,
                 folder: str = "dataset_dir") -> Example:
    """Move the entry's image column from `extras` to `example.images` (absolute paths), checked: placeholder
    count equals image count, each file exists and decodes. Entries without an images column pass unchanged
    (their text may say `<image>` as plain words)."""
    column = spec.columns.get("images")
    value = example.extras.pop(column, None) if column else None
    paths = _paths(value, column, example.source) if column else []
    placeholders = placeholder_count(example, PLACEHOLDERS["images"])
    if column and placeholders != len(paths):
        one, many = _NOUN["images"]
        raise DataError(f"{example.source}: {placeholders} {PLACEHOLDERS['images']} placeholder"
                        f"{'' if placeholders == 1 else 's'} but {len(paths)} {one if len(paths) == 1 else many}")
    resolved = []
    for i, path in enumerate(paths):
        where = f"{example.source}: {column}[{i}]"
        resolved.append(resolve_path(path, dataset_dir, where, folder))
        open_image(resolved[-1], where, shown=path)
    example.images = resolved
    return example
