#!/usr/bin/env bash
# Builds the "debian13-bpo" guest: the debian13 image with the trixie-backports kernel (7.x), the
# third kernel of the race-window comparison (6.1, 6.12, 7.x): NEW_VMGENID uevents (6.8+), vDSO
# getrandom (6.11+) and the VMClock driver (ptp_vmclock, 6.13+). See ../lib/debian-image.sh.
exec "$(dirname "$0")/../lib/debian-image.sh" trixie debian13-bpo "$@"
