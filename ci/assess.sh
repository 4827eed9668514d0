#!/usr/bin/env bash
# The reviewer's answer on a Debian image that is not one of the project's guests: builds the
# test suite's "user's image" (harness/tests/byo/build-image.sh: ifupdown and dhclient, no
# cloud-init, machine-id and host keys made at build), then runs `clonesafe assess --image` on
# it. Not part of CI (about 15 minutes under TCG on 2 cores).
# Default output: reports/assess-debian12/ (the committed run). OUT=<dir> writes elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-reports/assess-debian12}"
bash ci/setup.sh
img_dir=$(mktemp -d /var/tmp/clonesafe-assess.XXXXXX)
trap 'rm -rf "$img_dir"' EXIT
bash harness/tests/byo/build-image.sh "$img_dir/debian12-byo.qcow2"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- harness guests metadata 2>/dev/null || echo ' (with uncommitted changes)')"
mkdir -p "$out"
start=$(date +%s)
set +e
target/release/clonesafe assess --image "$img_dir/debian12-byo.qcow2" --out "$out" "$@"
rc=$?
set -e
{
    echo "# Environment of this run"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- command: clonesafe assess --image debian12-byo.qcow2 $* (the image: harness/tests/byo/build-image.sh)"
    echo "- wall time: $(( $(date +%s) - start )) s"
    echo "- host kernel: $(uname -r); CPUs: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- $(qemu-system-x86_64 --version | head -n1)"
    echo "- clonesafe: $rev"
} > "$out/environment.md"
# The report names the image by its path, a temporary directory of this run.
exit $rc
