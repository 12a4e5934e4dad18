#!/usr/bin/env bash
# The main job: build the binary and the images, start a one-node cluster on embedded
# defaults in a throwaway data dir, run the example web workload in real containers, scale
# it, and show each replica answering on its own address. Ctrl-C deletes the workload and
# stops the node. Containers need root; without it the workload stays Pending.
#
# Before anything starts, the programs it and the node need (scripts/lib/demo-deps.sh) are
# checked and, as root with apt-get, installed; otherwise it stops naming the packages and
# the command that installs them. `scripts/demo.sh --check-deps` does only that.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/demo-deps.sh
ensure_demo_deps || exit 1
[ "${1:-}" = --check-deps ] && exit 0
# cargo: on PATH, or the rustup install of the user who ran sudo (sudo resets PATH); the
# build then runs as that user, so target/ stays theirs.
build=(cargo build --release)
if ! command -v cargo >/dev/null; then
  home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
  if [ -n "${SUDO_USER:-}" ] && [ -x "$home/.cargo/bin/cargo" ]; then
    build=(sudo -u "$SUDO_USER" env "PATH=$home/.cargo/bin:$PATH" cargo build --release)
  elif [ -x "$HOME/.cargo/bin/cargo" ]; then
    build=("$HOME/.cargo/bin/cargo" build --release)
  else
    echo "demo: error: cargo not found: install Rust with rustup (https://rustup.rs):" >&2
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
  fi
fi
"${build[@]}"
BIN=$PWD/target/release/omnicloud
OMNICLOUD_BIN=$BIN sh scripts/build-images.sh target/images
DATA=${OMNICLOUD_DATA_DIR:-}
OWN_DATA=
if [ -z "$DATA" ]; then DATA=$(mktemp -d /tmp/omnicloud-demo.XXXXXX); OWN_DATA=1; fi
PORT=${OMNICLOUD_API_PORT:-7070}
export OMNICLOUD_SERVER=https://127.0.0.1:$PORT OMNICLOUD_DATA_DIR=$DATA
"$BIN" image import target/images
# Its own session: Ctrl-C reaches this script, whose cleanup stops the node in order.
setsid "$BIN" node --data-dir "$DATA" --api-port "$PORT" --bind 127.0.0.1 &
NODE=$!
# On exit: delete the workload and let the node remove its containers before it stops
# (containers outlive a stopped node by design).
cleanup() {
  if "$BIN" delete deployment/web >/dev/null 2>&1; then
    for _ in $(seq 40); do
      [ "$("$BIN" __container list --root "$DATA/containers" 2>/dev/null)" = "[]" ] && break
      sleep 0.25
    done
  fi
  kill $NODE 2>/dev/null
  wait $NODE 2>/dev/null || true
  # A throwaway data dir goes too (its fencing watchdog ends with it), unless containers
  # are still there to look at.
  if [ -n "$OWN_DATA" ] && [ "$("$BIN" __container list --root "$DATA/containers" 2>/dev/null)" = "[]" ]; then
    rm -rf "$DATA"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 100); do curl -sf --cacert "$DATA/tls/ca.crt" "$OMNICLOUD_SERVER/readyz" >/dev/null && break; sleep 0.1; done
if [ "$(id -u)" != 0 ]; then
  echo "demo: not root, so this node has no agent role and the workload will stay Pending" >&2
fi
"$BIN" apply -f examples/web.yaml --wait --timeout 2m
"$BIN" scale deployment/web --replicas=3 --wait --timeout 2m
"$BIN" get deployments
"$BIN" get instances -o wide
for ip in $("$BIN" get instances -o json | sed -n 's/.*"ip": "\([0-9.]*\)".*/\1/p'); do
  printf "%s -> " "$ip"; curl -s "http://$ip:8080/"
done
"$BIN" logs web-0 --tail 3
echo
echo "node running (data dir $DATA); try: OMNICLOUD_SERVER=$OMNICLOUD_SERVER OMNICLOUD_DATA_DIR=$DATA $BIN get instances -w"
echo "Ctrl-C to stop."
wait $NODE
