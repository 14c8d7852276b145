"""What an operator reads: the lifecycle flag, where a listen or connection failure happened, config warnings
at start, after a reload and in --config.check, the demo's designed failure, accounts sharing a name."""

from __future__ import annotations

import dataclasses
import io
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exporter.app import ExporterApp
from exporter.config.model import AccountConfig, Credentials, DiscoveryConfig
from exporter.demo import demo_config, demo_transport
from exporter.samples import DEMO_TOKEN
from tests.conftest import TOKEN
from tests.fakeapi import FakeCloudflareAPI, invoice
from tests.support import REPO, ExporterProcess, wait_for

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
UPPER = ACC.upper()


def config_for(api: FakeCloudflareAPI, account_id: str = ACC) -> dict[str, object]:
    return {"cloudflare": {"base_url": api.base_url, "api_token": TOKEN}, "poll": {"interval": "1m"},
            "accounts": [{"id": account_id, "name": "production"}]}


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.e2e
def test_http_reload_is_off_without_the_lifecycle_flag_and_sighup_always_reloads(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    fake_api.add_account(ACC, "production", [invoice(id="in_1", amount_due=100, created=1700000000)])
    exporter = exporter_factory(config_for(fake_api))
    answer = httpx.post(exporter.url + "/-/reload", timeout=10)
    assert answer.status_code == 403 and "--web.enable-lifecycle" in answer.text
    assert "config reloaded" not in exporter.output()
    exporter.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in exporter.output(), 10, what="SIGHUP reload")
    assert exporter.proc.poll() is None
    with_flag = exporter_factory(config_for(fake_api), "--web.enable-lifecycle")
    assert httpx.post(with_flag.url + "/-/reload", timeout=10).status_code == 200


@pytest.mark.e2e
def test_config_warnings_are_logged_at_start_and_after_each_reload(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    fake_api.add_account(ACC, "production", [invoice(id="in_1", amount_due=100, created=1700000000)])
    exporter = exporter_factory(config_for(fake_api, UPPER))

    def warned() -> int:
        return sum("level=warn" in line and "config warning" in line and "upper-case" in line
                   for line in exporter.output().splitlines())

    assert warned() == 1
    exporter.signal(signal.SIGHUP)
    wait_for(lambda: warned() == 2, 10, what="the warning again after the reload")


@pytest.mark.e2e
def test_config_check_prints_every_warning_and_exits_0(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_for(fake_api, UPPER)))
    done = cli("--config.file", str(path), "--config.check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{path}: warning: accounts[0].id: upper-case")
    assert lines[-1] == f"{path}: OK (1 account, discovery off)"


@pytest.mark.e2e
def test_a_listen_address_in_use_is_named(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_for(fake_api)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"--web.listen-address: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_demo_once_says_the_legacy_failure_is_by_design_and_exits_0() -> None:
    done = cli("--demo", "--once")
    assert done.returncode == 0, done.stderr
    assert "this account fails by design" in done.stderr and "revoked token" in done.stderr
    assert 'cloudflare_ai_gateway_poll_success{account="legacy"' in done.stdout


def test_demo_once_exits_1_when_an_account_fails_not_by_design() -> None:
    config = demo_config()
    broken = dataclasses.replace(config.accounts[0], credentials=Credentials(api_token="x-revoked-" + "1" * 30))
    app = ExporterApp(dataclasses.replace(config, accounts=(broken, *config.accounts[1:])),
                      transport=demo_transport())
    designed = {a.id: "by design" for a in config.accounts if a.name == "legacy"}
    assert app.run_once(io.BytesIO(), designed) == 1


def test_a_discovered_account_named_like_a_configured_one_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    config = demo_config()
    other = AccountConfig("ab" * 16, "production", "all", Credentials(api_token=DEMO_TOKEN))
    config = dataclasses.replace(config, accounts=(other,), discovery=DiscoveryConfig(enabled=True))
    caplog.set_level(logging.WARNING, "exporter.poller")
    ExporterApp(config, transport=demo_transport()).run_once(io.BytesIO())
    [record] = [r for r in caplog.records if r.getMessage().startswith("accounts share a name")]
    assert record.account == "production"  # type: ignore[attr-defined]
    assert "ab" * 16 in record.account_ids  # type: ignore[attr-defined]


