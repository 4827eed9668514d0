#!/usr/bin/env bash
# debian13-bpo's customize hook (debian-image.sh runs it with the tree as $1): the kernel from
# trixie-backports, on the mirror this machine's apt uses, then every older kernel purged so the
# image (and make-disk-image.sh's extlinux entry) holds one. The image is cached on this file and
# trixie's InRelease: `build.sh --force` takes a newer backports kernel sooner.
set -euo pipefail
root=$1
suite=trixie
mirror=$("$(dirname "$0")/../lib/mirror.sh")
set -- linux-image-amd64
echo "deb $mirror $suite-backports main" > "$root/etc/apt/sources.list.d/backports.list"
chroot "$root" apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "$suite-backports" "$@"
old=$(chroot "$root" dpkg-query -W -f '${Package}\n' 'linux-image-[0-9]*' | sort -V | head -n -1)
if [ -n "$old" ]; then
    # shellcheck disable=SC2086 # one package name per word
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $old
fi
echo "debian13-bpo: kernel $(ls "$root/lib/modules")" >&2
