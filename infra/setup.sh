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
# The lock is installed with uv when the CPU torch wheel lies on this machine's disk: uv downloads and
# unpacks in parallel (measured on the 2-core VM: 31 s for the 273 pins against 3.5-6 min for pip,
# the same `pip freeze`). uv does not read pip's find-links, and with no torch installed it would take
# a CUDA build from PyPI, so the wheel on disk goes in first, by path; the lock's torch==2.13.0 is then
# already satisfied. Without that wheel (another machine), or if uv fails, pip installs as before:
# torch==2.13.0 resolves through pip's own find-links. --no-deps on the project itself: the lock
# already holds every dependency, resolved once. --compile-bytecode (uv; pip does it by default):
# these machines set PYTHONDONTWRITEBYTECODE=1, so without .pyc files every process compiled torch,
# DVC, Prefect and diffusers from source: 12.6 s to import them, 6.1 s with bytecode (2-core VM,
# 2026-12-04), paid by every stage and tool process of `dvc repro` and the suite.
UV_VERSION=0.9.5
find_torch_wheel() {
  local dirs="${PIP_FIND_LINKS:-} $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)"
  for d in $dirs; do
    d=${d#file://}
    for w in "$d"/torch-2.13.0+cpu-cp311-*.whl; do [ -f "$w" ] && { echo "$w"; return 0; }; done
  done
  return 1
}
install_with_uv() {
  local wheel=$1
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" &&
    .venv/bin/uv pip install -q --python .venv/bin/python "$wheel" &&
    .venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode -r requirements.txt &&
    .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
}
if wheel=$(find_torch_wheel) && install_with_uv "$wheel"; then
  echo "setup: installed the lock with uv $UV_VERSION (torch from $wheel)"
else
  echo "setup: installing the lock with pip"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
fi
# Prefect's local database is created once here, not by the first flow run (DESIGN.md §3).
echo "setup: done ($(.venv/bin/python -c 'import torch, zarr, dvc.version as d; print("torch", torch.__version__, "zarr", zarr.__version__, "dvc", d.__version__)'))"
