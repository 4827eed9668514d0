#!/usr/bin/env bash
# Builds the "debian13" guest (Debian 13, trixie) as a bootable disk image; see ../lib/debian-image.sh.
exec "$(dirname "$0")/../lib/debian-image.sh" trixie debian13 "$@"
