"""Reading files a user points the exporter at (the config, secret files, the web config), bounded in size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class FileProblem(Exception):
    """A file could not be used (unreadable, too large, not UTF-8, not YAML); the message names no file."""


def size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit >> 10} KiB"


def read_text_file(path: str | Path, limit: int, what: str) -> str:
    """The file's text, reading at most ``limit`` bytes: /dev/zero or a huge file fails fast, and so does text
    that is not UTF-8. Raises FileProblem with a message that starts with ``what`` (e.g. "config file")."""
    chunks: list[bytes] = []
    size = 0
    try:
        # Non-blocking: a named pipe without a writer reads as empty instead of hanging a reload forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            while size <= limit and (chunk := os.read(fd, min(limit + 1 - size, 1 << 16))):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise FileProblem(f"cannot read {what}: {err.strerror or err}") from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise FileProblem(f"{what} is larger than {size_text(limit)}, the limit for this file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileProblem(f"{what} is not UTF-8 text (invalid byte at offset {err.start})") from None


def parse_yaml(text: str) -> Any:
    """yaml.safe_load that only ever raises FileProblem, whatever the document holds."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or "syntax error"
        raise FileProblem(f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise FileProblem("invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a 5,000-digit integer, a 13th month
        raise FileProblem(f"invalid YAML: a value cannot be converted: {str(err)[:120]}") from None
