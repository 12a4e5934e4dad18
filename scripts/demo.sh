#!/usr/bin/env bash
# The main job: build the binary, start a one-node cluster on embedded defaults in a
# throwaway data dir, apply the example workload and show it. Ctrl-C stops the node.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
BIN=target/release/omnicloud
DATA=${OMNICLOUD_DATA_DIR:-$(mktemp -d /tmp/omnicloud-demo.XXXXXX)}
PORT=${OMNICLOUD_API_PORT:-7070}
"$BIN" node --data-dir "$DATA" --api-port "$PORT" --bind 127.0.0.1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null' EXIT
export OMNICLOUD_SERVER=http://127.0.0.1:$PORT OMNICLOUD_DATA_DIR=$DATA
for _ in $(seq 100); do curl -sf "$OMNICLOUD_SERVER/readyz" >/dev/null && break; sleep 0.1; done
"$BIN" apply -f examples/web.yaml
"$BIN" get deployments
"$BIN" scale deployment/web --replicas=3
"$BIN" describe deployment/web
echo
echo "node running (data dir $DATA); try: OMNICLOUD_SERVER=$OMNICLOUD_SERVER OMNICLOUD_DATA_DIR=$DATA $BIN get deployments -w"
echo "Ctrl-C to stop."
wait $NODE
