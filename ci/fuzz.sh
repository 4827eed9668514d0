#!/usr/bin/env bash
# Runs the save-image fuzz target briefly (FUZZ_SECONDS, default 30). cargo fuzz needs nightly
# flags; RUSTC_BOOTSTRAP=1 lets the machine's stable toolchain accept them (no other toolchain
# can be installed here).
set -euo pipefail
cd "$(dirname "$0")/../harness/fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
mkdir -p corpus/save_image
RUSTC_BOOTSTRAP=1 cargo fuzz run save_image corpus/save_image -- \
    -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 2>&1 | tail -n 8
