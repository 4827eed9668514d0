#!/usr/bin/env bash
# Builds the "tiny" guest from Debian packages, into $CLONESAFE_GUESTS/tiny
# (default /var/lib/clonesafe/guests/tiny, readable by libvirt's QEMU user):
#   vmlinuz         Debian's linux-image-6.1.0-*-amd64 kernel
#   initrd.img      busybox-static, the virtio/ext4 modules (and inet_diag/tcp_diag, which
#                   drop-sessions needs), dropbearkey and its libraries,
#                   the clonesafe probe (static), and ./init
#   data.qcow2      a never-booted 64 MiB ext4 disk; identity is created on first boot
#   manifest.json   package versions and the input hash
#   guest.toml      how clonesafe boots and talks to it (copied from this folder)
# It is cached: nothing is rebuilt while the inputs (package versions, this script, init, the
# probe binary) hash the same. Use --force to rebuild anyway.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${CLONESAFE_GUESTS:-/var/lib/clonesafe/guests}/tiny
force=0
[ "${1:-}" = "--force" ] && force=1

say() { echo "guest tiny: $*" >&2; }

# 1. The probe: a static binary for the guest.
say "building the probe"
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked -p clonesafe-probe --target x86_64-unknown-linux-gnu)
probe="$repo/target/x86_64-unknown-linux-gnu/release/clonesafe-probe"

# 2. Package versions decide the rest.
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { say "cannot resolve linux-image-amd64 (run apt-get update)"; exit 1; }
pkgs="$kpkg busybox-static dropbear-bin libtomcrypt1 libtommath1 libgmp10 libc6"
versions=""
for p in $pkgs; do
    v=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { say "no candidate for $p"; exit 1; }
    versions="$versions$p=$v "
done
hash=$( { echo "$versions"; sha256sum "$here/build.sh" "$here/init" "$here/guest.toml" "$probe" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ $force = 0 ] && [ -f "$out/manifest.json" ] && grep -q "\"input_hash\": \"$hash\"" "$out/manifest.json" \
   && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/data.qcow2" ] && [ -f "$out/guest.toml" ]; then
    say "up to date in $out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
say "downloading $versions"
# apt-get download as root warns when _apt cannot write here; the download itself works.
chmod 777 "$work"
apt-get download $(echo "$versions" | tr ' ' '\n' | grep . | sed 's/=/=/') >/dev/null 2>download.log \
    || { cat download.log >&2; exit 1; }
mkdir rootfs
for deb in *.deb; do dpkg-deb -x "$deb" rootfs; done
kver=$(ls rootfs/lib/modules | head -n1)
depmod -b rootfs "$kver"
mdir="rootfs/lib/modules/$kver"

# 3. Modules, dependencies first (modules.dep lists a module's deps, deepest last).
order=()
add_module() {
    local rel=$1 dep
    for m in "${order[@]:-}"; do [ "$m" = "$rel" ] && return 0; done
    local deps
    deps=$(awk -F': *' -v m="$rel" '$1 == m {print $2}' "$mdir/modules.dep")
    for dep in $(echo "$deps" | tr ' ' '\n' | tac); do add_module "$dep"; done
    order+=("$rel")
}
for want in virtio_pci virtio_net virtio_blk crc32c_generic ext4 inet_diag tcp_diag; do
    rel=$(awk -F: -v w="/$want.ko" 'index($1, w) && substr($1, length($1) - length(w) + 1) == w {print $1; exit}' "$mdir/modules.dep")
    [ -n "$rel" ] || { say "module $want not found in $kpkg"; exit 1; }
    add_module "$rel"
done

# 4. The initramfs tree.
ird=initrd
mkdir -p $ird/{bin,sbin,usr/bin,etc,proc,sys,dev,lib/modules,lib/x86_64-linux-gnu,lib64}
cp rootfs/bin/busybox $ird/bin/busybox
cp "$here/init" $ird/init && chmod 755 $ird/init
cp "$probe" $ird/sbin/probe
cp rootfs/usr/bin/dropbearkey $ird/usr/bin/dropbearkey
for lib in libtomcrypt.so.1 libtommath.so.1 libgmp.so.10 libc.so.6 ld-linux-x86-64.so.2; do
    src=$(find rootfs/lib rootfs/usr/lib -name "$lib" | head -n1)
    [ -n "$src" ] || { say "library $lib not found"; exit 1; }
    cp -L "$src" $ird/lib/x86_64-linux-gnu/$lib
done
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 $ird/lib64/ld-linux-x86-64.so.2
: > $ird/etc/modules.order
for rel in "${order[@]}"; do
    cp "$mdir/$rel" $ird/lib/modules/
    basename "$rel" >> $ird/etc/modules.order
done
(cd $ird && find . | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible | gzip -9n) > initrd.img

# 5. The never-booted data disk.
truncate -s 64M data.raw
mkfs.ext4 -q -F -L clonesafe-data -U 6a5c0e5f-1d2b-4c3a-9b8e-000000000001 -E hash_seed=6a5c0e5f-1d2b-4c3a-9b8e-000000000002 data.raw
qemu-img convert -q -f raw -O qcow2 data.raw data.qcow2

mkdir -p "$out"
chmod 755 "$(dirname "$out")" "$out"
install -m 644 "rootfs/boot/vmlinuz-$kver" "$out/vmlinuz.new" && mv "$out/vmlinuz.new" "$out/vmlinuz"
install -m 644 initrd.img "$out/initrd.img.new" && mv "$out/initrd.img.new" "$out/initrd.img"
install -m 644 data.qcow2 "$out/data.qcow2.new" && mv "$out/data.qcow2.new" "$out/data.qcow2"
install -m 644 "$here/guest.toml" "$out/guest.toml.new" && mv "$out/guest.toml.new" "$out/guest.toml"
modules_json=$(printf '"%s",' "${order[@]##*/}")
cat > "$out/manifest.json.new" <<JSON
{
  "guest": "tiny",
  "kernel_release": "$kver",
  "packages": "$(echo $versions)",
  "modules": [${modules_json%,}],
  "input_hash": "$hash"
}
JSON
mv "$out/manifest.json.new" "$out/manifest.json"
say "built in $out (kernel $kver)"
