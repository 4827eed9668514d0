#!/usr/bin/env bash
# Builds a bootable Debian disk image the way a golden or cloud image is made, from Debian
# packages only, into $CLONESAFE_GUESTS/<name> (default /var/lib/clonesafe/guests/<name>):
#
#   disk.qcow2     one msdos partition (ext4), extlinux in the image, systemd and udev,
#                  systemd-networkd with DHCP, openssh-server, qemu-guest-agent, cloud-init
#                  (NoCloud, then None), and a TLS service (openssl s_server on 443) started at
#                  boot. SSH host keys, machine-id and the TLS key are made at install time, as
#                  real image builds do: every copy of the image starts with them.
#   guest.toml     how clonesafe boots it and talks to it (copied from guests/<name>/)
#   manifest.json  suite, kernel, the archive's Release date, the input hash
#
# A guest directory may add to this: guests/<name>/packages (more packages, one per line) and
# guests/<name>/customize.sh (run with the root file system as $1 after the base set-up, in the
# build's chroot environment). guests/debian12-apps uses both to install and initialise PostgreSQL
# and MariaDB, as a golden image would be.
#
# Usage: debian-image.sh SUITE NAME [--force]. Cached: nothing is rebuilt while the inputs (this
# script, guest.toml, the suite's InRelease from the mirror) hash the same.
# The disk itself is made by make-disk-image.sh.
set -euo pipefail
suite=$1
name=$2
force=0
[ "${3:-}" = "--force" ] && force=1
here=$(cd "$(dirname "$0")" && pwd)
guestdir=$(cd "$here/../$name" && pwd)
out=${CLONESAFE_GUESTS:-/var/lib/clonesafe/guests}/$name
say() { echo "guest $name: $*" >&2; }

mirror=$("$here/mirror.sh")
[ -n "$mirror" ] || { say "no Debian mirror found in /etc/apt"; exit 1; }

packages="systemd-sysv,udev,kmod,dbus,linux-image-amd64,openssh-server,qemu-guest-agent,cloud-init,openssl,iproute2,ca-certificates,procps"
extra_inputs=()
if [ -f "$guestdir/packages" ]; then
    packages="$packages,$(grep -v '^[[:space:]]*\(#\|$\)' "$guestdir/packages" | paste -sd, -)"
    extra_inputs+=("$guestdir/packages")
fi
customize=()
if [ -f "$guestdir/customize.sh" ]; then
    customize=(--customize-hook="bash '$guestdir/customize.sh' \"\$1\"")
    extra_inputs+=("$guestdir/customize.sh")
fi
release=$(curl -fsS --max-time 60 "$mirror/dists/$suite/InRelease" | sha256sum | cut -d' ' -f1)
hash=$( { echo "$suite $packages $release"; find "$here/debian-rootfs" -type f | LC_ALL=C sort | xargs sha256sum | cut -d' ' -f1;
          sha256sum "$here/debian-image.sh" "$here/make-disk-image.sh" "$guestdir/guest.toml" ${extra_inputs[@]+"${extra_inputs[@]}"} | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ $force = 0 ] && [ -f "$out/manifest.json" ] && grep -q "\"input_hash\": \"$hash\"" "$out/manifest.json" \
   && [ -f "$out/disk.qcow2" ] && [ -f "$out/guest.toml" ]; then
    say "up to date in $out"
    exit 0
fi

work=$(mktemp -d /var/tmp/clonesafe-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
uuid=$(cat /proc/sys/kernel/random/uuid)

say "installing $suite from $mirror (mmdebstrap)"
mmdebstrap --variant=minbase --include="$packages" \
    --dpkgopt='force-unsafe-io' --aptopt='Acquire::Languages "none"' \
    --skip=cleanup/reproducible \
    --customize-hook='chroot "$1" systemd-machine-id-setup' \
    --customize-hook="echo '$name' > \"\$1/etc/hostname\"" \
    --customize-hook="printf '127.0.0.1 localhost\n127.0.1.1 $name\n' > \"\$1/etc/hosts\"" \
    --customize-hook="echo 'UUID=$uuid / ext4 errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
    --customize-hook="cp -r '$here/debian-rootfs/.' \"\$1/\"" \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service clonesafe-tls.service' \
    --customize-hook='chroot "$1" systemctl mask e2scrub_reap.service e2scrub_all.timer' \
    --customize-hook='mkdir -p "$1/etc/clonesafe-tls" && chroot "$1" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=clonesafe-guest -keyout /etc/clonesafe-tls/key.pem -out /etc/clonesafe-tls/cert.pem 2>/dev/null' \
    ${customize[@]+"${customize[@]}"} \
    "$suite" "$work/rootfs" "$mirror" > "$work/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$work/mmdebstrap.log" >&2; exit 1; }
kver=$(ls "$work/rootfs/lib/modules" | head -n1)
[ -s "$work/rootfs/etc/machine-id" ] || { say "the image has no machine-id"; exit 1; }

say "making the disk image (kernel $kver)"
"$here/make-disk-image.sh" "$work/rootfs" "$uuid" "$work/disk.qcow2" >/dev/null

mkdir -p "$out"
chmod 755 "$(dirname "$out")" "$out"
install -m 644 "$work/disk.qcow2" "$out/disk.qcow2.new" && mv "$out/disk.qcow2.new" "$out/disk.qcow2"
install -m 644 "$guestdir/guest.toml" "$out/guest.toml.new" && mv "$out/guest.toml.new" "$out/guest.toml"
cat > "$out/manifest.json.new" <<JSON
{
  "guest": "$name",
  "suite": "$suite",
  "kernel_release": "$kver",
  "mirror": "$mirror",
  "release_sha256": "$release",
  "input_hash": "$hash"
}
JSON
mv "$out/manifest.json.new" "$out/manifest.json"
say "built in $out ($(du -h "$out/disk.qcow2" | cut -f1))"
