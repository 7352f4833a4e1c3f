#!/usr/bin/env bash
# Runs every test of the project: build, lints (when the toolchain has them), unit tests and
# integration tests. Works on a fresh machine with stable Rust, gcc and python3: everything
# else comes from crates.io through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install stable Rust (rustup) first" >&2
  exit 1
fi

# System packages: clang and libbpf's headers build the eBPF program (bpf/); iproute2 and python3
# drive the capture test. Installed with apt when missing (as root), else we say what to install.
need_pkgs=()
command -v clang >/dev/null || need_pkgs+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || need_pkgs+=(linux-libc-dev)
command -v ip >/dev/null || need_pkgs+=(iproute2)
# The end-to-end tests (root) make pods with the real CNI plugins, capture the underlay with
# tcpdump and check with nft that no iptables/nftables rule exists.
if [ "$(id -u)" = 0 ]; then
  [ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
  command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
  command -v nft >/dev/null || need_pkgs+=(nftables)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need_pkgs[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "missing system packages: ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]}) and run again" >&2
    exit 1
  fi
fi

echo "== build"
cargo build --workspace --all-targets --locked

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
else
  echo "== cargo fmt not installed; skipping the format check"
fi

if cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "== cargo clippy not installed; skipping lints"
fi

echo "== tests"
cargo test --workspace --locked

# The capture test needs root: it creates network namespaces, routing rules and bpffs pins
# (and removes them, by exact name, even when it fails).
if [ "$(id -u)" = 0 ]; then
  echo "== eBPF capture end to end (root)"
  bash bpf/scripts/e2e.sh
  echo "== ztunnel data path end to end: capture + HBONE + authorization (root)"
  bash ztunnel/scripts/e2e.sh
  echo "== two-node cluster end to end: CNI chain, ztunnel processes, policies, restarts (root)"
  bash e2e/run.sh
else
  echo "== not root: skipping the eBPF capture test (bpf/scripts/e2e.sh)"
fi
