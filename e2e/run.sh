#!/usr/bin/env bash
# Runs the end-to-end tests (root): a two-node local cluster of network namespaces, pods made by
# the real CNI plugins, istiod-lite and one ztunnel per node as processes. The test removes what
# it creates when it ends (also on failure); this trap covers a killed run, by exact name.
#
#   e2e/run.sh                  the tests (debug build)
#   e2e/run.sh bench [ARGS]     the data-path benchmark on the same cluster (release build,
#                               ztunnel statically linked; ARGS: --seconds N --runs N
#                               --perf DIR), needs iperf3 and wrk
#   e2e/run.sh bench-waypoint [ARGS]  the waypoint benchmark: direct, nginx, mesh L4 and the
#                               waypoint in one run (release build; ARGS: --seconds N), needs
#                               wrk and nginx (nginx-light)
#   e2e/run.sh soak [ARGS]      the soak with faults on meshctl's local cluster (release build;
#                               ARGS: --minutes N --seed N --cert-ttl D); home /tmp/meshctl-soak
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root" >&2; exit 1; }
for tool in /usr/lib/cni/bridge /usr/lib/cni/host-local; do
    [ -x "$tool" ] || { echo "e2e: $tool missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done
command -v tcpdump >/dev/null || { echo "e2e: tcpdump missing (apt-get install tcpdump)" >&2; exit 1; }
command -v nft >/dev/null || { echo "e2e: nft missing (apt-get install nftables)" >&2; exit 1; }
mode=${1:-test}
if [ "$mode" = bench-waypoint ]; then
    for tool in wrk nginx; do
        command -v $tool >/dev/null || { echo "e2e: $tool missing (apt-get install $tool; nginx: nginx-light)" >&2; exit 1; }
    done
fi
if [ "$mode" = bench ]; then
    shift
    for tool in iperf3 wrk; do
        command -v $tool >/dev/null || { echo "e2e: $tool missing (apt-get install $tool)" >&2; exit 1; }
    done
fi

PODS=(mse-client mse-server mse-local-server mse-legacy mse-dclient mse-dserver
      mse-authz-a mse-authz-b mse-authz-c mse-authz-legacy mse-authz-web mse-authz-db mse-authz-web2
      mse-wclient mse-wserver mse-waypoint mse-pclient mse-pserver mse-nginx)
NETNS=(mse-node1 mse-node2 "${PODS[@]}")
bpffs_before=$(stat -f -c %T /sys/fs/bpf)
cleanup() {
    for ns in "${NETNS[@]}"; do
        if [ -e "/run/netns/$ns" ]; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
    for node in node1 node2; do
        for pod in "${PODS[@]}"; do
            d=/sys/fs/bpf/mse/$node/$pod
            for f in link cfg socks stats; do rm -f "$d/$f"; done
            rmdir "$d" 2>/dev/null || true
        done
        rmdir "/sys/fs/bpf/mse/$node" 2>/dev/null || true
    done
    rmdir /sys/fs/bpf/mse 2>/dev/null || true
    # The meshctl test's cluster: meshctl removes it by the names it recorded.
    for home in /tmp/meshctl-e2e-*; do
        [ -d "$home" ] && target/debug/meshctl --home "$home" down --quiet || true
    done
    # The soak's cluster, by its one home.
    if [ -d /tmp/meshctl-soak ]; then
        target/release/meshctl --home /tmp/meshctl-soak down --quiet || true
    fi
    if [ "$bpffs_before" != bpf_fs ] && [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] \
        && [ -z "$(ls -A /sys/fs/bpf | grep -vx -e maps.debug -e progs.debug)" ]; then
        umount /sys/fs/bpf
    fi
}
trap cleanup EXIT

if [ "$mode" = bench ]; then
    cargo build --release --bins --locked
    # ztunnel as shipped: glibc linked statically, so no shared library's code is resident
    # (1.3 MiB less RSS). --target keeps the flag off build scripts and proc macros.
    host=$(rustc -vV | sed -n 's/^host: //p')
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p ztunnel --target "$host"
    export MESH_E2E_ZTUNNEL="$PWD/target/$host/release/ztunnel"
    cargo bench -p mesh-e2e --locked --bench dataplane -- "$@"
elif [ "$mode" = bench-waypoint ]; then
    shift
    cargo build --release --bins --locked
    cargo bench -p mesh-e2e --locked --bench waypoint -- "$@"
elif [ "$mode" = soak ]; then
    shift
    cargo build --release --bins --locked
    cargo bench -p mesh-e2e --locked --bench soak -- "$@"
else
    cargo build --bins --locked
    cargo test -p mesh-e2e --locked --test ambient -- --ignored --nocapture --test-threads=1
    cargo test -p mesh-e2e --locked --test authorization -- --ignored --nocapture --test-threads=1
    cargo test -p mesh-e2e --locked --test meshctl -- --ignored --nocapture --test-threads=1
fi
