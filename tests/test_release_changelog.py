"""CHANGELOG.md against the code, and the two scripts the release workflow runs on it: the tag check before anything
is published, and the release notes (scripts/changelog-entry.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import exporter
from exporter.cli import build_parser
from tests.support import REPO

CHANGELOG = REPO / "CHANGELOG.md"
HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$", re.MULTILINE)
SECTION = re.compile(r"^### (.+)$", re.MULTILINE)
# Keep a Changelog 1.1.0's kinds of change, in its order.
KINDS = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
REPO_URL = "https://github.com/cloudflare-ai-gateway-exporter/cloudflare-ai-gateway-exporter"


def changelog() -> str:
    return CHANGELOG.read_text(encoding="utf-8")


def entries(text: str) -> list[tuple[str, str | None, str]]:
    """(version, date, body) of every `## [...]` entry, newest first."""
    found = list(HEADING.finditer(text))
    out = []
    for match, following in zip(found, [*found[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end() : end]
        out.append((match["version"], match["date"], body.split("\n[", 1)[0] if following is None else body))
    return out


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=60, check=False
    )


def readme_metric_names() -> set[str]:
    """The names in the first column of the README's metric tables."""
    names = set(re.findall(r"^\| `(cloudflare_ai_gateway_[a-z0-9_]+)` \|", (REPO / "README.md").read_text(), re.M))
    assert len(names) > 30, "the README's metric tables were not found"
    return names


# ---- the changelog against the code


def test_newest_release_is_the_package_version() -> None:
    released = [(v, d) for v, d, _ in entries(changelog()) if v != "Unreleased"]
    assert released, "no released version in CHANGELOG.md"
    assert released[0][0] == exporter.__version__, (
        f"exporter.__version__ is {exporter.__version__} but CHANGELOG.md's newest release is {released[0][0]}"
    )


def test_every_readme_metric_is_named_in_the_changelog() -> None:
    text = changelog()
    missing = sorted(n for n in readme_metric_names() if not re.search(rf"`{n}`", text))
    assert not missing, f"metrics of the README without a CHANGELOG.md line: {missing}"


def test_every_flag_is_named_in_the_changelog() -> None:
    text = changelog()
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert "--version" in flags
    missing = sorted(f for f in flags if f"`{f}`" not in text)
    assert not missing, f"flags without a CHANGELOG.md line: {missing}"


# ---- the changelog's form (Keep a Changelog 1.1.0)


def test_unreleased_comes_first_with_its_sections_ready() -> None:
    found = entries(changelog())
    assert found[0][0] == "Unreleased"
    assert found[0][1] is None
    kinds = SECTION.findall(found[0][2])
    assert {"Added", "Changed", "Fixed"} <= set(kinds), kinds


def test_releases_are_dated_newest_first_with_known_kinds_of_change() -> None:
    released = [e for e in entries(changelog()) if e[0] != "Unreleased"]
    versions, dates = [], []
    for version, date, body in released:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{version}: not MAJOR.MINOR.PATCH"
        assert date is not None, f"{version} has no date"
        kinds = SECTION.findall(body)
        assert kinds, f"{version} has no Added/Changed/Fixed section"
        assert set(kinds) <= set(KINDS), f"{version}: {kinds}"
        assert kinds == sorted(kinds, key=KINDS.index), f"{version}: sections out of order: {kinds}"
        versions.append(tuple(int(p) for p in version.split(".")))
        dates.append(date)
    assert versions == sorted(versions, reverse=True)
    assert dates == sorted(dates, reverse=True)


def test_every_entry_has_its_link() -> None:
    text = changelog()
    versions = [v for v, _, _ in entries(text)]
    released = [v for v in versions if v != "Unreleased"]
    assert f"[Unreleased]: {REPO_URL}/compare/v{released[0]}...HEAD" in text.splitlines()
    for older, newer in zip(released[1:], released, strict=False):
        assert f"[{newer}]: {REPO_URL}/compare/v{older}...v{newer}" in text.splitlines()
    assert f"[{released[-1]}]: {REPO_URL}/releases/tag/v{released[-1]}" in text.splitlines()


# ---- scripts/changelog-entry.py: the GitHub release's body


@pytest.mark.e2e
def test_entry_of_the_current_version_is_its_section_unwrapped() -> None:
    done = run_script("changelog-entry.py", exporter.__version__)
    assert done.returncode == 0, done.stderr
    notes = done.stdout
    assert notes.strip() and not notes.startswith("\n")
    assert "### Added" in notes
    assert "`cloudflare_ai_gateway_exporter_build_info`" in notes
    assert "## [" not in notes, "the heading or the next entry leaked into the notes"
    assert "compare/" not in notes and "releases/tag" not in notes, "link definitions leaked into the notes"
    # One line per list item: the file's wrapping would show as line breaks on GitHub.
    for line in notes.splitlines():
        assert not line.startswith("  ") or line.lstrip().startswith("- "), repr(line)


