"""Hostile and mistaken config files: every read bounded, every problem a ConfigError that names the file and
the key, no secret ever echoed, and every value that passes validation one the exporter can start with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config.load import MAX_CONFIG_FILE_BYTES, load_config, parse_config
from exporter.config.model import ConfigError
from exporter.config.secrets import MAX_SECRET_FILE_BYTES
from tests.support import REPO, ExporterProcess, free_port, value, wait_for

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
ACC2 = "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40"
TOK = "test-token-0123"
SECRET = "inline-SECRET-777"  # distinctive: it must never show up in a message


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "config.yaml", environ or {})
    return err.value.problems


def load_problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, environ or {})
    assert err.value.source == str(path)
    return err.value.problems


def base(**cloudflare: Any) -> dict[str, Any]:
    return {"cloudflare": {"api_token": TOK, **cloudflare}, "accounts": [ACC]}


# --------------------------------------------------------------------------------------------------------
# Files: bounded, UTF-8, never an exception other than ConfigError
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("key", ["api_token_file", "api_key_file"])
def test_endless_secret_file_fails_fast_naming_the_file(device: str, key: str) -> None:
    extra = {"api_email": "billing@example.com"} if key == "api_key_file" else {}
    started = time.monotonic()
    found = problems({"cloudflare": {key: device, **extra}, "accounts": [ACC]})
    assert time.monotonic() - started < 2
    assert len(found) == 1, found
    assert found[0].startswith(f"cloudflare.{key}: ") and device in found[0], found
    assert "larger than 64 KiB" in found[0] or "not UTF-8" in found[0], found


def test_named_pipe_without_a_writer_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "token-pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    found = problems({"cloudflare": {"api_token_file": str(fifo)}, "accounts": [ACC]})
    assert time.monotonic() - started < 2
    assert found == [f"cloudflare.api_token_file: secret file {str(fifo)!r} is empty"]
    assert load_problems(fifo) == ["accounts: no accounts listed and discovery is disabled: nothing to poll"]


def test_secret_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a1" * (MAX_SECRET_FILE_BYTES // 2) + "x")
    found = problems({"cloudflare": {"api_token_file": str(path)}, "accounts": [ACC]})
    assert found == [f"cloudflare.api_token_file: secret file {str(path)!r} is larger than 64 KiB, "
                     "the limit for this file"]


def test_config_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base()) + "#" * MAX_CONFIG_FILE_BYTES)
    assert load_problems(path) == ["config file is larger than 1 MiB, the limit for this file"]


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xed\xa0\x80", b"caf\xe9"])
def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"cloudflare:\n  api_token: " + TOK.encode() + b"\naccounts:\n  - id: " + ACC.encode()
                     + b"\n    name: prod" + bad + b"\n")
    found = load_problems(path)
    assert len(found) == 1 and found[0].startswith("config file is not UTF-8 text (invalid byte at offset"), found


def test_secret_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"tok-\xff\xfe-0123456789")
    found = problems({"cloudflare": {"api_token_file": str(path)}, "accounts": [ACC]})
    assert found == [f"cloudflare.api_token_file: secret file {str(path)!r} is not UTF-8 text "
                     "(invalid byte at offset 4)"]


@pytest.mark.parametrize(("text", "expected"), [
    ('accounts:\n  - id: "023e105f4ecef8ad9ca31a8372d0c353"\n    name: "a\\ud800b"\n',
     "accounts[0].name: contains text that is not valid Unicode"),
    ("poll:\n  max_concurrency: " + "9" * 5000 + "\n", "invalid YAML: a value cannot be converted"),
    ("poll:\n  interval: 2023-02-30\n", "invalid YAML: a value cannot be converted"),
    ("[" * 2_000 + "]" * 2_000 + "\n", "invalid YAML: nested too deeply"),
    ("a: &a [*a]\n", "nested deeper than 32 levels (or a YAML alias that contains itself)"),
    ("!!python/object:os.system {}\n", "invalid YAML"),
])
def test_hostile_yaml_is_a_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"cloudflare:\n  api_token: {TOK}\n" + text if text.startswith(("accounts", "poll")) else text)
    found = load_problems(path)
    assert any(expected in p for p in found), found


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = ['l0: &l0 "lol ${HOME}"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(billion_laughs())  # 10**9 strings once expanded
    started = time.monotonic()
    found = load_problems(path, {"HOME": "/root"})
    assert time.monotonic() - started < 5
    assert found == ["the document expands to more than 200,000 values (YAML aliases repeating a large part?)"]


def test_aliases_repeating_long_text_are_refused(tmp_path: Path) -> None:
    # Few values, but each alias copy of a ${VAR} string is a new string: the characters are bounded too.
    path = tmp_path / "config.yaml"
    path.write_text('big: &big "${X}' + "x" * 200_000 + '"\nlist: [' + ", ".join(["*big"] * 100) + "]\n")
    found = load_problems(path, {"X": "y"})
    assert found == ["the document expands to more than 16 MiB of text (YAML aliases or ${VAR} repeating "
                     "a large part?)"]


def test_a_few_aliases_are_fine() -> None:
    doc = yaml.safe_load(f"""
