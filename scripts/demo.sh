#!/usr/bin/env bash
# The mesh on this machine in one command (root): installs the Debian packages it needs when
# missing, builds the binaries, brings up a 2-node local cluster (`meshctl up`) and deploys the
# sample app with a short tour (`meshctl demo`). It leaves the cluster running; the last lines
# say what to try next, and `sudo target/debug/meshctl down` removes everything.
#
#   sudo scripts/demo.sh               up + demo + tour
#   sudo scripts/demo.sh --no-tour     up + demo only
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the local cluster makes network namespaces and loads eBPF: run it as root (sudo $0)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install stable Rust (rustup) first" >&2
  exit 1
fi

# System packages (scripts/packages.sh), installed with apt when missing.
. scripts/packages.sh
install_packages build demo

echo "== building (cargo build --bins)"
cargo build --bins --locked

echo "== meshctl up"
target/debug/meshctl up --nodes 2
echo "== meshctl demo"
target/debug/meshctl demo "$@"
echo
echo "meshctl is $PWD/target/debug/meshctl; to type \`meshctl\` as above (also under sudo):"
echo "  sudo ln -sf $PWD/target/debug/meshctl /usr/local/bin/meshctl"
