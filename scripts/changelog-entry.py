#!/usr/bin/env python3
"""Print one version's entry of CHANGELOG.md: the body of the GitHub release of that version.

    scripts/changelog-entry.py VERSION [--changelog PATH]

VERSION is as in the heading (`0.1.0`, or `Unreleased`), without the tag's `v`. The entry is what lies between
its `## [VERSION]` heading and the next `## ` heading or the link definitions at the end of the file. Each
paragraph and list item is printed on one line: GitHub shows a release body's line breaks as breaks, so the
file's wrapping at 120 characters would cut sentences in the middle. Exits 1 when the version has no entry or
an empty one: a release without notes is a mistake, not a default.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"
HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")
LINK_DEFINITION = re.compile(r"^\[[^\]]+\]: \S+")
# A line that starts a block of its own rather than continuing the line above it.
BLOCK_START = re.compile(r"^\s*(?:[-*+] |\d+[.)] |#|>|\||```|~~~)")


def entry(text: str, version: str) -> str:
    """The lines of `version`'s entry, unwrapped; ValueError when there is none."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if (m := HEADING.match(line)) and m["version"] == version]
    if not starts:
        raise ValueError(f"no '## [{version}]' heading")
    body: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("## ") or LINK_DEFINITION.match(line):
            break
        body.append(line)
    unwrapped = unwrap(body)
    while unwrapped and not unwrapped[0].strip():
        unwrapped.pop(0)
    while unwrapped and not unwrapped[-1].strip():
        unwrapped.pop()
    if not any(line.strip() and not line.startswith("#") for line in unwrapped):
        raise ValueError(f"the entry of {version} is empty")
    return "\n".join(unwrapped) + "\n"


def unwrap(lines: list[str]) -> list[str]:
    """Join each continuation line to the line above it; code blocks stay as they are."""
    out: list[str] = []
    fenced = False
    for line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append(line)
            continue
        continues = (
            not fenced
            and line.strip()
            and out
            and out[-1].strip()
            and not out[-1].lstrip().startswith(("#", "```", "~~~", "|"))
            and not BLOCK_START.match(line)
        )
        if continues:
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line.rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("version", help="the version as in its heading, e.g. 0.1.0 (no leading v)")
    parser.add_argument("--changelog", type=Path, default=CHANGELOG, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(entry(args.changelog.read_text(encoding="utf-8"), args.version))
    except (OSError, ValueError) as err:
        print(f"{args.changelog}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
