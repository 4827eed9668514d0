#!/usr/bin/env bash
# Declared identities on real applications (scenarios/apps.toml): the debian12-apps golden image
# (PostgreSQL and MariaDB initialised at build) cloned four ways on QEMU. Not part of CI (it
# builds its own image, about 5 minutes, and runs about 15 under TCG on 2 cores).
# Default output: reports/apps/ (the committed reference run). OUT=<dir> writes elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash guests/debian12-apps/build.sh
exec bash ci/reference.sh scenarios/apps.toml reports/apps --parallel 2 "$@"
