"""Structured logs: logfmt or JSON on stderr, one line per event, with every known secret masked."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
MASK = "<secret>"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn"}.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        fields["error_type"] = record.exc_info[0].__name__
    if record.exc_text:  # a bug's traceback: one field of the one line, in the configured format, masked
        fields["traceback"] = record.exc_text
    return fields


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\\') or not text.isprintable():
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class RedactSecrets(logging.Filter):
    """Masks every configured secret in the message, the extra fields (nested ones and objects such as an
    exception included) and a traceback, whatever put it there.

    Masking is plain substring replacement of every secret, whatever its length. That is sound because the
    config refuses any secret that could occur in ordinary text (config._secret_problem: shorter than 8
    characters, whitespace, non-ASCII, a plain lower-case word): masking never rewrites an ordinary word,
    and no secret is left unmasked for being short."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another is masked whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``<secret>`` (also for text shown outside logs)."""
        return self._mask(text)

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self._mask(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            text = str(value)
            return value if self._mask(text) == text else self._mask(text)
        if depth < 8 and isinstance(value, dict):
            return {self._clean(k, depth + 1): self._clean(v, depth + 1) for k, v in value.items()}
        if depth < 8 and isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v, depth + 1) for v in value]
        return self._mask(str(value))  # an exception, a URL object...: its text is what a formatter writes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if self._secrets:
            record.msg = self._mask(record.getMessage())
            record.args = None
            if record.exc_text:
                record.exc_text = self._mask(record.exc_text)
            for key, value in list(vars(record).items()):
                if key not in _STANDARD and not key.startswith("_"):
                    setattr(record, key, self._clean(value))
        return True


def setup_logging(level: str, fmt: str) -> RedactSecrets:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    redact = RedactSecrets()
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for noisy in ("httpx", "httpcore"):  # they log every request URL at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _route_uncaught_exceptions()
    return redact


def _route_uncaught_exceptions() -> None:
    """An exception nobody caught is a bug: its traceback goes through the logger (one line, the configured
    format, secrets masked), not raw onto stderr."""
    bugs = logging.getLogger("exporter.bug")

    def in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        bugs.error("uncaught exception in a thread", extra={"thread_name": getattr(args.thread, "name", "?")},
                   exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def in_main(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        bugs.error("uncaught exception", exc_info=(exc_type, exc, tb))

    threading.excepthook = in_thread
    sys.excepthook = in_main
