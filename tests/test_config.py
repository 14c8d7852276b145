"""Config loading: what a user writes, what the exporter makes of it, and how it refuses bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.config.load import load_config, parse_config
from exporter.config.model import ConfigError
from exporter.config.secrets import CREDENTIAL_KEYS
from exporter.config.values import parse_duration
from exporter.config.walker import Walker
from tests.support import REPO

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
ACC2 = "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40"
TOK = "test-token-0123"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(raw: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "config.yaml", environ or {})
    return err.value.problems


def test_example_config_is_valid_and_documents_every_key() -> None:
    config = load_config(REPO / "config.example.yaml", {"CLOUDFLARE_API_TOKEN": "t0ken-value"})
    assert config.accounts and config.cloudflare.credentials is not None
    text = (REPO / "config.example.yaml").read_text()
    for key in ("base_url", "api_token", "api_token_file", "api_email", "api_key_file", "timeout",
                "requests_per_second", "max_retries", "per_page", "max_pages", "interval", "max_concurrency",
                "discovery", "include", "exclude", "amount_divisor", "invoice_series", "invoice_pdf_url",
                "sharding", "shard", "total_shards"):
        assert key in text, f"config.example.yaml does not mention {key}"


def test_defaults_and_env_expansion() -> None:
    raw = {"cloudflare": {"api_token": "${TOKEN}", "timeout": "${TIMEOUT:-15s}"},
           "poll": {"interval": "1h30m"}, "accounts": [{"id": ACC.upper(), "name": "prod"}]}
    config = parse_config(raw, "c", {"TOKEN": "abc123-token"})
    assert config.cloudflare.timeout == 15
    assert config.poll.interval == 5400
    assert config.accounts[0].id == ACC  # normalised to lowercase
    assert config.accounts[0].credentials.headers() == {"Authorization": "Bearer abc123-token"}
    assert config.cloudflare.requests_per_second == 3
    assert config.metrics.amount_divisor == 100 and config.metrics.invoice_series == "unpaid"


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), (45, 45), ("2.5", 2.5),
                                                ("500ms", 0.5), ("1m30s", 90)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_credentials_from_files_strip_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    (tmp_path / "key").write_text("global-key\r\n")
    raw = {"cloudflare": {"api_token_file": str(tmp_path / "token")},
           "accounts": [ACC, {"id": ACC2, "api_email": "a@example.com", "api_key_file": str(tmp_path / "key")}]}
    config = parse_config(raw, "c", {})
    assert config.accounts[0].credentials.api_token == "file-token"
    assert config.accounts[1].credentials.headers() == {"X-Auth-Email": "a@example.com", "X-Auth-Key": "global-key"}


def test_credentials_from_environment_when_the_file_sets_none() -> None:
    config = parse_config({"accounts": [ACC]}, "c", {"CLOUDFLARE_API_TOKEN": "env-token"})
    assert config.accounts[0].credentials.api_token == "env-token"
    config = parse_config({"accounts": [ACC]}, "c",
                          {"CLOUDFLARE_API_KEY": "key-0123456789", "CLOUDFLARE_EMAIL": "e@x.io"})
    assert config.accounts[0].credentials.headers()["X-Auth-Key"] == "key-0123456789"


@pytest.mark.parametrize(("raw", "expected"), [
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK, "tokn": 1}}, "cloudflare.tokn: unknown key"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK}, "pol": {}}, "pol: unknown key"),
    ({"accounts": ["abc"], "cloudflare": {"api_token": TOK}}, "accounts[0].id: 'abc' is not an account id"),
    ({"accounts": [ACC, ACC], "cloudflare": {"api_token": TOK}}, "accounts[1].id: duplicate account"),
    ({"accounts": [ACC]}, "accounts[0]: no credentials"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK, "timeout": "soon"}},
     "cloudflare.timeout: expected a duration"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK, "requests_per_second": 0}},
     "cloudflare.requests_per_second: must be at least 0.01, got 0"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK, "max_retries": "many"}},
     "cloudflare.max_retries: expected an integer"),
    ({"accounts": [{"id": ACC, "type": "monthly"}], "cloudflare": {"api_token": TOK}},
     "accounts[0].type: must be one of auto, manual, all"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK}, "metrics": {"invoice_series": "some"}},
     "metrics.invoice_series: must be one of unpaid, all, none"),
    ({"accounts": [ACC], "cloudflare": {"api_token": "${MISSING}"}}, "environment variable MISSING is not set"),
    ({"accounts": [ACC], "cloudflare": {"api_email": "a@b.c"}}, "api_key (or api_key_file) is missing"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK, "api_key": "key-0123456789", "api_email": "e@example.com"}},
     "not both"),
    ({"cloudflare": {"api_token": TOK}}, "nothing to poll"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK}, "discovery": {"include": ["("]}},
     "is not a valid regular expression"),
    ({"accounts": [ACC], "cloudflare": {"api_token": TOK}, "sharding": {"shard": 2, "total_shards": 2}},
     "sharding.shard: must be below total_shards"),
    ({"accounts": [{"id": 12345}], "cloudflare": {"api_token": TOK}}, "(quote it)"),
    ({"accounts": {"id": ACC}, "cloudflare": {"api_token": TOK}}, "accounts: expected a list"),
])
def test_bad_configs_name_the_key_and_the_problem(raw: object, expected: str) -> None:
    assert any(expected in p for p in problems(raw)), problems(raw)


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"accounts": ["nope", ACC], "cloudflare": {"api_token": TOK, "timeout": -1, "extra": 1}})
    assert len(found) == 3


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    found = problems({"accounts": [ACC], "cloudflare": {"api_token_file": str(missing)}})
    assert any("cloudflare.api_token_file" in p and str(missing) in p for p in found), found


def test_secrets_stay_out_of_repr() -> None:
    config = parse_config({"accounts": [ACC], "cloudflare": {"api_token": "sekrit-token-value"}}, "c", {})
    assert "sekrit" not in repr(config)
    assert config.secrets() == ("sekrit-token-value",)


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


@pytest.mark.e2e
def test_config_check_accepts_a_good_config(tmp_path: Path) -> None:
    path = write(tmp_path, f"cloudflare:\n  api_token: abc-token-1\naccounts:\n  - id: {ACC}\n")
    result = run_cli("--config.file", str(path), "--config.check")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize(("text", "expected"), [
    ("accounts: [\n", "invalid YAML at line"),
    (f"cloudflare:\n  api_token: abc-token-1\naccounts:\n  - id: {ACC}\n    nmae: x\n",
     "accounts[0].nmae: unknown key"),
    (f"accounts:\n  - id: {ACC}\n", "no credentials"),
    ("cloudflare:\n  api_token: abc-token-1\naccounts:\n  - id: 023e105f\n", "is not an account id"),
])
def test_bad_config_exits_1_with_a_message_and_no_traceback(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    for args in (("--config.check",), ()):
        result = run_cli("--config.file", str(path), *args)
        assert result.returncode == 1
        assert expected in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run_cli("--config.file", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "absent.yaml: cannot read config file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_bad_listen_address_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, f"cloudflare:\n  api_token: abc-token-1\naccounts:\n  - id: {ACC}\n")
    result = run_cli("--config.file", str(path), "--web.listen-address", "nonsense")
    assert result.returncode == 1 and "--web.listen-address" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_version_flag() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and "cloudflare-ai-gateway-exporter" in result.stdout



def test_example_config_shows_every_key_the_loader_accepts_under_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key the loader allows (asked of the loader itself, not a list kept here) appears in
    config.example.yaml, set or in a comment, in the block of its own section."""
    allowed: dict[str, tuple[str, ...]] = {}
    section = Walker.section

    def record(self: Any, doc: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
        allowed[re.sub(r"\[\d+\]", "", path)] = keys
        return section(self, doc, path, keys)

    monkeypatch.setattr(Walker, "section", record)
    load_config(REPO / "config.example.yaml", {"CLOUDFLARE_API_TOKEN": "t0ken-value"})
    assert {"", "cloudflare", "collectors.credit_balance", "accounts"} <= set(allowed)
    lines = (REPO / "config.example.yaml").read_text().splitlines()

    def shown(path: str, key: str) -> bool:
        """``key:`` (maybe commented out) in the block of the section named by ``path``."""
        start, depth = 0, 0
        for parent in filter(None, path.split(".")):
            header = re.compile(rf"^{' ' * 2 * depth}{parent}:")
            start = next((i + 1 for i, line in enumerate(lines[start:], start) if header.match(line)), -1)
            if start < 0:
                return False
            depth += 1
        item = re.compile(rf"(^|[\s#]){key}:")
        for line in lines[start:]:
            if line.strip() and not line.lstrip().startswith("#") and len(line) - len(line.lstrip()) < 2 * depth:
                return False  # the section's block ended
            if item.search(line):
                return True
        return False

    def where(path: str, key: str) -> str:  # an account's credential keys are "the same keys" as cloudflare's
        return "cloudflare" if path == "accounts" and key in CREDENTIAL_KEYS else path

    missing = [f"{path}.{key}".lstrip(".") for path, keys in allowed.items() for key in keys
               if not shown(where(path, key), key)]
    assert not missing, f"config.example.yaml does not show {missing}"
