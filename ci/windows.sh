#!/usr/bin/env bash
# Race windows (issue 21): scenarios/windows.toml on QEMU 7.2 (the system's), then on QEMU 10
# (--emulator, ci/install-qemu10.sh) with scenarios/windows-vmclock.toml, two scenarios at once;
# then the kernel x VMM x recipe table and plot from both reports (clonesafe report windows).
# Default output: reports/windows/ (qemu-7.2/, qemu-10/, race-windows.md, race-windows.svg). OUT=<dir>
# writes elsewhere. About 35 minutes under TCG on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-reports/windows}"
qemu10=/opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64
start=$(date +%s)
rc=0
OUT="$out/qemu-7.2" bash ci/reference.sh scenarios/windows.toml reports/windows/qemu-7.2 --parallel 2 || rc=$?
OUT="$out/qemu-10" bash ci/reference.sh scenarios/windows.toml reports/windows/qemu-10 scenarios/windows-vmclock.toml --emulator "$qemu10" --parallel 2 || rc=$?
target/release/clonesafe report windows "$out/qemu-7.2/report.json" "$out/qemu-10/report.json" --out "$out" || rc=$?
echo "windows: both runs and the table took $(( $(date +%s) - start )) s" >&2
exit $rc
