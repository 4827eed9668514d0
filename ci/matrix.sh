#!/usr/bin/env bash
# The safety matrix: every strategy on both backends (scenarios/matrix.toml), written in
# reference form (report.json, report.html, junit.xml, summary.md, SVG plots, environment).
# Default output: reports/matrix/ (the committed reference run). CI passes OUT=<tmp dir>.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
out="${OUT:-reports/matrix}"
mkdir -p "$out"
start=$(date +%s)
set +e
target/release/clonesafe run scenarios/matrix.toml --out "$out" --reference "$@"
rc=$?
set -e
{
    echo "# Environment of this run"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- wall time: $(( $(date +%s) - start )) s"
    echo "- host kernel: $(uname -r); CPUs: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- $(qemu-system-x86_64 --version | head -n1)"
    echo "- libvirt: $(virsh -c qemu:///system version 2>/dev/null | awk -F': ' '/Running hypervisor|Using library/ {print $2}' | paste -sd';' -)"
    echo "- guest: $(cat /var/lib/clonesafe/guests/tiny/manifest.json | tr -d '\n' | sed 's/  */ /g')"
    echo "- clonesafe: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$out/environment.md"
exit $rc
