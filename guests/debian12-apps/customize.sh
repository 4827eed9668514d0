#!/usr/bin/env bash
# Run by guests/lib/debian-image.sh with the guest's root file system as $1, after the packages
# are installed. Debian's maintainer scripts initialise both databases at install time
# (postgresql-common's pg_createcluster, mariadb-server's mariadb-install-db), as they would
# on a golden image; this only checks that they did, so a build never ships an empty database.
set -euo pipefail
root=$1
fail() { echo "debian12-apps: $*" >&2; exit 1; }
ls "$root"/var/lib/postgresql/*/main/global/pg_control >/dev/null 2>&1 \
    || fail "PostgreSQL's cluster was not created at install time"
[ -d "$root/var/lib/mysql/mysql" ] || fail "MariaDB's data directory was not initialised"
[ -s "$root/etc/ssl/private/ssl-cert-snakeoil.key" ] || fail "ssl-cert made no snakeoil key"
chroot "$root" systemctl enable postgresql.service mariadb.service >/dev/null 2>&1
