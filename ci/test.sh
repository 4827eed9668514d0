#!/usr/bin/env bash
# Set up (idempotent) and run every test, including the ones that boot real guests under QEMU
# and drive a real libvirtd; fuzz the save-image codec briefly; then run the whole safety
# matrix (every strategy on both backends) into a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export CLONESAFE_REQUIRE_VMS=1   # VM tests fail, rather than skip, when QEMU, the guest, libvirtd or chromium is missing
cargo test --workspace --locked -- --test-threads=1
bash ci/fuzz.sh
OUT="$(mktemp -d)" bash ci/matrix.sh
