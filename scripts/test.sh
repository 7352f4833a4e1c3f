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
