#!/usr/bin/env bash
# The whole test suite inside a real ComfyUI: pure, host and browser tests, and the js/ tests.
#
#   COMFYUI_PATH=/path/to/ComfyUI PYTHON=/path/to/ComfyUI/venv/bin/python bash tools/host_tests.sh [pytest args]
#
# PYTHON is ComfyUI's own python (default: python3 on PATH, i.e. an activated ComfyUI venv).
# Installs requirements-test.txt into it with torch, torchvision and torchaudio pinned to the
# versions already there: it never installs, upgrades or removes torch. Arguments after the
# options (optionally after --) go to pytest, e.g. `bash tools/host_tests.sh -q tests/host/test_harness.py`;
# the js/ tests run only when no pytest arguments are given. Exits non-zero on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
[ "${1:-}" = "--" ] && shift

die() { echo "host_tests.sh: $*" >&2; exit 2; }

[ -n "${COMFYUI_PATH:-}" ] || die "set COMFYUI_PATH to a ComfyUI checkout (the folder with main.py)"
COMFYUI_PATH="$(cd "$COMFYUI_PATH" 2>/dev/null && pwd)" || die "COMFYUI_PATH=$COMFYUI_PATH is not a folder"
for f in main.py nodes.py comfy/samplers.py folder_paths.py; do
    [ -f "$COMFYUI_PATH/$f" ] || die "$COMFYUI_PATH is not a ComfyUI checkout (no $f)"
done
export COMFYUI_PATH
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON not found"
"$PYTHON" -c "import torch" 2>/dev/null || die "$PYTHON has no torch: point PYTHON at the python that runs ComfyUI"

# Pin what is installed, so pip resolves the test requirements around it.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PYTHON" - "$CONSTRAINTS" <<'PY'
import importlib.metadata as md, sys
with open(sys.argv[1], "w") as f:
    for name in ("torch", "torchvision", "torchaudio"):
        try:
            f.write(f"{name}=={md.version(name)}\n")
        except md.PackageNotFoundError:
            pass
PY
echo "ComfyUI: $COMFYUI_PATH"
echo "python:  $("$PYTHON" -c 'import sys; print(sys.executable)')"
echo "pinned:  $(tr '\n' ' ' < "$CONSTRAINTS")"
before="$(cat "$CONSTRAINTS")"

"$PYTHON" -m pip install -q -c "$CONSTRAINTS" -r "$REPO/requirements-test.txt"

after="$("$PYTHON" - <<'PY'
import importlib.metadata as md
for name in ("torch", "torchvision", "torchaudio"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
)"
[ "$before" = "$after" ] || die "torch changed during the install (before: $before; after: $after)"

cd "$REPO"
status=0
"$PYTHON" -m pytest "$@" || status=$?
if [ $# -eq 0 ]; then
    node --test tests/js/ || status=$?
fi
exit $status
