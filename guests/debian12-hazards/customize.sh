#!/usr/bin/env bash
# Run by guests/lib/debian-image.sh with the guest's root file system as $1, after the packages
# are installed: the clone hazards a golden image carries when it is made by installing and
# configuring one machine (issue 22). Every secret here is random per build except the test
# user's password, which is fixed so that a test can grep every report and event for it.
set -euo pipefail
root=$1
fail() { echo "debian12-hazards: $*" >&2; exit 1; }
in_root() { chroot "$root" "$@"; }

# A user with a password and an SSH key (virt-sysprep: user-account, ssh-userdir).
in_root useradd -m -s /bin/bash alice
echo 'alice:clonesafe-hazard-password' | in_root chpasswd
in_root install -d -m 700 -o alice -g alice /home/alice/.ssh
in_root ssh-keygen -q -t ed25519 -N '' -C alice@debian12-hazards -f /home/alice/.ssh/id_ed25519
in_root chown alice:alice /home/alice/.ssh/id_ed25519 /home/alice/.ssh/id_ed25519.pub

# systemd's machine-info (hostnamectl set-deployment/set-location/--pretty).
printf 'PRETTY_HOSTNAME="clonesafe hazards"\nDEPLOYMENT=reference\nLOCATION="rack 1"\n' > "$root/etc/machine-info"

# A Kerberos host keytab, as `net ads join` or `ipa-client-install` leaves one.
secret=$(head -c 24 /dev/urandom | base64)
printf 'addent -password -p host/debian12-hazards.clonesafe.test@CLONESAFE.TEST -k 1 -e aes256-cts-hmac-sha1-96\n%s\nwkt /etc/krb5.keytab\nquit\n' "$secret" \
    | in_root ktutil >/dev/null
chmod 600 "$root/etc/krb5.keytab"
# Samba's secrets.tdb with a domain member's machine password (the key smbd/winbindd read).
mkdir -p "$root/var/lib/samba/private"
chmod 700 "$root/var/lib/samba/private"
printf 'create /var/lib/samba/private/secrets.tdb\nstore SECRETS/MACHINE_PASSWORD/CLONESAFE %s\nquit\n' "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" \
    | in_root tdbtool >/dev/null
[ -s "$root/var/lib/samba/private/secrets.tdb" ] || fail "tdbtool wrote no secrets.tdb"
[ -s "$root/etc/krb5.keytab" ] || fail "ktutil wrote no keytab"

# A LUKS2 volume with a keyfile, opened at boot (systemd's docs/BUILDING_IMAGES.md: a volume
# encrypted at image build gives every machine made from the image one volume key). PBKDF2 with
# few iterations: under TCG argon2id would take most of a minute at every boot.
mkdir -p "$root/var/lib/clonesafe-hazards" "$root/etc/clonesafe-hazards"
chmod 700 "$root/etc/clonesafe-hazards"
head -c 64 /dev/urandom > "$root/etc/clonesafe-hazards/luks.key"
chmod 600 "$root/etc/clonesafe-hazards/luks.key"
truncate -s 24M "$root/var/lib/clonesafe-hazards/luks.img"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$root/etc/clonesafe-hazards/luks.key" "$root/var/lib/clonesafe-hazards/luks.img"

# An LVM2 physical volume and volume group on a second file (virt-sysprep: lvm-uuids). The host's
# LVM writes them through a loop device; no udev, no devices file, no backup on the host.
truncate -s 16M "$root/var/lib/clonesafe-hazards/lvm.img"
lvmconf='devices { obtain_device_list_from_udev=0 use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }'
loop=$(losetup -f --show "$root/var/lib/clonesafe-hazards/lvm.img")
trap 'losetup -d "$loop" 2>/dev/null || true' EXIT
pvcreate -q --config "$lvmconf" "$loop" >/dev/null
vgcreate -q --config "$lvmconf" hazards "$loop" >/dev/null
vgchange -q --config "$lvmconf" -an hazards >/dev/null 2>&1 || true
losetup -d "$loop"
trap - EXIT

cat > "$root/etc/systemd/system/clonesafe-hazards.service" <<'UNIT'
[Unit]
Description=clonesafe hazards: attach the LVM file and open the LUKS volume
DefaultDependencies=no
After=local-fs.target
Before=qemu-guest-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'losetup -f /var/lib/clonesafe-hazards/lvm.img && cryptsetup open --key-file /etc/clonesafe-hazards/luks.key /var/lib/clonesafe-hazards/luks.img clonesafe-hazard'

[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable clonesafe-hazards.service >/dev/null 2>&1
