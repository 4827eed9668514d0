#!/usr/bin/env bash
# Makes a bootable disk image from a root filesystem directory: one msdos partition (ext4),
# extlinux in the image, the kernel and initrd of the tree's /boot. The tree's /etc/fstab must
# name the root filesystem by UUID; pass that UUID.
#
# Usage: make-disk-image.sh ROOTFS UUID OUT.qcow2 [SIZE_MIB]
#
# Measured on these machines (FACTS.md, "Real disk images"): there is no udev, so losetup -P
# makes no partition nodes; the partition gets its own loop device at its offset instead.
# syslinux 6.04 cannot read ext4's 64bit and metadata_csum features, so they are left off.
set -euo pipefail
rootfs=$1
uuid=$2
out=$3
size_mib=${4:-3072}
work=$(mktemp -d /var/tmp/clonesafe-disk.XXXXXX)
loop=""
cleanup() {
    mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
kver=$(ls "$rootfs/lib/modules" | head -n1)
[ -n "$kver" ] && [ -f "$rootfs/boot/vmlinuz-$kver" ] || { echo "make-disk-image: no kernel in $rootfs/boot" >&2; exit 1; }

truncate -s "${size_mib}M" "$work/disk.raw"
# (parted asks for udevadm, which is absent here; the partition table is written all the same.)
parted -s "$work/disk.raw" mklabel msdos mkpart primary ext4 1MiB 100% set 1 boot on 2> >(grep -v udevadm >&2)
loop=$(losetup -f --show -o $((1 << 20)) --sizelimit $(( (size_mib - 1) << 20 )) "$work/disk.raw")
mkfs.ext4 -q -F -O ^64bit,^metadata_csum -U "$uuid" -L root -d "$rootfs" "$loop"
mkdir "$work/mnt"
mount "$loop" "$work/mnt"
mkdir -p "$work/mnt/boot/extlinux"
extlinux --install "$work/mnt/boot/extlinux" >/dev/null 2>&1
cat > "$work/mnt/boot/extlinux/extlinux.conf" <<CONF
SERIAL 0 115200
DEFAULT linux
TIMEOUT 1
LABEL linux
    LINUX /boot/vmlinuz-$kver
    INITRD /boot/initrd.img-$kver
    APPEND root=UUID=$uuid ro console=ttyS0,115200 quiet
CONF
umount "$work/mnt"
losetup -d "$loop"
loop=""
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$out"
echo "$kver"
