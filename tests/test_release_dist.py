"""scripts/check-dist.py, the licence and version check of the built sdist and wheel, on archives made here: the
real build needs PyPI for its isolated build environment, so .ci/run runs it (scripts/build-dist.sh), not pytest."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

VERSION = "1.2.0"
TOP = f"cloudflare_ai_gateway_exporter-{VERSION}"
LICENSE = (REPO / "LICENSE").read_bytes()


def metadata(version: str = VERSION, expression: str | None = "Apache-2.0", license_file: bool = True) -> bytes:
    lines = ["Metadata-Version: 2.4", "Name: cloudflare-ai-gateway-exporter", f"Version: {version}"]
    if expression:
        lines.append(f"License-Expression: {expression}")
    else:
        lines.append("License: Apache-2.0")
    if license_file:
        lines.append("License-File: LICENSE")
    return ("\n".join(lines) + "\n\nREADME text\n").encode()


def make_sdist(dist: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(dist / f"{TOP}.tar.gz", "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def make_wheel(dist: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(dist / f"{TOP}-py3-none-any.whl", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


GOOD_SDIST = {"LICENSE": LICENSE, "PKG-INFO": metadata(), "exporter/__init__.py": b""}
GOOD_WHEEL = {
    f"{TOP}.dist-info/licenses/LICENSE": LICENSE,
    f"{TOP}.dist-info/METADATA": metadata(),
    "exporter/__init__.py": b"",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout whose exporter.__version__ is VERSION."""
    root = tmp_path / "repo"
    (root / "exporter").mkdir(parents=True)
    (root / "exporter" / "__init__.py").write_text(f'__version__ = "{VERSION}"\n')
    (root / "LICENSE").write_bytes(LICENSE)
    return root


def check(dist: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check-dist.py"), str(dist), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dist_with(tmp_path: Path, sdist: dict[str, bytes], wheel: dict[str, bytes]) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    make_sdist(dist, sdist)
    make_wheel(dist, wheel)
    return dist


@pytest.mark.e2e
def test_good_distributions_pass(tmp_path: Path, root: Path) -> None:
    done = check(dist_with(tmp_path, GOOD_SDIST, GOOD_WHEEL), root)
    assert done.returncode == 0, done.stderr
    assert "carry LICENSE (Apache-2.0)" in done.stdout


@pytest.mark.parametrize(
    ("sdist", "wheel", "problem"),
    [
        (
            {k: v for k, v in GOOD_SDIST.items() if k != "LICENSE"},
            GOOD_WHEEL,
            f"sdist: no {TOP}/LICENSE",
        ),
        (
            GOOD_SDIST,
            {k: v for k, v in GOOD_WHEEL.items() if not k.endswith("licenses/LICENSE")},
            f"wheel: no {TOP}.dist-info/licenses/LICENSE",
        ),
        ({**GOOD_SDIST, "LICENSE": LICENSE[:-200]}, GOOD_WHEEL, "sdist: LICENSE differs from the repository's"),
        (
            GOOD_SDIST,
            {**GOOD_WHEEL, f"{TOP}.dist-info/licenses/LICENSE": b"MIT License\n"},
            "wheel: LICENSE differs from the repository's",
        ),
        (
            GOOD_SDIST,
            {**GOOD_WHEEL, f"{TOP}.dist-info/METADATA": metadata(expression=None)},
            "wheel: License-Expression is None, not 'Apache-2.0'",
        ),
        (
            {**GOOD_SDIST, "PKG-INFO": metadata(license_file=False)},
            GOOD_WHEEL,
            "sdist: the metadata names no License-File LICENSE",
        ),
        (
            GOOD_SDIST,
            {**GOOD_WHEEL, f"{TOP}.dist-info/METADATA": metadata(version="1.1.0")},
            "wheel: metadata Version is '1.1.0', not exporter.__version__ '1.2.0'",
        ),
    ],
)
@pytest.mark.e2e
def test_a_missing_or_wrong_licence_or_version_fails(
    tmp_path: Path, root: Path, sdist: dict[str, bytes], wheel: dict[str, bytes], problem: str
) -> None:
    done = check(dist_with(tmp_path, sdist, wheel), root)
    assert done.returncode == 1
    assert problem in done.stderr, done.stderr


@pytest.mark.e2e
def test_a_stale_file_beside_the_new_ones_fails(tmp_path: Path, root: Path) -> None:
    dist = dist_with(tmp_path, GOOD_SDIST, GOOD_WHEEL)
    (dist / "cloudflare_ai_gateway_exporter-1.1.0-py3-none-any.whl").write_bytes(b"")
    done = check(dist, root)
    assert done.returncode == 1
    assert "expected one sdist and one wheel" in done.stderr


@pytest.mark.e2e
def test_build_dist_refuses_a_directory_with_files_in_it(tmp_path: Path) -> None:
    """Nothing is built into a directory holding an older build: a release would upload both."""
    (tmp_path / "old.whl").write_bytes(b"")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-dist.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "is not empty" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["old.whl"]
