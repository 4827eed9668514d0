#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 30): the save-image codec, the
# scenario parser, the probe's reply decoder, the capture reader and report merge's shard reports. cargo fuzz needs nightly flags;
# RUSTC_BOOTSTRAP=1 lets the machine's stable toolchain accept them (no other toolchain can be
# installed here).
set -euo pipefail
cd "$(dirname "$0")/../harness/fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
for target in save_image scenario probe_reply pcap report_merge; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 2>&1 | tail -n 8
done
