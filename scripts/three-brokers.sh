#!/bin/sh
# Starts a three-broker Weir cluster on this machine, in the background.
#
#   scripts/three-brokers.sh            # clients on 7400, 7410, 7420
#   kill $(cat weir-cluster/broker-2.pid)   # stop broker 2
#   scripts/three-brokers.sh stop       # stop them all
#
# Environment: WEIR (the binary, default target/release/weir),
# WEIR_CLUSTER_DIR (data and pid files, default ./weir-cluster),
# WEIR_BASE_PORT (default 7400: broker N listens for clients on
# BASE+10*(N-1) and for peers on that port + 1).
set -eu
WEIR=${WEIR:-target/release/weir}
DIR=${WEIR_CLUSTER_DIR:-weir-cluster}
BASE=${WEIR_BASE_PORT:-7400}

if [ "${1:-start}" = stop ]; then
  for n in 1 2 3; do
    if [ -f "$DIR/broker-$n.pid" ]; then
      kill "$(cat "$DIR/broker-$n.pid")" 2>/dev/null || true
      rm -f "$DIR/broker-$n.pid"
    fi
  done
  exit 0
fi

if [ ! -x "$WEIR" ]; then
  echo "error: $WEIR not found; run 'cargo build --release' first or set WEIR" >&2
  exit 1
fi
mkdir -p "$DIR"
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 11)),3=127.0.0.1:$((BASE + 21))"
for n in 1 2 3; do
  client=$((BASE + 10 * (n - 1)))
  "$WEIR" broker --id "$n" --data-dir "$DIR/broker-$n" \
    --listen "127.0.0.1:$client" --peer-listen "127.0.0.1:$((client + 1))" \
    --peers "$PEERS" --log-level warn >"$DIR/broker-$n.log" 2>&1 &
  echo $! >"$DIR/broker-$n.pid"
  echo "broker $n: clients on 127.0.0.1:$client, log in $DIR/broker-$n.log"
done
echo "export WEIR_BOOTSTRAP=127.0.0.1:$BASE,127.0.0.1:$((BASE + 10)),127.0.0.1:$((BASE + 20))"
