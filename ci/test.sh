#!/usr/bin/env bash
# Set up (idempotent) and run every test, including the ones that boot real guests (the tiny
# guest, Debian 12 and 13, and a user's image the tests build) under QEMU and drive a real
# libvirtd; then fuzz the save-image codec, the scenario parser, the probe's decoder and the capture reader briefly.
# The full reference runs (ci/matrix.sh, about 7 minutes; ci/debian.sh, about 45) are not part of
# it: with the Debian tests the suite already takes most of CI's hour on 2 cores under TCG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# The remote-host tests talk to libvirtd over its network protocol on loopback (docs/backends.md warns).
bash ci/start-libvirt.sh --tcp-loopback
export CLONESAFE_REQUIRE_VMS=1   # VM tests fail, rather than skip, when QEMU, a guest, libvirtd or chromium is missing
cargo test --workspace --locked -- --test-threads=1
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash ci/fuzz.sh
