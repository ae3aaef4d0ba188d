# Shared by scripts/demo, scripts/test and scripts/hardening: make sure the Debian packages are there, then build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${MXMOE_BUILD_DIR:-$ROOT/build}"

ensure_packages() {
  local missing=()
  while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < "${PACKAGES:-$ROOT/scripts/debian-packages.txt}"
  ((${#missing[@]} == 0)) && return 0
  echo "mxmoe: installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "mxmoe: please install as root: apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
  local ci=()
  # CI has no GPU: it proves the CUDA code compiles for each architecture (PTX, no machine code);
  # the GPU machines build and run the real thing (scripts/gpu-check).
  [[ "${CI:-}" == "true" ]] && ci+=(-DCMAKE_CUDA_ARCHITECTURES="80-virtual;89-virtual;90-virtual")
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "${ci[@]}" "$@" >/dev/null
  cmake --build "$BUILD_DIR" --parallel "$(nproc)"
}
