"""The version a user sees, in every place they see it, is exporter.__version__: `--version`, the build_info
metric, the distribution's metadata (pyproject.toml reads it dynamically; scripts/check-dist.py checks the built
files) and the image's label (tests/test_container.py; the Dockerfile refuses another VERSION)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

import exporter
from tests.support import REPO


def run_exporter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.e2e
def test_version_flag_shows_the_package_version() -> None:
    done = run_exporter("--version")
    assert done.returncode == 0, done.stderr
    python = platform.python_version()
    assert done.stdout == f"cloudflare-ai-gateway-exporter {exporter.__version__} (Python {python})\n"


@pytest.mark.e2e
def test_build_info_metric_carries_the_package_version() -> None:
    done = run_exporter("--demo", "--once", "--log.level", "error")
    assert done.returncode == 0, done.stderr
    (family,) = [f for f in text_string_to_metric_families(done.stdout) if f.name.endswith("_exporter_build_info")]
    (sample,) = family.samples
    assert sample.labels == {"version": exporter.__version__, "python_version": platform.python_version()}
    assert sample.value == 1
