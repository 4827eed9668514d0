#!/usr/bin/env bash
# The main job: set up (idempotent) and run the default suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec target/release/clonesafe run scenarios/smoke.toml --out "${OUT:-clonesafe-out}" "$@"