x-account: &acct {{type: manual, api_token: {TOK}}}
accounts:
  - {{<<: *acct, id: {ACC}, name: one}}
  - {{<<: *acct, id: {ACC2}, name: two}}
""")
    del doc["x-account"]
    config = parse_config(doc, "c", {})
    assert [a.type for a in config.accounts] == ["manual", "manual"]


def test_environment_variable_that_is_not_utf8_is_refused_without_echo() -> None:
    secretish = "tok-" + "\udcff" + "SECRET-777"  # what os.environ holds for a non-UTF-8 byte
    found = problems({"cloudflare": {"api_token": "${T}"}, "accounts": [ACC]}, {"T": secretish})
    assert found == ["cloudflare.api_token: contains text that is not valid Unicode (a lone surrogate, from a "
                     "\\u escape or an environment variable that is not UTF-8)"]


# --------------------------------------------------------------------------------------------------------
# Numbers: finite and within sane bounds, and the message says which bound
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "key", "raw", "expected"), [
    ("poll", "interval", "1e400", "poll.interval: must be a finite duration, got '1e400'"),
    ("poll", "interval", float("inf"), "poll.interval: must be a finite duration, got inf"),
    ("poll", "interval", float("nan"), "poll.interval: must be a finite duration, got nan"),
    ("poll", "interval", "8d", "poll.interval: must be at most 7d, got '8d'"),
    ("poll", "interval", "500ms", "poll.interval: must be at least 1s, got '500ms'"),
    ("poll", "interval", 10**400, "poll.interval: must be a finite duration, got a number with more than"),
    ("poll", "max_concurrency", 100_000, "poll.max_concurrency: must be at most 256, got 100000"),
    ("cloudflare", "requests_per_second", "1e400", "cloudflare.requests_per_second: must be a finite number"),
    ("cloudflare", "requests_per_second", float("nan"), "cloudflare.requests_per_second: must be a finite number"),
    ("cloudflare", "requests_per_second", "-inf", "cloudflare.requests_per_second: must be a finite number"),
    ("cloudflare", "requests_per_second", 1e6, "cloudflare.requests_per_second: must be at most 1000"),
    ("cloudflare", "requests_per_second", 1e-9, "cloudflare.requests_per_second: must be at least 0.01"),
    ("cloudflare", "timeout", "1e400s", "cloudflare.timeout: expected a duration"),
    ("cloudflare", "timeout", "1h", "cloudflare.timeout: must be at most 5m, got '1h'"),
    ("cloudflare", "timeout", "1ms", "cloudflare.timeout: must be at least 0.1s"),
    ("cloudflare", "max_retries", "1e400", "cloudflare.max_retries: expected an integer"),
    ("cloudflare", "max_retries", float("inf"), "cloudflare.max_retries: must be a finite number"),
    ("cloudflare", "max_retries", 10**400, "cloudflare.max_retries: must be a finite number of sane size"),
    ("cloudflare", "max_retries", 1000, "cloudflare.max_retries: must be at most 20, got 1000"),
    ("cloudflare", "max_pages", 10**9, "cloudflare.max_pages: must be at most 10,000"),
    ("cloudflare", "per_page", 5000, "cloudflare.per_page: must be at most 1,000"),
    ("metrics", "amount_divisor", float("nan"), "metrics.amount_divisor: must be a finite number"),
    ("metrics", "amount_divisor", "inf", "metrics.amount_divisor: must be a finite number"),
    ("metrics", "amount_divisor", 1e300, "metrics.amount_divisor: must be at most 1e+09"),
    ("sharding", "total_shards", 10**6, "sharding.total_shards: must be at most 10,000"),
])
def test_numbers_must_be_finite_and_sane(section: str, key: str, raw: object, expected: str) -> None:
    doc = base()
    doc.setdefault(section, {})[key] = raw
    found = problems(doc)
    assert any(p.startswith(expected) for p in found), found


def test_yaml_infinity_and_nan_literals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"cloudflare:\n  api_token: {TOK}\n  requests_per_second: .inf\naccounts: [{ACC}]\n"
                    "poll:\n  interval: .nan\n")
    assert sorted(load_problems(path)) == ["cloudflare.requests_per_second: must be a finite number, got inf",
                                           "poll.interval: must be a finite duration, got nan"]


EXTREMES = {
    "highest": {"timeout": "5m", "requests_per_second": 1000, "max_retries": 20, "per_page": 1000,
                "max_pages": 10_000, "interval": "7d", "max_concurrency": 256, "amount_divisor": 1e9},
    "lowest": {"timeout": "100ms", "requests_per_second": 0.01, "max_retries": 0, "per_page": 1,
               "max_pages": 1, "interval": "1s", "max_concurrency": 1, "amount_divisor": 1e-9},
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(EXTREMES))
def test_every_accepted_extreme_starts_and_serves(case: str, tmp_path: Path) -> None:
    """What --config.check accepts, the exporter can run with: the bounds themselves start and serve."""
    e = EXTREMES[case]
    config = {
        "cloudflare": {"base_url": f"http://127.0.0.1:{free_port()}/client/v4", "api_token": TOK,
                       **{k: e[k] for k in ("timeout", "requests_per_second", "max_retries", "per_page",
                                            "max_pages")}},
        "poll": {"interval": e["interval"], "max_concurrency": e["max_concurrency"]},
        "metrics": {"amount_divisor": e["amount_divisor"]},
        "accounts": [ACC],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
                           cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    proc = ExporterProcess(config, ("--log.level", "debug"), None, tmp_path)
    try:
        proc.wait_listening()
        # a request has failed against the closed port: a poll that ended (no retries) or its first retry
        wait_for(lambda: "retrying request" in proc.output() or value(
            proc.metrics(), "cloudflare_ai_gateway_api_errors_total", reason="connection") is not None,
            timeout=20, what="a failed connection")
        assert proc.proc.poll() is None, proc.output()
        text = proc.metrics()
        assert value(text, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 1.0
        assert "Traceback" not in proc.output(), proc.output()
    finally:
        proc.stop()


# --------------------------------------------------------------------------------------------------------
# Secrets: never echoed, implausible ones refused
# --------------------------------------------------------------------------------------------------------

BAD_SECRET_VALUES: list[Any] = [
    [SECRET], {"token": SECRET}, {SECRET: 1}, 777_000_111_222, 3.25e10, True,
    f"Bearer {SECRET}", f"{SECRET} trailing", f"{SECRET}\u00e9", f"{SECRET}\x01", "Bearer" + SECRET,
]


@pytest.mark.parametrize("key", ["api_token", "api_key", "api_email"])
@pytest.mark.parametrize("bad", BAD_SECRET_VALUES, ids=lambda v: type(v).__name__)
def test_no_value_under_a_secret_key_is_ever_echoed(key: str, bad: Any) -> None:
    partner = {"api_key": {"api_email": "billing@example.com"}, "api_email": {"api_key": "key-0123456789"}}
    for where in ("global", "account"):
        creds = {key: bad, **partner.get(key, {})}
        doc: dict[str, Any] = ({"cloudflare": creds, "accounts": [ACC]} if where == "global"
                               else {"accounts": [{"id": ACC, **creds}]})
        try:
            parse_config(doc, "config.yaml", {})
        except ConfigError as err:
            text = str(err) + err.report()
        else:
            assert isinstance(bad, str) and bad.startswith("Bearer" + SECRET), bad  # a plausible token
            continue
        for leak in (SECRET, "SECRET", "777", "3.25", "True", "1e+10", "32500000000"):
            assert leak not in text, f"{key}={bad!r} echoed in: {text}"
        assert f"{key}: " in text, text


def test_secret_file_content_is_never_echoed(tmp_path: Path) -> None:
    for content in (f"Bearer {SECRET}\n", f"{SECRET} {SECRET}\n", "hunter-SECRET\x00\n", "password\n", "abc\n"):
        path = tmp_path / "token"
        path.write_text(content)
        found = problems({"cloudflare": {"api_token_file": str(path)}, "accounts": [ACC]})
        assert len(found) == 1 and str(path) in found[0], found
        assert "SECRET" not in found[0] and "password" not in found[0].split(":", 1)[1].replace(
            "secret file", ""), found


def test_environment_token_problems_are_not_echoed() -> None:
    found = problems({"accounts": [ACC]}, {"CLOUDFLARE_API_TOKEN": f"Bearer {SECRET}"})
    assert found == ["CLOUDFLARE_API_TOKEN (environment variable): starts with 'Bearer ': write the token alone, "
                     "the exporter adds 'Bearer ' itself (value not shown)"]


def test_base_url_with_credentials_is_refused_without_echo() -> None:
    found = problems(base(base_url=f"https://user:{SECRET}@proxy.example:8443/client/v4"))
    assert found == ["cloudflare.base_url: must not contain a user name or password (user:pass@): "
                     "they would appear in logs"]


@pytest.mark.parametrize("url", ["http://xn--/", "http://[::1", "http://a:99999", "ftp://a", "http://a b/",
                                 "http://a/\x7f", "http://a/?x=1", "http://a/#f"])
def test_base_url_the_client_could_not_use_is_refused(url: str) -> None:
    found = problems(base(base_url=url))
    assert len(found) == 1 and found[0].startswith("cloudflare.base_url: "), found


@pytest.mark.parametrize(("token", "reason"), [
    ("metrics", "shorter than 8 characters"),
    ("abc", "shorter than 8 characters"),
    ("password", "a plain lower-case word"),
    ("changeme", "a plain lower-case word"),
    ("tok en-0123456789", "contains whitespace"),
    ("tok\ten-0123456789", "contains whitespace"),
    ("t\u00f6ken-0123456789", "printable ASCII"),
    ("\ufefftoken-0123456789", "printable ASCII"),
    ("bearer tok-0123456789", "starts with 'Bearer '"),
    ("Bearer tok-0123456789", "write the token alone, the exporter adds 'Bearer ' itself"),
])
def test_implausible_tokens_are_refused_with_the_reason(token: str, reason: str) -> None:
    found = problems(base(api_token=token))
    assert len(found) == 1 and found[0].startswith("cloudflare.api_token: ") and reason in found[0], found


@pytest.mark.parametrize("token", ["fake-api-token", "Xy7-abc_Q", "0123456789abcdef0123456789abcdef01234",
                                   "KbYhgC3tB6yx9zZvA8w-o_-Tn7RK2mnR4fcIBb8Q"])
def test_plausible_tokens_are_accepted(token: str) -> None:
    assert parse_config(base(api_token=token), "c", {}).secrets() == (token,)


# --------------------------------------------------------------------------------------------------------
# Each real problem once, all at once
# --------------------------------------------------------------------------------------------------------


def test_unreadable_token_file_is_one_problem(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    assert problems({"cloudflare": {"api_token_file": missing}, "accounts": [ACC, ACC2]}) == [
        f"cloudflare.api_token_file: cannot read secret file {missing!r}: No such file or directory"]
    assert problems({"cloudflare": {"api_token": TOK}, "accounts": [{"id": ACC, "api_token_file": missing}]}) == [
        f"accounts[0].api_token_file: cannot read secret file {missing!r}: No such file or directory"]


def test_unset_environment_variable_for_the_token_is_one_problem() -> None:
    found = problems({"cloudflare": {"api_token": "${CLOUDFLARE_API_TOKEN}"}, "accounts": [ACC],
                      "discovery": {"enabled": True}})
    assert found == ["cloudflare.api_token: environment variable CLOUDFLARE_API_TOKEN is not set"]


def test_missing_credentials_are_one_problem_however_many_accounts() -> None:
    found = problems({"accounts": [ACC, {"id": ACC2, "name": "b"}, {"id": "3a5c7e9b1d2f4a6c8e0b2d4f6a8c0e1b",
                                                                    "api_token": TOK}]})
    assert found == ["accounts[0], accounts[1]: no credentials: set cloudflare.api_token (or api_token_file, or "
                     "api_email + api_key), the same per account, or CLOUDFLARE_API_TOKEN in the environment"]


def test_bad_type_is_reported_even_without_credentials() -> None:
    found = problems({"accounts": [{"id": ACC, "type": "everything"}]})
    assert sorted(found) == sorted([
        "accounts[0]: no credentials: set cloudflare.api_token (or api_token_file, or api_email + api_key), "
        "the same per account, or CLOUDFLARE_API_TOKEN in the environment",
        "accounts[0].type: must be one of auto, manual, all, got 'everything'"])


def test_all_problems_of_one_account_at_once(tmp_path: Path) -> None:
    found = problems({"cloudflare": {"api_token": TOK},
                      "accounts": [{"id": ACC, "api_token_file": str(tmp_path / "absent"), "type": "everything",
                                    "name": ["x"]}]})
    assert [p.split(":", 1)[0] for p in found] == ["accounts[0].api_token_file", "accounts[0].name",
                                                   "accounts[0].type"], found


def test_duplicate_names_are_refused() -> None:
    found = problems({"cloudflare": {"api_token": TOK},
                      "accounts": [{"id": ACC, "name": "production"}, {"id": ACC2, "name": "production"}]})
    assert found == ["accounts[1].name: 'production' is also the name of accounts[0]: the account label would "
                     "not tell them apart; give each account its own name"]
    # A name equal to another account's default name (its id) is just as ambiguous.
    found = problems({"cloudflare": {"api_token": TOK}, "accounts": [ACC, {"id": ACC2, "name": ACC}]})
    assert len(found) == 1 and found[0].startswith("accounts[1].name: "), found


def test_upper_case_account_id_is_normalised_with_a_warning() -> None:
    config = parse_config({"cloudflare": {"api_token": TOK}, "accounts": [ACC.upper(), ACC2]}, "c", {})
    assert [a.id for a in config.accounts] == [ACC, ACC2]
    assert config.accounts[0].name == ACC
    assert config.warnings == (f"accounts[0].id: upper-case letters changed to lower case ({ACC}), as "
                               "Cloudflare writes account ids and as the account_id label carries them",)
    assert parse_config(base(), "c", {}).warnings == ()
    # Upper and lower case of the same id are one account.
    found = problems({"cloudflare": {"api_token": TOK}, "accounts": [ACC, ACC.upper()]})
    assert found == [f"accounts[1].id: duplicate account {ACC} (also accounts[0])"]


# --------------------------------------------------------------------------------------------------------
# The process: a file that cannot be decoded never ends a running exporter
# --------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_sighup_with_a_broken_config_keeps_the_exporter_running(tmp_path: Path) -> None:
    config = {"cloudflare": {"base_url": f"http://127.0.0.1:{free_port()}/client/v4", "api_token": TOK,
                             "max_retries": 0, "timeout": "1s"}, "accounts": [ACC]}
    proc = ExporterProcess(config, (), None, tmp_path)
    try:
        proc.wait_listening()
        token_file = tmp_path / "token"
        token_file.write_bytes(b"\xff\xfe not a token")
        for broken in (b"cloudflare: {api_token: \xff}\n",
                       yaml.safe_dump({**config, "cloudflare": {"api_token_file": str(token_file)}}).encode(),
                       yaml.safe_dump({**config, "cloudflare": {"api_token_file": "/dev/zero"}}).encode(),
                       billion_laughs().encode()):
            proc.config_path.write_bytes(broken)
            before = proc.output().count("config reload failed")
            proc.signal(signal.SIGHUP)
            wait_for(lambda: proc.output().count("config reload failed") > before,  # noqa: B023
                     10, what="reload failed")
            assert proc.proc.poll() is None, proc.output()
            assert value(proc.metrics(), "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 0.0
        assert "Traceback" not in proc.output(), proc.output()
        assert str(token_file) in proc.output() and "/dev/zero" in proc.output()
    finally:
        proc.stop()


@pytest.mark.e2e
def test_config_check_refuses_endless_token_file_fast(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"cloudflare:\n  api_token_file: /dev/zero\naccounts: [{ACC}]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
                            cwd=REPO, capture_output=True, text=True, timeout=30, check=False, env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{path}: cloudflare.api_token_file: secret file '/dev/zero' is larger "
                                     "than 64 KiB, the limit for this file")
