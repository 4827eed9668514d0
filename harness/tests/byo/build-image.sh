#!/usr/bin/env bash
# Builds "a user's image" for the test of `clonesafe run --image`: a Debian 12 system configured
# unlike the guests under guests/ (ifupdown and dhclient instead of systemd-networkd, no
# cloud-init, no TLS service), with its own machine-id and SSH host keys made here. It writes
# OUT (qcow2) and OUT.identity.json: the machine-id and the host key fingerprints the image holds,
# for the test to compare with what clonesafe reads.
#
# Usage: build-image.sh OUT.qcow2
set -euo pipefail
out=$1
lib=$(cd "$(dirname "$0")/../../../guests/lib" && pwd)
mirror=$("$lib/mirror.sh")
work=$(mktemp -d /var/tmp/clonesafe-byo.XXXXXX)
trap 'rm -rf "$work"' EXIT
uuid=$(cat /proc/sys/kernel/random/uuid)
mmdebstrap --variant=minbase \
    --include=systemd-sysv,udev,kmod,linux-image-amd64,openssh-server,qemu-guest-agent,ifupdown,isc-dhcp-client,iproute2 \
    --dpkgopt='force-unsafe-io' --aptopt='Acquire::Languages "none"' --skip=cleanup/reproducible \
    --customize-hook='chroot "$1" systemd-machine-id-setup' \
    --customize-hook='echo byo-image > "$1/etc/hostname"' \
    --customize-hook="echo 'UUID=$uuid / ext4 errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
    --customize-hook='printf "auto lo\niface lo inet loopback\nallow-hotplug ens5\niface ens5 inet dhcp\nallow-hotplug eth0\niface eth0 inet dhcp\n" > "$1/etc/network/interfaces"' \
    bookworm "$work/rootfs" "$mirror" > "$work/mmdebstrap.log" 2>&1 || { tail -n 30 "$work/mmdebstrap.log" >&2; exit 1; }
fps=$(for k in "$work"/rootfs/etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$k" | awk '{print "\"" $2 "\""}'; done | paste -sd, -)
printf '{"machine_id": "%s", "ssh_fingerprints": [%s]}\n' "$(cat "$work/rootfs/etc/machine-id")" "$fps" > "$out.identity.json"
"$lib/make-disk-image.sh" "$work/rootfs" "$uuid" "$out" 2048 >/dev/null
