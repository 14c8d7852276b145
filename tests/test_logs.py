"""Log redaction: every configured secret is masked wherever it hides in a record, and nothing else is touched."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from exporter.config.load import parse_config
from exporter.config.model import ConfigError
from exporter.logs import MASK, JsonFormatter, LogfmtFormatter, RedactSecrets
from tests.support import REPO

TOKEN = "tok-SECRET-1234567890abcdef"
KEY = "0123456789abcdef0123456789abcdef01234"  # a Global API Key: hex only
EMAIL = "billing@example.com"
ACC = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.fixture(params=["logfmt", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO, RedactSecrets]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if request.param == "json" else LogfmtFormatter())
    redact = RedactSecrets()
    handler.addFilter(redact)
    logger = logging.getLogger(f"test-logs-{request.param}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    config = parse_config({"cloudflare": {"api_token": TOKEN},
                           "accounts": [ACC, {"id": "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40", "api_email": EMAIL,
                                              "api_key": KEY}]}, "c", {})
    redact.update(config.secrets())
    yield logger, stream, redact
    logger.handlers[:] = []


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_secrets_are_masked_wherever_they_hide(logged: tuple[logging.Logger, io.StringIO, RedactSecrets]) -> None:
    logger, stream, _ = logged
    logger.info("request with %s failed", TOKEN)
    logger.info("poll failed", extra={
        "error": f"echo {TOKEN} for {EMAIL}",
        "details": {"errors": [{"message": f"key {KEY}"}], TOKEN: "as a key"},
        "attempts": [TOKEN, 3],
        "exc": ValueError(f"Authorization: Bearer {TOKEN}"),
    })
    try:
        raise RuntimeError(f"bug while using {KEY}")
    except RuntimeError:
        logger.exception("poll crashed")
    output = stream.getvalue()
    for secret in (TOKEN, KEY, EMAIL, TOKEN[4:-4], KEY[4:-4]):
        assert secret not in output, output
    assert output.count(MASK) == 8, output
    assert len(lines(stream)) == 3, output  # a traceback stays inside its one line
    assert "Traceback (most recent call last)" in lines(stream)[2] and "RuntimeError" in lines(stream)[2]


def test_numeric_secret_in_a_number_field_is_masked(logged: tuple[logging.Logger, io.StringIO, RedactSecrets]) -> None:
    logger, stream, redact = logged
    redact.update(["1234567890123"])  # all digits: plausible as a secret, and as a number in a field
    logger.info("x", extra={"value": 1234567890123, "other": 42, "ok": True, "none": None})
    output = stream.getvalue()
    assert "1234567890123" not in output and MASK in output and "42" in output, output


def test_masking_touches_nothing_but_secrets(logged: tuple[logging.Logger, io.StringIO, RedactSecrets]) -> None:
    logger, stream, _ = logged
    text = "GET /metrics 200; token expired for account production; password changeme"
    logger.info(text, extra={"path": "/metrics", "count": 3})
    output = stream.getvalue()
    assert MASK not in output and "/metrics" in output and "production" in output, output


def test_every_secret_the_config_accepts_is_masked_whatever_its_length() -> None:
    # The config refuses values too short or too ordinary to mask (so "metrics" cannot be a token, and masking
    # never rewrites the word); everything it accepts is masked, the shortest included. The old filter skipped
    # secrets under 4 characters and masked a token "metrics" inside every request line.
    with pytest.raises(ConfigError):
        parse_config({"cloudflare": {"api_token": "metrics"}, "accounts": [ACC]}, "c", {})
    config = parse_config({"cloudflare": {"api_token": "Ab1-xyz9"}, "accounts": [ACC]}, "c", {})
    redact = RedactSecrets()
    redact.update(config.secrets())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token Ab1-xyz9 refused", None, None)
    assert redact.filter(record) and record.getMessage() == f"token {MASK} refused"
    redact.update(["ab"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "ab", None, None)
    assert redact.filter(record) and record.getMessage() == MASK


def test_json_lines_stay_valid_with_hostile_text(logged: tuple[logging.Logger, io.StringIO, RedactSecrets]) -> None:
    logger, stream, _ = logged
    logger.info("name a\ud800b\nsecond line", extra={"account": "x\udcff", "error": "\x00\x1b[31m"})
    [line] = lines(stream)
    line.encode("utf-8")  # a lone surrogate cannot break the output stream
    if line.startswith("{"):
        assert json.loads(line)["account"] == "x\udcff"


@pytest.mark.e2e
def test_uncaught_exceptions_are_logged_on_one_masked_line() -> None:
    code = f"""
import threading
from exporter.logs import setup_logging
redact = setup_logging("info", "json")
redact.update([{TOKEN!r}])
thread = threading.Thread(target=lambda: 1 / 0 if False else (_ for _ in ()).throw(RuntimeError({TOKEN!r})))
thread.start()
thread.join()
raise ValueError("main thread bug with " + {TOKEN!r})
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is a JSON record
    assert [r["msg"] for r in records] == ["uncaught exception in a thread", "uncaught exception"], records
    assert [r["error_type"] for r in records] == ["RuntimeError", "ValueError"]
    assert all("Traceback (most recent call last)" in r["traceback"] for r in records)
    assert TOKEN not in result.stderr and MASK in result.stderr
