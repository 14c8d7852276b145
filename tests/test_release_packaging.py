"""The package's licence and metadata as a stranger installing it from PyPI sees them."""

from __future__ import annotations

import hashlib
import re
import tomllib

import yaml

import exporter
from tests.support import REPO

# SHA-256 of the Apache License 2.0 text as the ASF publishes it (LICENSE-2.0.txt, appendix included), byte for
# byte: the same file as Debian's /usr/share/common-licenses/Apache-2.0. An edited or truncated copy is not the
# licence the metadata names.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_standard_apache_2_0_text() -> None:
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256


def test_metadata_names_the_license_by_spdx_expression_and_ships_the_file() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    # PEP 639: an SPDX expression (not the legacy {text = ...} table) and the file shipped in the dist-info.
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")], (
        "PEP 639 forbids licence classifiers beside a licence expression"
    )


def test_build_backend_understands_license_expressions() -> None:
    # setuptools reads `license = "..."` and `license-files` from version 77 on; older ones refuse the string.
    requires = pyproject()["build-system"]
    assert isinstance(requires, dict)
    assert "setuptools>=77" in requires["requires"]


def test_version_is_read_from_the_package_only() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    tool = pyproject()["tool"]
    assert isinstance(tool, dict)
    assert tool["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}


def test_the_release_tools_are_an_extra_of_their_own() -> None:
    """.ci/run builds and checks the distributions and validates the workflows with these, from .venv-release;
    not from .venv, whose exporter would import rich and click through httpx when they are installed."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    extras = project["optional-dependencies"]

    def names(extra: str) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extras[extra]}

    release_tools = {"build", "twine", "check-wheel-contents", "check-jsonschema"}
    assert release_tools <= names("release") and not release_tools & names("test")


def test_one_repository_url_everywhere() -> None:
    """The image's source label, PyPI's Source link and the changelog's links name the repository the alert rules'
    runbook links point at."""
    rules = yaml.safe_load((REPO / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    base_urls = [
        rule["labels"]["base_url"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "base_url" in rule.get("labels", {})
    ]
    assert len(base_urls) == 1
    repo_url = base_urls[0].split("/blob/", 1)[0]
    assert repo_url.startswith("https://github.com/")

    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert f'org.opencontainers.image.source="{repo_url}"' in dockerfile
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["urls"]["Source"] == repo_url
    assert project["urls"]["Changelog"] == f"{repo_url}/blob/main/CHANGELOG.md"
    links = re.findall(r"^\[[^\]]+\]: (\S+)$", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert links
    assert all(link.startswith(f"{repo_url}/") for link in links), links


def test_dockerfile_takes_the_version_from_the_build_not_a_literal() -> None:
    """The image's version label is the VERSION build argument, which the build checks against
    exporter.__version__ (tests/test_container.py builds it with a wrong one)."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    assert 'org.opencontainers.image.revision="${REVISION}"' in dockerfile
    assert 'org.opencontainers.image.created="${CREATED}"' in dockerfile
    assert exporter.__version__ not in dockerfile, "a version written here goes stale at the next release"
