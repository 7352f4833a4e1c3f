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

# System packages (scripts/packages.sh): what builds the eBPF program and drives the capture
# test, and as root what the end-to-end tests use. Installed with apt when missing (as root),
# else we say what to install.
. scripts/packages.sh
if [ "$(id -u)" = 0 ]; then
  install_packages build e2e
else
  install_packages build
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
