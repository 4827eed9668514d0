#!/usr/bin/env bash
# The clone hazards of issue 22 (scenarios/coverage.toml): the debian12-hazards guest cloned six
# ways on QEMU and two on libvirt, every VM with a virtual TPM, two scenarios at once. About 20 minutes under TCG on 2 cores; not part of CI
# (tests/real_guests.rs runs one scenario of it on libvirt).
# Default output: reports/coverage/ (the committed reference run). OUT=<dir> writes elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash guests/debian12-hazards/build.sh
exec bash ci/reference.sh scenarios/coverage.toml reports/coverage --parallel 2 "$@"
