#!/usr/bin/env python3
"""Refuse to release a tag that does not match the code: run before anything is published.

    scripts/check-release-tag.py TAG [--root DIR]

TAG (e.g. `v0.1.0`, GitHub's GITHUB_REF_NAME) must be `v` + `exporter.__version__`, the one place the version is
kept, and CHANGELOG.md's newest released entry must be that version, with a date. Otherwise PyPI, the image's
labels and the release notes would each name another version, and PyPI never takes a version back.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from problems import package_version, report

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$", re.MULTILINE)


def newest_release(changelog: str) -> tuple[str, str | None]:
    """(version, date) of the first entry after Unreleased."""
    for match in HEADING.finditer(changelog):
        if match["version"] != "Unreleased":
            return match["version"], match["date"]
    raise ValueError("no released version")


def problems(tag: str, root: Path) -> list[str]:
    version = package_version(root)
    found = []
    if tag != f"v{version}":
        found.append(f"tag {tag!r} is not 'v' + exporter.__version__ ({version!r}): bump the version or fix the tag")
    try:
        newest, date = newest_release((root / "CHANGELOG.md").read_text(encoding="utf-8"))
    except ValueError as err:
        found.append(f"CHANGELOG.md: {err}")
    else:
        if newest != version:
            found.append(f"CHANGELOG.md's newest release is {newest}, not {version}: move Unreleased to [{version}]")
        elif date is None:
            found.append(f"CHANGELOG.md: '## [{version}]' has no date (## [{version}] - YYYY-MM-DD)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("tag", help="the pushed tag, e.g. v0.1.0")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        found = problems(args.tag, args.root)
    except (OSError, ValueError, SyntaxError) as err:
        found = [str(err)]
    return report("check-release-tag", found, f"{args.tag}: matches exporter.__version__ and CHANGELOG.md")


if __name__ == "__main__":
    sys.exit(main())
