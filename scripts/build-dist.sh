#!/usr/bin/env bash
# Build the sdist and the wheel into OUTDIR, check them, and run the wheel as a user would install it.
# .ci/run and .github/workflows/release.yml both call this one script, so what is published to PyPI was
# built and checked exactly as CI builds and checks it.
#
#   scripts/build-dist.sh OUTDIR
#
# OUTDIR must be empty or absent: a stale file there would be checked, or published, along with the new ones.
# PYTHON is the interpreter that has build, twine and check-wheel-contents (default: python3); the wheel is
# installed into a throwaway virtual environment made from it, never into PYTHON's own environment.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: scripts/build-dist.sh OUTDIR}"
python="${PYTHON:-python3}"

if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    echo "build-dist: $out is not empty; give an empty or new directory" >&2
    exit 1
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
version="$(cd "$root" && "$python" -c 'import exporter; print(exporter.__version__)')"

echo "== build $version: the sdist, then the wheel from the sdist (so the sdist is complete)"
"$python" -m build --outdir "$out" "$root"
echo "== twine check --strict"
"$python" -m twine check --strict "$out"/*
echo "== check-wheel-contents"
"$python" -m check_wheel_contents "$out"/*.whl
echo "== LICENSE, licence expression and version inside both"
"$python" "$root/scripts/check-dist.py" "$out" --root "$root"

echo "== the wheel in a clean virtual environment"
smoke="$(mktemp -d)"
trap 'rm -rf -- "$smoke"' EXIT
"$python" -m venv "$smoke/venv"
"$smoke/venv/bin/python" -m pip install -q --disable-pip-version-check "$out"/*.whl
exe="$smoke/venv/bin/cloudflare-ai-gateway-exporter"
# Outside the checkout, so that nothing can be imported from the source tree instead of the wheel.
cd "$smoke"
shown="$("$exe" --version)"
echo "$shown"
case "$shown" in
    "cloudflare-ai-gateway-exporter $version "*) ;;
    *) echo "build-dist: --version does not show $version" >&2; exit 1 ;;
esac
# --demo --once exits 0 when every poll but the demo's deliberately failing one succeeded.
"$exe" --demo --once --log.level error >"$smoke/demo.prom"
grep -Eq "^cloudflare_ai_gateway_exporter_build_info\{(.*,)?version=\"$version\"" "$smoke/demo.prom" || {
    echo "build-dist: --demo --once serves no build_info of version $version" >&2
    exit 1
}
echo "--demo --once: exit 0, $(grep -c '^cloudflare_ai_gateway_' "$smoke/demo.prom") samples, build_info version $version"
ls -l "$out"
