#!/usr/bin/env bash
# mxmoe as another project uses it: installed, then found with find_package(mxmoe) and with
# pkg-config, the README's library example built and run each way; and added with add_subdirectory
# (configured with the CLI's, tests' and benchmarks' packages made unfindable).
#   check.sh <mxmoe build dir> <mxmoe source dir> <CMake generator>
set -euo pipefail
BUILD="$1" SRC="$2" GENERATOR="$3"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cmake --install "$BUILD" --prefix "$WORK/prefix" >/dev/null
"$WORK/prefix/bin/mxmoe" --version

cmake -S "$SRC/tests/downstream" -B "$WORK/found" -G "$GENERATOR" -DCMAKE_PREFIX_PATH="$WORK/prefix" >/dev/null
cmake --build "$WORK/found" >/dev/null
"$WORK/found/library" | tee "$WORK/found.txt"
grep -q "chosen" "$WORK/found.txt"

PC_DIR="$(dirname "$(find "$WORK/prefix" -name mxmoe.pc)")"
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
c++ -std=c++20 "$SRC/examples/library.cpp" $(PKG_CONFIG_PATH="$PC_DIR" pkg-config --static --cflags --libs mxmoe) \
  -o "$WORK/library-pc"
"$WORK/library-pc" >"$WORK/pc.txt"
grep -q "chosen" "$WORK/pc.txt"

cmake -S "$SRC/tests/downstream" -B "$WORK/sub" -G "$GENERATOR" -DMXMOE_MODE=subdirectory -DMXMOE_SOURCE_DIR="$SRC" \
  -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON -DCMAKE_DISABLE_FIND_PACKAGE_yaml-cpp=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON >/dev/null
echo "downstream: find_package(mxmoe), pkg-config and add_subdirectory work"
