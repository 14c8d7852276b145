"""deploy/systemd/cloudflare-ai-gateway-exporter.service: valid for systemd, hardened, and true to the docs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

UNIT = REPO / "deploy" / "systemd" / "cloudflare-ai-gateway-exporter.service"
INSTALLED = "/opt/cloudflare-ai-gateway-exporter/bin/cloudflare-ai-gateway-exporter"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (Debian package systemd)")


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().replace("\\\n", " ").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's console script (verify checks it exists)."""
    script = Path(sys.executable).parent / "cloudflare-ai-gateway-exporter"
    assert script.exists(), script
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(script)))
    return copy


@pytest.mark.e2e
@needs_systemd
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(local_copy(tmp_path))], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    # verify exits 0 even for unknown keys and bad values: any message about the unit is a finding.
    findings = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and findings == [], done.stdout + done.stderr


@pytest.mark.e2e
@needs_systemd
def test_systemd_rates_the_unit_ok(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(local_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 1.5, done.stdout  # 0 is a fully locked-down unit, 10 an unprotected one


def test_the_unit_is_hardened_and_matches_the_docs() -> None:
    unit = directives()
    one = {key: values[-1] for key, values in unit.items()}
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
                       "AmbientCapabilities": "", "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
                       "LockPersonality": "yes", "SystemCallArchitectures": "native", "Type": "exec",
                       "ExecReload": "/bin/kill -HUP $MAINPID"}.items():
        assert one.get(key) == value, (key, one.get(key))
    assert set(one["RestrictAddressFamilies"].split()) <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert "@system-service" in unit["SystemCallFilter"]
    # The memory ceiling is the Kubernetes manifests' limit.
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "single" / "deployment.yaml").read_text())
    limit = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert one["MemoryMax"] == limit.removesuffix("Mi") + "M", (one["MemoryMax"], limit)
    # The runbook's and docs' commands name this unit; the docs' install path and token file are the unit's.
    docs = (REPO / "docs" / "systemd.md").read_text()
    assert "journalctl -u cloudflare-ai-gateway-exporter" in (REPO / "docs" / "runbook.md").read_text()
    assert INSTALLED in one["ExecStart"] and "/opt/cloudflare-ai-gateway-exporter" in docs
    credential, _, path = one["LoadCredential"].partition(":")
    assert path in docs and f"${{CREDENTIALS_DIRECTORY}}/{credential}" in docs
    assert "--config.file=/etc/cloudflare-ai-gateway-exporter/config.yaml" in one["ExecStart"]


@pytest.mark.e2e
def test_the_documented_config_reads_the_token_systemd_hands_over(tmp_path: Path) -> None:
    """The docs' config block, with $CREDENTIALS_DIRECTORY as systemd sets it: --config.check accepts it."""
    docs = (REPO / "docs" / "systemd.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", docs, re.S)
    assert block
    config = tmp_path / "config.yaml"
    config.write_text(block.group(1))
    credential = directives()["LoadCredential"][-1].partition(":")[0]
    (tmp_path / credential).write_text("cf-token-0123456789abcdef0123456789abcdef\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    done = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(config), "--config.check"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**env, "CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert "0123456789abcdef" not in done.stdout + done.stderr
