#!/usr/bin/env bash
# Runs the root-only end-to-end test (tests/e2e.rs). The test cleans up after itself through a
# Drop guard; this trap also covers a run that was killed (Ctrl-C, timeout), where Drop never
# runs. Everything is removed by exact name.
set -euo pipefail
cd "$(dirname "$0")/.."

. ../scripts/lab.sh
lab_trap /sys/fs/bpf/spk spk-pod1 spk-pod2

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root" >&2; exit 1; }
cargo test -p mesh-bpf --test e2e -- --ignored --nocapture --test-threads=1