@pytest.mark.e2e
def test_entry_unwraps_paragraphs_and_items_but_not_code(tmp_path: Path) -> None:
    source = tmp_path / "CHANGELOG.md"
    source.write_text(
        "# Changelog\n\n## [Unreleased]\n\n### Added\n\n"
        "## [1.2.0] - 2027-01-02\n\nA paragraph\nwrapped here.\n\n### Added\n\n"
        "- an item\n  wrapped,\n  - a nested item\n    wrapped\n- `--flag` second\n\n"
        "```sh\nkeep\n  as is\n```\n\n### Fixed\n\n1. numbered\n   wrapped\n\n"
        "## [1.1.0] - 2026-12-01\n\n### Added\n\n- older\n\n"
        "[Unreleased]: https://example.invalid/compare/v1.2.0...HEAD\n"
    )
    done = run_script("changelog-entry.py", "1.2.0", "--changelog", str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "A paragraph wrapped here.\n\n### Added\n\n"
        "- an item wrapped,\n  - a nested item wrapped\n- `--flag` second\n\n"
        "```sh\nkeep\n  as is\n```\n\n### Fixed\n\n1. numbered wrapped\n"
    )
    oldest = run_script("changelog-entry.py", "1.1.0", "--changelog", str(source))
    assert oldest.stdout == "### Added\n\n- older\n", "the link definitions belong to no entry"


@pytest.mark.e2e
@pytest.mark.parametrize("version", ["9.9.9", "v0.1.0", "0.1"])
def test_entry_of_a_version_without_one_fails(version: str) -> None:
    done = run_script("changelog-entry.py", version)
    assert done.returncode == 1
    assert f"no '## [{version}]' heading" in done.stderr
    assert done.stdout == ""


@pytest.mark.e2e
def test_an_empty_entry_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "CHANGELOG.md"
    source.write_text("## [Unreleased]\n\n### Added\n\n### Fixed\n\n## [1.0.0] - 2026-01-01\n\n- x\n")
    done = run_script("changelog-entry.py", "Unreleased", "--changelog", str(source))
    assert done.returncode == 1
    assert "empty" in done.stderr


# ---- scripts/check-release-tag.py: nothing is published for a tag that does not match


def fake_repo(tmp_path: Path, version: str, changelog_text: str) -> Path:
    (tmp_path / "exporter").mkdir()
    (tmp_path / "exporter" / "__init__.py").write_text(f'"""x"""\n\n__version__ = "{version}"\n')
    (tmp_path / "CHANGELOG.md").write_text(changelog_text)
    return tmp_path


RELEASED_1_2_0 = "## [Unreleased]\n\n### Added\n\n## [1.2.0] - 2027-01-02\n\n### Added\n\n- x\n"


@pytest.mark.e2e
def test_tag_check_passes_for_this_checkout() -> None:
    done = run_script("check-release-tag.py", f"v{exporter.__version__}")
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_tag_check_passes_when_tag_version_and_changelog_agree(tmp_path: Path) -> None:
    root = fake_repo(tmp_path, "1.2.0", RELEASED_1_2_0)
    done = run_script("check-release-tag.py", "v1.2.0", "--root", str(root))
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("tag", "version", "text", "problem"),
    [
        ("v1.2.1", "1.2.0", RELEASED_1_2_0, "tag 'v1.2.1' is not 'v' + exporter.__version__ ('1.2.0')"),
        ("1.2.0", "1.2.0", RELEASED_1_2_0, "tag '1.2.0' is not 'v' + exporter.__version__"),
        ("v1.3.0", "1.3.0", RELEASED_1_2_0, "newest release is 1.2.0, not 1.3.0"),
        ("v1.2.0", "1.2.0", RELEASED_1_2_0.replace(" - 2027-01-02", ""), "'## [1.2.0]' has no date"),
        ("v1.2.0", "1.2.0", "## [Unreleased]\n\n- x\n", "no released version"),
    ],
)
def test_tag_check_refuses_a_mismatch(tmp_path: Path, tag: str, version: str, text: str, problem: str) -> None:
    root = fake_repo(tmp_path, version, text)
    done = run_script("check-release-tag.py", tag, "--root", str(root))
    assert done.returncode == 1
    assert problem in done.stderr, done.stderr
