#!/usr/bin/env bash
# Starts istiod-lite on the example config (examples/demo) and shows what it serves:
# the objects it read, the xDS resources, and the status of every policy.
# Stops with Ctrl-C; with --once it shows everything and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

XDS_PORT=${XDS_PORT:-15012}
MON_PORT=${MON_PORT:-15014}
once=false
[ "${1:-}" = "--once" ] && once=true

echo "== building istiod-lite (release)"
cargo build --release --locked -p istiod-lite

state=$(mktemp -d /tmp/istiod-lite-demo.XXXXXX)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$state"
}
trap cleanup EXIT INT TERM

# A token for each demo node's ztunnel (what `meshctl up` will write for real nodes).
cat > "$state/tokens.yaml" <<TOKENS
tokens:
- token: demo-node1-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  node: node1
- token: demo-node2-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  node: node2
TOKENS

echo "== starting istiod-lite: xDS+CA on 127.0.0.1:$XDS_PORT, monitoring on 127.0.0.1:$MON_PORT"
./target/release/istiod-lite \
  --config-dir examples/demo \
  --state-dir "$state" \
  --xds-addr "127.0.0.1:$XDS_PORT" \
  --monitoring-addr "127.0.0.1:$MON_PORT" &
pid=$!

get() {
  python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode(), end="")
    sys.exit(1)
except Exception as e:
    sys.exit(1)
PY
}

for _ in $(seq 1 100); do
  if get "http://127.0.0.1:$MON_PORT/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "istiod-lite exited; see the log above" >&2; exit 1; fi
  sleep 0.1
done
get "http://127.0.0.1:$MON_PORT/ready"

echo "== objects read from examples/demo (GET /debug/config)"
get "http://127.0.0.1:$MON_PORT/debug/config"
echo "== xDS resources served (GET /debug/xds)"
get "http://127.0.0.1:$MON_PORT/debug/xds"
echo "== policy and waypoint status ($state/status)"
for f in $(find "$state/status" -name '*.yaml' | sort); do
  echo "--- ${f#"$state/status/"}"
  cat "$f"
done

if $once; then exit 0; fi
cat <<TXT

istiod-lite is serving. Try:
  curl -s http://127.0.0.1:$MON_PORT/metrics | grep -E '^(pilot|citadel|istiod_lite)'
  edit examples/demo/*.yaml and watch the status change under $state/status
The mesh root certificate is $state/ca/root-cert.pem; node tokens are in $state/tokens.yaml.
Ctrl-C stops it and removes $state.
TXT
wait "$pid"
