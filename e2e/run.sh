#!/usr/bin/env bash
# Runs the end-to-end tests (root): a two-node local cluster of network namespaces, pods made by
# the real CNI plugins, istiod-lite and one ztunnel per node as processes. The test removes what
# it creates when it ends (also on failure); this trap covers a killed run, by exact name.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root" >&2; exit 1; }
for tool in /usr/lib/cni/bridge /usr/lib/cni/host-local; do
    [ -x "$tool" ] || { echo "e2e: $tool missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done
command -v tcpdump >/dev/null || { echo "e2e: tcpdump missing (apt-get install tcpdump)" >&2; exit 1; }
command -v nft >/dev/null || { echo "e2e: nft missing (apt-get install nftables)" >&2; exit 1; }

NETNS=(mse-node1 mse-node2 mse-client mse-server mse-local-server mse-legacy)
bpffs_before=$(stat -f -c %T /sys/fs/bpf)
cleanup() {
    for ns in "${NETNS[@]}"; do
        if [ -e "/run/netns/$ns" ]; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
    for node in node1 node2; do
        for pod in mse-client mse-server mse-local-server mse-legacy; do
            d=/sys/fs/bpf/mse/$node/$pod
            for f in link cfg socks stats; do rm -f "$d/$f"; done
            rmdir "$d" 2>/dev/null || true
        done
        rmdir "/sys/fs/bpf/mse/$node" 2>/dev/null || true
    done
    rmdir /sys/fs/bpf/mse 2>/dev/null || true
    if [ "$bpffs_before" != bpf_fs ] && [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ]; then
        umount /sys/fs/bpf
    fi
}
trap cleanup EXIT

cargo build --bins --locked
cargo test -p mesh-e2e --locked --test ambient -- --ignored --nocapture --test-threads=1
