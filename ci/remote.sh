#!/usr/bin/env bash
# Clones on a libvirt host reached over libvirt's network protocol (scenarios/remote.toml with
# --connect qemu+tcp://127.0.0.1/system): the tiny guest and Debian 12, every file through the
# run's storage pool, consoles and probes through streams. About 4 minutes under TCG.
# Makes libvirtd listen on 127.0.0.1:16509 WITHOUT authentication (ci/start-libvirt.sh
# --tcp-loopback): test machines only. Default output: reports/remote/. OUT=<dir> writes elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/start-libvirt.sh --tcp-loopback
exec bash ci/reference.sh scenarios/remote.toml reports/remote --connect qemu+tcp://127.0.0.1/system "$@"
