#!/usr/bin/env bash
# Every recipe on real Debian guests (scenarios/debian.toml): Debian 12 on both backends,
# Debian 13 on QEMU, two scenarios at once. About 40 minutes under TCG on 2 cores.
# Default output: reports/debian/ (the committed reference run). OUT=<dir> writes elsewhere.
exec bash "$(dirname "$0")/reference.sh" scenarios/debian.toml reports/debian --parallel 2 "$@"
