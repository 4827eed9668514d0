#!/usr/bin/env bash
# Starts virtlogd and libvirtd on machines without systemd, and waits until libvirtd answers.
set -euo pipefail
say() { echo "libvirt: $*" >&2; }
if virsh -c qemu:///system version >/dev/null 2>&1; then
    say "libvirtd already answers"
    exit 0
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 60); do
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        say "libvirtd answers"
        exit 0
    fi
    sleep 0.5
done
say "libvirtd did not answer within 30 s"
exit 1
