"""What the release check scripts share: the version the code declares, and reporting the problems found."""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def package_version(root: Path) -> str:
    """`__version__` of exporter/__init__.py, read without importing the package (nor its dependencies)."""
    for node in ast.parse((root / "exporter" / "__init__.py").read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ValueError("exporter/__init__.py assigns no string to __version__")


def report(tool: str, found: list[str], success: str) -> int:
    """Each problem on stderr, prefixed with the tool's name, or ``success`` on stdout when there is none;
    the exit status: 1 for problems, else 0."""
    for problem in found:
        print(f"{tool}: {problem}", file=sys.stderr)
    if not found:
        print(success)
    return 1 if found else 0
