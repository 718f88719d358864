#!/usr/bin/env bash
# Create the miles parser oracle venv: miles-rl 0.0.2 (it vendors miles' Megatron fork and SGLang)
# on CPU torch, so tests and `launch.py backend=miles mode=check` can run miles' own parse_args().
#
#   scripts/setup_miles_oracle.sh            # venv at $MILES_ORACLE_VENV or <repo>/.venv-miles-oracle
#
# Idempotent: a venv whose marker file matches these pins is left alone (~0.1 s). A fresh install
# takes about 2 minutes on 2 cores and 2.8 GB of disk. Kept apart from the project environment on
# purpose: the wheel's bundled `megatron/` package would clash with megatron-core.
# Recipe and caveats: ../shared/reference/probes.md section 7.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MILES_ORACLE_VENV:-${repo_root}/.venv-miles-oracle}"
python_bin="${PYTHON:-python3.11}"

# torch first and pinned (CPU wheel from the local store); never torchvision (the oracle stubs it).
torch_pin="torch==2.13.0"
# What miles.utils.arguments and its imports need (found by iterating on ImportError), plus
# ray[default] so that the same venv can host a Ray head with the job API (runner tests), and
# tensorboard for miles' TensorboardBackend (the stand-in entry of tests/miles/standin).
deps=(
  "PyYAML==6.0.4" "ray[default]==2.60.0" "transformers==5.24.0" "sglang-router==0.3.2" "pybase64==1.5.1"
  "ipython==9.18.1" "triton==3.9.0" "pillow==13.0.0" "openai==3.57.0"
  "partial-json-parser==0.2.1.1.post7" "pyzmq==27.3.0" "dill==0.4.1" "sentencepiece==0.2.3"
  "httpx==0.28.1" "six==1.17.0" "matplotlib==3.11.2" "tensorboard==2.21.0"
)
miles_pin="miles-rl==0.0.2"
marker="${venv}/.miles-oracle-pins"
wanted="${torch_pin} ${deps[*]} ${miles_pin}"

# The pinned release, miles v0.1.0 (the image's): its `miles` package source (the shared reference
# snapshot, commit 78527b9) overlays the wheel's on PYTHONPATH, next to a --target dir with what
# v0.1.0's parser imports beyond the wheel: the PyPI SGLang its sglang-miles fork builds on
# (v0.5.16), v0.1.0's transformers pin (5.12.1: 5.13+ collides with SGLang's qwen3_asr) and their
# import-time needs. Megatron stays the wheel's vendored fork. Used by scripts/dump_miles_flags.py
# and the oracle (miles_hydra/backends/miles/check/oracle.py, release "v0.1.0").
miles_src="${MILES_V010_SRC:-${repo_root}/../shared/reference/miles-v0.1.0}"
overlay="${venv}/overlay-v0.1.0"
overlay_deps=(
  "sglang==0.5.16" "transformers==5.12.1" "tokenizers==0.22.2" "huggingface-hub==1.33.0"
  "polars==1.42.1" "msgspec==0.23.0" "xgrammar==0.2.9" "apache-tvm-ffi==0.1.15.post2"
)
overlay_marker="${overlay}/.pins"
overlay_wanted="${overlay_deps[*]}"

pip_quiet() {
  # The machine's pip prints one harmless "Location ... is ignored" line per mirror lookup.
  PIP_NO_CACHE_DIR=1 "${venv}/bin/pip" install --quiet "$@" 2>&1 | { grep -v -e "is ignored" -e "already exists" || true; }
  return "${PIPESTATUS[0]}"
}

setup_overlay() {
  if [[ ! -d "${miles_src}/miles" ]]; then
    echo "miles v0.1.0 source not found at ${miles_src} (set MILES_V010_SRC): v0.1.0 overlay skipped"
    return 0
  fi
  if [[ -f "${overlay_marker}" && "$(cat "${overlay_marker}")" == "${overlay_wanted}" ]]; then
    echo "miles v0.1.0 overlay up to date: ${overlay}"
    return 0
  fi
  local t0=${SECONDS}
  rm -rf "${overlay}"
  # --no-deps: the venv already has torch, ray, numpy...; these only shadow or add packages.
  pip_quiet --no-deps --target "${overlay}" "${overlay_deps[@]}"
  ln -sfn "$(cd "${miles_src}" && pwd)" "${overlay}/miles-src"
  echo "${overlay_wanted}" > "${overlay_marker}"
  echo "miles v0.1.0 overlay ready: ${overlay} ($((SECONDS - t0)) s)"
}

if [[ -f "${marker}" && "$(cat "${marker}")" == "${wanted}" ]]; then
  echo "miles oracle venv up to date: ${venv}"
  setup_overlay
  exit 0
fi

start=${SECONDS}
"${python_bin}" -m venv "${venv}"
pip_quiet "${torch_pin}"
pip_quiet "${torch_pin}" "${deps[@]}"
# --no-deps: its declared dependencies (torchft-nightly, ring_flash_attn, ...) are GPU-only and
# unneeded for parsing; never `pip install megatron` (an unrelated PyPI package).
pip_quiet --no-deps "${miles_pin}"
"${venv}/bin/python" -W ignore -c "import miles, megatron.training, sglang" >/dev/null 2>&1
echo "${wanted}" > "${marker}"
echo "miles oracle venv ready: ${venv} ($((SECONDS - start)) s)"
setup_overlay
