#!/usr/bin/env bash
# Clones on one network segment (scenarios/network.toml): the tiny guest and Debian 12, on both
# backends, two scenarios at once. About 15 minutes under TCG on 2 cores.
# Default output: reports/network/ (the committed reference run). OUT=<dir> writes elsewhere.
exec bash "$(dirname "$0")/reference.sh" scenarios/network.toml reports/network --parallel 2 "$@"
