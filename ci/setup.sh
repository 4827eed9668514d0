#!/usr/bin/env bash
# Installs everything clonesafe needs on a fresh Debian 12 machine, builds the guest, and starts
# libvirtd. Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "setup: $*" >&2; }

export DEBIAN_FRONTEND=noninteractive
need_apt=0
for bin in qemu-system-x86_64 qemu-img virsh libvirtd pkg-config busybox cpio dropbearkey mkfs.ext4 debugfs depmod chromium \
           mmdebstrap parted extlinux genisoimage ssh-keyscan openssl curl virt-sysprep guestfish dnsmasq tcpdump \
           cryptsetup pvcreate losetup swtpm swtpm_setup; do
    command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
[ -f /usr/include/libvirt/libvirt.h ] || need_apt=1
python3 -c 'import yaml' 2>/dev/null || need_apt=1   # tests/ci_recipes.rs reads the CI YAML
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt=1
if [ $need_apt = 1 ] || ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then
    say "installing Debian packages"
    apt-get update -q >/dev/null
    # qemu-utils must match qemu-system's version: some images ship a newer backported
    # qemu-utils that conflicts with bookworm's qemu-system-common 7.2.
    qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    apt-get install -y -q --no-install-recommends --allow-downgrades \
        "qemu-system-x86=$qv" "qemu-system-common=$qv" "qemu-utils=$qv" \
        libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
        busybox-static cpio dropbear-bin e2fsprogs kmod \
        chromium fonts-dejavu-core \
        mmdebstrap parted extlinux syslinux-common genisoimage openssh-client openssl curl python3-yaml \
        libguestfs-tools linux-image-amd64 dnsmasq-base tcpdump cryptsetup-bin lvm2 swtpm swtpm-tools >/dev/null
    # chromium: the HTML report's screenshot test; fonts-dejavu-core: text in the plots.
    # mmdebstrap, parted, extlinux, syslinux-common: the Debian disk images (guests/lib);
    # genisoimage: NoCloud seeds; openssh-client, openssl: host-side checks (ssh-keyscan,
    # s_client); libguestfs-tools: the real virt-sysprep, which needs a kernel in /boot
    # (linux-image-amd64 only adds files there; the running kernel is unchanged; FACTS.md);
    # dnsmasq-base, tcpdump: the network segment's DHCP server and capture (network/segment.rs);
    # cryptsetup-bin, lvm2: the hazards guest's LUKS volume and LVM group, made at image build;
    # swtpm, swtpm-tools: a virtual TPM per VM (tpm = true; libvirt runs swtpm_setup).
else
    say "Debian packages already installed"
fi
# The guest is built from packages fetched with apt-get download: it needs package lists.
if ! apt-cache policy linux-image-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    say "refreshing package lists for the guest build"
    apt-get update -q >/dev/null
fi

# libvirt's QEMU runs as libvirt-qemu (group kvm). Debian's udev rule would set this; without
# udev, libvirt re-probes QEMU on every start (about 50 s each, FACTS.md).
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm 2>/dev/null || true
    chmod 660 /dev/kvm 2>/dev/null || true
fi

bash ci/start-libvirt.sh

say "building the guests"
bash guests/tiny/build.sh
bash guests/debian12/build.sh
bash guests/debian13/build.sh
# Debian 13 with the trixie-backports kernel (7.x): the third kernel of the race windows.
bash guests/debian13-bpo/build.sh
# Debian 12 with the image hazards of issue 22 (LUKS, LVM, a user's credentials, a machine account).
bash guests/debian12-hazards/build.sh
# The static probe (built with the tiny guest) is also what clonesafe injects into guests it
# reaches through qemu-guest-agent.
install -D -m 755 target/x86_64-unknown-linux-gnu/release/clonesafe-probe /var/lib/clonesafe/probe/clonesafe-probe
# The vDSO getrandom helper goes beside it: dynamically linked on purpose, so that in a guest it
# runs the guest's own glibc (issue 21, vdso_rng); the probe starts it from its own directory.
cargo build --quiet --release --locked -p clonesafe-vdso-rng
install -D -m 755 target/release/clonesafe-vdso-rng /var/lib/clonesafe/probe/clonesafe-vdso-rng

# QEMU 10 beside 7.2, for `--emulator` (mapped-ram in clonesafe bench; tests/bench.rs).
bash ci/install-qemu10.sh

say "building clonesafe"
cargo build --release --locked -p clonesafe 2>&1 | grep -vE '^\s+(Compiling|Downloaded|Downloading)' || true
test -x target/release/clonesafe
say "ready: target/release/clonesafe"
