#!/usr/bin/env bash
# Starts virtlogd and libvirtd on machines without systemd, and waits until libvirtd answers.
#
# --tcp-loopback: libvirtd also listens on 127.0.0.1:16509 with TCP and NO authentication, so
# that qemu+tcp://127.0.0.1/system answers over libvirt's network protocol (the remote-host
# tests, and `clonesafe doctor --connect`). Anyone on this machine can then drive libvirt as
# root through that port: for test machines only, never on a shared host. A libvirtd already
# running without it is restarted (its QEMU processes keep running).
set -euo pipefail
say() { echo "libvirt: $*" >&2; }
tcp=0
case "${1:-}" in
    --tcp-loopback) tcp=1 ;;
    "") ;;
    *) say "unknown option $1 (only --tcp-loopback)"; exit 2 ;;
esac
tcp_uri=qemu+tcp://127.0.0.1/system
answers() { virsh -c "$1" version >/dev/null 2>&1; }

if answers qemu:///system && { [ $tcp = 0 ] || answers "$tcp_uri"; }; then
    say "libvirtd already answers"
    exit 0
fi
args=(-d)
if [ $tcp = 1 ]; then
    conf=/etc/clonesafe/libvirtd-tcp.conf
    mkdir -p "$(dirname "$conf")"
    cat > "$conf" <<'CONF'
# Written by clonesafe's ci/start-libvirt.sh --tcp-loopback: tests only.
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
tcp_port = "16509"
auth_tcp = "none"
CONF
    args+=(--listen -f "$conf")
    if pgrep -x libvirtd >/dev/null; then
        say "restarting libvirtd to listen on 127.0.0.1:16509 too"
        pkill -x libvirtd || true
        for _ in $(seq 1 40); do pgrep -x libvirtd >/dev/null || break; sleep 0.25; done
    fi
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd "${args[@]}"
for _ in $(seq 1 60); do
    if answers qemu:///system && { [ $tcp = 0 ] || answers "$tcp_uri"; }; then
        say "libvirtd answers$([ $tcp = 1 ] && echo " (and on $tcp_uri, without authentication)")"
        exit 0
    fi
    sleep 0.5
done
say "libvirtd did not answer within 30 s"
exit 1
