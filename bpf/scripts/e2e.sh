#!/usr/bin/env bash
# Runs the root-only end-to-end test (tests/e2e.rs). The test cleans up after itself through a
# Drop guard; this trap also covers a run that was killed (Ctrl-C, timeout), where Drop never
# runs. Everything is removed by exact name.
set -euo pipefail
cd "$(dirname "$0")/.."

NETNS=(spk-pod1 spk-pod2)
PIN_ROOT=/sys/fs/bpf/spk
PIN_DIR=$PIN_ROOT/spk-pod1
bpffs_before=$(stat -f -c %T /sys/fs/bpf)

cleanup() {
    for f in link cfg socks stats; do rm -f "$PIN_DIR/$f"; done
    rmdir "$PIN_DIR" 2>/dev/null || true
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
cargo test -p mesh-bpf --test e2e -- --ignored --nocapture --test-threads=1
