#!/usr/bin/env bash
# Runs the root-only data-path test (tests/inpod_e2e.rs), or with `bench` the data-path
# benchmark (benches/datapath.rs). Both clean up through a Drop guard; this trap also covers a
# killed run. Everything is removed by exact name.
set -euo pipefail
cd "$(dirname "$0")/../.."

. scripts/lab.sh
lab_trap /sys/fs/bpf/zte zte-pod1 zte-pod2

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root" >&2; exit 1; }
case "${1:-test}" in
    test) cargo test -p ztunnel --test inpod_e2e -- --ignored --nocapture --test-threads=1 ;;
    bench) cargo bench -p ztunnel --bench datapath ;;
    *) echo "usage: $0 [test|bench]" >&2; exit 2 ;;
esac
