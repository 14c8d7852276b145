#!/usr/bin/env python3
"""Check the built sdist and wheel for what a user or a licence scanner reads from them.

    scripts/check-dist.py DIST_DIR [--root DIR]

DIST_DIR must hold exactly one sdist and one wheel of the package, both of version `exporter.__version__`, each
carrying the repository's LICENSE unchanged (the sdist at its top, the wheel in `.dist-info/licenses/`) and
naming it in its metadata with the licence expression Apache-2.0. twine and check-wheel-contents check the
rest of the form; neither looks at the licence file's content or at the version.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path

from problems import package_version, report

ROOT = Path(__file__).resolve().parent.parent
NAME = "cloudflare-ai-gateway-exporter"
LICENSE_EXPRESSION = "Apache-2.0"


def metadata_problems(kind: str, raw: bytes, version: str) -> list[str]:
    meta: Message = BytesHeaderParser().parsebytes(raw)
    found = []
    if meta["Name"] != NAME:
        found.append(f"{kind}: metadata Name is {meta['Name']!r}, not {NAME!r}")
    if meta["Version"] != version:
        found.append(f"{kind}: metadata Version is {meta['Version']!r}, not exporter.__version__ {version!r}")
    if meta["License-Expression"] != LICENSE_EXPRESSION:
        found.append(f"{kind}: License-Expression is {meta['License-Expression']!r}, not {LICENSE_EXPRESSION!r}")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        found.append(f"{kind}: the metadata names no License-File LICENSE")
    return found


def sdist_problems(path: Path, version: str, license_text: bytes) -> list[str]:
    top = f"{NAME.replace('-', '_')}-{version}"
    with tarfile.open(path) as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes | None:
            member = members.get(f"{top}/{name}")
            handle = archive.extractfile(member) if member else None
            return handle.read() if handle else None

        found = []
        shipped = read("LICENSE")
        if shipped is None:
            found.append(f"sdist: no {top}/LICENSE")
        elif shipped != license_text:
            found.append("sdist: LICENSE differs from the repository's")
        pkg_info = read("PKG-INFO")
        if pkg_info is None:
            return [*found, f"sdist: no {top}/PKG-INFO"]
        return found + metadata_problems("sdist", pkg_info, version)


def wheel_problems(path: Path, version: str, license_text: bytes) -> list[str]:
    dist_info = f"{NAME.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        found = []
        if f"{dist_info}/licenses/LICENSE" not in names:
            found.append(f"wheel: no {dist_info}/licenses/LICENSE")
        elif archive.read(f"{dist_info}/licenses/LICENSE") != license_text:
            found.append("wheel: LICENSE differs from the repository's")
        if f"{dist_info}/METADATA" not in names:
            return [*found, f"wheel: no {dist_info}/METADATA"]
        return found + metadata_problems("wheel", archive.read(f"{dist_info}/METADATA"), version)


def problems(dist: Path, root: Path) -> list[str]:
    version = package_version(root)
    license_text = (root / "LICENSE").read_bytes()
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    others = sorted(p.name for p in dist.iterdir() if p not in (*sdists, *wheels))
    if len(sdists) != 1 or len(wheels) != 1 or others:
        return [f"{dist}: expected one sdist and one wheel, found {[p.name for p in (*sdists, *wheels)] + others}"]
    return sdist_problems(sdists[0], version, license_text) + wheel_problems(wheels[0], version, license_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dist", type=Path, help="the directory python -m build wrote to")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        found = problems(args.dist, args.root)
    except (OSError, ValueError, SyntaxError, tarfile.TarError, zipfile.BadZipFile) as err:
        found = [str(err)]
    success = f"{args.dist}: sdist and wheel of {package_version(args.root)} carry LICENSE ({LICENSE_EXPRESSION})"
    return report("check-dist", found, success)


if __name__ == "__main__":
    sys.exit(main())
