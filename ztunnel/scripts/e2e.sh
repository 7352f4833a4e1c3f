#!/usr/bin/env bash
# Runs the root-only data-path test (tests/inpod_e2e.rs), or with `bench` the data-path
# benchmark (benches/datapath.rs). Both clean up through a Drop guard; this trap also covers a
# killed run. Everything is removed by exact name.
set -euo pipefail
cd "$(dirname "$0")/../.."

NETNS=(zte-pod1 zte-pod2)
PIN_ROOT=/sys/fs/bpf/zte
bpffs_before=$(stat -f -c %T /sys/fs/bpf)

cleanup() {
    for ns in "${NETNS[@]}"; do
        d=$PIN_ROOT/$ns
        for f in link cfg socks stats; do rm -f "$d/$f"; done
        rmdir "$d" 2>/dev/null || true
    done
    rmdir "$PIN_ROOT" 2>/dev/null || true
    for ns in "${NETNS[@]}"; do
        if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
    done
    if [ "$bpffs_before" != bpf_fs ] && [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ]; then
        umount /sys/fs/bpf
    fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root" >&2; exit 1; }
case "${1:-test}" in
    test) cargo test -p ztunnel --test inpod_e2e -- --ignored --nocapture --test-threads=1 ;;
    bench) cargo bench -p ztunnel --bench datapath ;;
    *) echo "usage: $0 [test|bench]" >&2; exit 2 ;;
esac
