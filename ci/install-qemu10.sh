#!/usr/bin/env bash
# QEMU 10 as a second emulator, beside the system's QEMU 7.2 (which stays the default).
# bookworm-backports has QEMU 10.0 under the same package names as 7.2, so installing it would
# replace 7.2 (FACTS.md). Instead its .debs are downloaded with a private package list (the
# host's own packages are never upgraded) and unpacked with dpkg-deb -x into a prefix:
#   /opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64
# Its libraries are bookworm's (its Depends name no version newer than bookworm has); its
# firmware is its own (usr/share/qemu, usr/share/seabios: clonesafe passes them with -L).
# Use: clonesafe bench --emulator /opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64
# Safe to run again: it does nothing when that QEMU already answers.
set -euo pipefail
prefix=${1:-/opt/clonesafe/qemu-10}
bin="$prefix/usr/bin/qemu-system-x86_64"
say() { echo "qemu10: $*" >&2; }
if "$bin" --version 2>/dev/null | grep -q 'QEMU emulator version 10\.'; then
    say "already unpacked in $prefix"
    exit 0
fi
# The mirror is the one this machine's apt uses (guests/lib/mirror.sh): no host is written here.
mirror=$(bash "$(dirname "$0")/../guests/lib/mirror.sh")
[ -n "$mirror" ] || { say "no Debian mirror found in /etc/apt"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" > "$work/sources.list"
apt_opts=(-q -o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists" -o APT::Sandbox::User=root)
say "fetching the bookworm-backports package list"
apt-get "${apt_opts[@]}" update >/dev/null
cd "$work/debs"
for p in qemu-system-x86 qemu-system-common qemu-system-data seabios; do
    apt-get "${apt_opts[@]}" download "$p/bookworm-backports" >/dev/null
done
rm -rf "$prefix.new"
mkdir -p "$prefix.new"
for d in ./*.deb; do
    dpkg-deb -x "$d" "$prefix.new"
done
"$prefix.new/usr/bin/qemu-system-x86_64" --version | grep -q 'QEMU emulator version 10\.' || { say "the unpacked QEMU does not run"; exit 1; }
rm -rf "$prefix"
mv "$prefix.new" "$prefix"
say "$("$bin" --version | head -1) in $prefix"
