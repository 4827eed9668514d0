#!/usr/bin/env bash
# The safety matrix: every strategy on both backends on the tiny guest (scenarios/matrix.toml).
# Default output: reports/matrix/ (the committed reference run). CI passes OUT=<tmp dir>.
exec bash "$(dirname "$0")/reference.sh" scenarios/matrix.toml reports/matrix "$@"
