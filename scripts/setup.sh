#!/usr/bin/env bash
# One-time set-up on a fresh Linux machine (Python 3.10+):
#   system libraries for headless napari (Xvfb, Mesa, xcb) when run as root,
#   a virtual environment in .venv, the pinned CPU torch wheel first (so no
#   multi-GB CUDA build is pulled in), then this project with its test extras.
# Re-running it is cheap: everything already present is kept.
# GPU users: install the torch build for your CUDA first, then run with
#   TORCH_SPEC="torch" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0"
if ! command -v xvfb-run >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PACKAGES >/dev/null
    else
        echo "setup: xvfb-run not found; install these for the GUI tests: $APT_PACKAGES" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
$PIP install "${TORCH_SPEC:-torch==2.13.0}"
$PIP install -e ".[test]"
echo "setup: done (.venv ready; mlffm is .venv/bin/mlffm)"
