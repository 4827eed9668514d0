#!/usr/bin/env bash
# Builds the "debian12-hazards" guest: the Debian 12 image plus the clone hazards issue 22 lists,
# made at build time as a golden image would have them (customize.sh): a LUKS2 volume with a
# keyfile, an LVM2 volume group, a user with a password and an SSH key, /etc/machine-info, a
# Kerberos keytab and a Samba machine secret. CI builds it for one real-guest test; see
# ../lib/debian-image.sh.
exec "$(dirname "$0")/../lib/debian-image.sh" bookworm debian12-hazards "$@"
