"""Shared fixtures: a fake Cloudflare API on loopback and the real exporter process."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import blocks
from tests.fakeapi import FakeCloudflareAPI, demo_api
from tests.support import ExporterProcess, start_exporter

TOKEN = "fake-api-token"
_RUNNING: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _RUNNING[:] = [item]


def pytest_configure(config: pytest.Config) -> None:
    """A test that starts a program (the exporter, promtool, podman ...) must carry the e2e or container mark, so
    that ``pytest -m "not e2e and not container"`` stays the fast loop."""
    start = subprocess.Popen.__init__

    def checked(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        test = _RUNNING[0] if _RUNNING else None
        if test is not None and not any(test.get_closest_marker(m) for m in ("e2e", "container")):
            raise AssertionError(f"{test.nodeid} starts a program ({str(args[0])[:80]}): mark it e2e")
        start(self, *args, **kwargs)

    subprocess.Popen.__init__ = checked  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """cli.main() installs a handler on the captured stderr of the test that calls it; later tests must not log
    into that closed stream ("--- Logging error ---" on stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fake_api() -> Iterator[FakeCloudflareAPI]:
    """A started, empty fake that accepts the bearer token TOKEN."""
    with FakeCloudflareAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def demo_fake() -> Iterator[FakeCloudflareAPI]:
    """A started fake with the --demo sample accounts."""
    with demo_api() as api:
        yield api


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """Start real exporter processes; every one is stopped at the end of the test."""
    started: list[ExporterProcess] = []

    def start(config: dict[str, Any] | None, *args: str, **kwargs: Any) -> ExporterProcess:
        workdir = tmp_path / f"exporter{len(started)}"
        workdir.mkdir()
        proc = start_exporter(config, *args, workdir=workdir, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def compressions(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every piece of plain text compressed from now on (``exporter.blocks.deflate_segment``), in order."""
    compressed: list[bytes] = []
    original = blocks.deflate_segment

    def counting(data: bytes | memoryview) -> bytes:
        compressed.append(bytes(data))
        return original(data)

    monkeypatch.setattr(blocks, "deflate_segment", counting)
    return compressed


def require_binary(name: str) -> str:
    """Path of a program the test needs; skipped where it is missing, but a failure in CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (.ci/run should have installed it)")
        pytest.skip(f"{name} is not installed")
    return path
