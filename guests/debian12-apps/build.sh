#!/usr/bin/env bash
# Builds the "debian12-apps" guest: the Debian 12 image plus PostgreSQL and MariaDB, installed and
# initialised at build time as a golden image would be (packages, customize.sh). Not part of CI:
# scenarios/apps.toml and reports/apps/ use it. See ../lib/debian-image.sh.
exec "$(dirname "$0")/../lib/debian-image.sh" bookworm debian12-apps "$@"
