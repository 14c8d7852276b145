"""The walk over a YAML document: ``${VAR}`` expansion within bounds, then section by section, key by key.

Every problem is collected (not just the first) as ``path.key: what is wrong``, so a user fixes them all at
once. Everything read from outside is bounded (docs/limits.md): the values and characters the document
expands to (YAML aliases, ``${VAR}``) and its nesting depth. Text that is not valid Unicode is refused where
it enters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from exporter.config.files import size_text
from exporter.config.values import Invalid

MAX_CONFIG_VALUES = 200_000  # values (mappings, lists, scalars) once YAML aliases are expanded
MAX_CONFIG_CHARS = 16 << 20  # characters of text (keys and strings) once aliases and ${VAR} are expanded
MAX_CONFIG_DEPTH = 32  # nesting of mappings and lists
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class TooBig(Exception):
    """The document exceeds a structural limit: loading stops at once."""


def key_text(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 60 else text[:57] + "..."


def key_path(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{key_text(part)}" if text else key_text(part))
    return text


class Walker:
    """Collects the problems and warnings of one load."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.spoiled_paths: set[str] = set()  # values already reported (${VAR} unset, ...)
        self._values = 0
        self._chars = 0

    def _charge(self, chars: int) -> None:
        self._values += 1
        self._chars += chars
        if self._values > MAX_CONFIG_VALUES:
            raise TooBig(f"the document expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases "
                         "repeating a large part?)")
        if self._chars > MAX_CONFIG_CHARS:
            raise TooBig(f"the document expands to more than {size_text(MAX_CONFIG_CHARS)} of text (YAML aliases "
                         "or ${VAR} repeating a large part?)")

    def expand(self, node: Any, path: tuple[Any, ...] = ()) -> Any:
        """A copy of the document with ${VAR} and ${VAR:-default} expanded in every string: a plain tree
        (aliases copied, bounded by the limits above), every string valid Unicode."""
        if len(path) > MAX_CONFIG_DEPTH:
            raise TooBig(f"{key_path(path[:4])}...: nested deeper than {MAX_CONFIG_DEPTH} levels "
                         "(or a YAML alias that contains itself)")
        if isinstance(node, dict):
            self._charge(0)
            out: dict[Any, Any] = {}
            for k, v in node.items():
                self._charge(len(k) if isinstance(k, str) else 0)
                out[k] = self.expand(v, (*path, k))
            return out
        if isinstance(node, list | tuple | set | frozenset):
            self._charge(0)
            return [self.expand(v, (*path, i)) for i, v in enumerate(node)]
        if isinstance(node, str):
            return self._expand_text(node, path)
        self._charge(len(node) if isinstance(node, bytes) else 0)
        return node

    def _expand_text(self, node: str, path: tuple[Any, ...]) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ and (default is None or self.environ[name] != ""):
                return self.environ[name]
            if default is not None:
                return default
            where = key_path(path)
            self.problems.append(f"{where}: environment variable {name} is not set")
            self.spoiled_paths.add(where)
            return ""

        text = _ENV_REF_RE.sub(substitute, node) if "${" in node else node
        self._charge(len(text))
        if _SURROGATE_RE.search(text):
            # From a YAML "\ud800" escape or an environment variable that is not UTF-8; never echoed.
            where = key_path(path)
            self.problems.append(f"{where}: contains text that is not valid Unicode (a lone surrogate, "
                                 "from a \\u escape or an environment variable that is not UTF-8)")
            self.spoiled_paths.add(where)
            return ""
        return text

    def section(self, doc: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """``doc`` as a mapping whose keys are all in ``allowed`` (each unknown key is a problem)."""
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            self.problems.append(f"{path or 'top level'}: expected a mapping, got {type(doc).__name__}")
            return {}
        for key in doc:
            if key not in allowed:
                self.problems.append(f"{path + '.' if path else ''}{key_text(key)}: unknown key "
                                     f"(allowed: {', '.join(allowed)})")
        return doc

    def value(self, doc: dict[str, Any], path: str, key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        """``parse(doc[key])``, or ``default`` when the key is left out, null, or wrong (a problem then)."""
        if key not in doc or doc[key] is None:
            return default
        if f"{path}.{key}" in self.spoiled_paths:
            return default  # its problem is already reported
        try:
            return parse(doc[key])
        except Invalid as problem:
            self.problems.append(f"{path}.{key}: {problem}")
            return default
