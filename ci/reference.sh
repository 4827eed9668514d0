#!/usr/bin/env bash
# Runs one scenario file in reference form (report.json, report.html, junit.xml, summary.md,
# SVG plots) and records the environment it ran in (environment.md).
# Usage: bash ci/reference.sh SCENARIO_FILE DEFAULT_OUT [clonesafe run options...]
# OUT=<dir> overrides DEFAULT_OUT (CI writes into a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
file="$1"; shift
out="${OUT:-$1}"; shift
bash ci/setup.sh
mkdir -p "$out"
# The commit the binary was built from, taken before the run (commits made during a long run
# must not be credited with it).
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- harness guests metadata 2>/dev/null || echo ' (with uncommitted changes)')"
start=$(date +%s)
# The host's CPU accounting (/proc/stat, first line: user nice system idle iowait irq softirq
# steal): how busy the host's CPUs were over the run says whether more guests at once could
# have gone faster (proc(5)).
cpu_before="$(head -n1 /proc/stat)"
set +e
target/release/clonesafe run "$file" --out "$out" --reference "$@"
rc=$?
set -e
cpu_after="$(head -n1 /proc/stat)"
cpu_busy="$(printf '%s\n%s\n' "$cpu_before" "$cpu_after" | awk '{ idle[NR] = $5 + $6; steal[NR] = $9; t = 0; for (i = 2; i <= 9; i++) t += $i; total[NR] = t }
    END { d = total[2] - total[1]; if (d > 0) printf "%.1f%% busy, %.1f%% idle, %.1f%% stolen", 100 * (d - (idle[2] - idle[1]) - (steal[2] - steal[1])) / d, 100 * (idle[2] - idle[1]) / d, 100 * (steal[2] - steal[1]) / d }')"
guests="${CLONESAFE_GUESTS:-/var/lib/clonesafe/guests}"
{
    echo "# Environment of this run"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- command: clonesafe run $file --reference $*"
    echo "- wall time: $(( $(date +%s) - start )) s"
    echo "- host kernel: $(uname -r); CPUs: $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- host CPUs over the run: $cpu_busy"
    echo "- $(qemu-system-x86_64 --version | head -n1)"
    # A run with --emulator ran another QEMU (the report's host.qemu names it too).
    prev=""; for a in "$@"; do [ "$prev" = --emulator ] && echo "- --emulator $a: $("$a" --version | head -n1)"; prev="$a"; done
    echo "- libvirt: $(virsh -c qemu:///system version 2>/dev/null | awk -F': ' '/Running hypervisor|Using library/ {print $2}' | paste -sd';' -)"
    for g in $(grep -ho '^guest = "[a-z0-9]*"' "$file" | cut -d'"' -f2 | sort -u; grep -q '^guest = ' "$file" || echo tiny); do
        # The manifest records the mirror the guest was built from; a report names no mirror.
        echo "- guest $g: $(tr -d '\n' < "$guests/$g/manifest.json" | sed 's/  */ /g; s/ *"mirror": "[^"]*",//')"
    done
    echo "- clonesafe: $rev"
} > "$out/environment.md"
exit $rc
