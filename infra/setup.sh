#!/usr/bin/env bash
# Idempotent environment setup: system libraries for headless MuJoCo rendering, then .venv with the
# exact versions of requirements.txt, then this project in editable mode. Called by `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# EGL + Mesa's software rasterizer: MuJoCo renders offscreen through them (MUJOCO_GL=egl).
APT_PACKAGES=(libegl1 libgl1 libglvnd0 libegl-mesa0 libgl1-mesa-dri)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch==2.13.0 in the lock resolves to the CPU wheel on this machine's disk (pip's find-links);
# --no-deps on the project itself: the lock already holds every dependency, resolved once.
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
# Prefect's local database is created once here, not by the first flow run (DESIGN.md §3).
echo "setup: done ($(.venv/bin/python -c 'import torch, zarr, dvc.version as d; print("torch", torch.__version__, "zarr", zarr.__version__, "dvc", d.__version__)'))"
