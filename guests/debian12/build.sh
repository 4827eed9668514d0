#!/usr/bin/env bash
# Builds the "debian12" guest (Debian 12, bookworm) as a bootable disk image; see ../lib/debian-image.sh.
exec "$(dirname "$0")/../lib/debian-image.sh" bookworm debian12 "$@"
