#!/bin/sh
# Broker memory under overload: three fresh brokers on loopback (RF 3,
# fsync always), then `weir bench produce` with P producers as fast as they
# can (acks all); prints records/s and each broker's peak resident memory
# (VmHWM) and its resident memory once the run is over (VmRSS).
#
#   scripts/overload-memory.sh                 # P = 1 4 16 64
#   PRODUCERS="16 64" RECORDS=1500000 SIZE=1024 scripts/overload-memory.sh
#
# Environment: WEIR (default target/release/weir), PRODUCERS, RECORDS
# (default 1500000), SIZE (record bytes, default 1024), BROKER_CONFIG (a
# config file given to every broker, e.g. max_request_bytes_in_flight).
# Ports 19400-19421; data in a temporary directory removed at the end.
set -u
W=${WEIR:-target/release/weir}
B=19400
PEERS="1=127.0.0.1:$((B + 1)),2=127.0.0.1:$((B + 11)),3=127.0.0.1:$((B + 21))"
X=""
if [ -n "${BROKER_CONFIG:-}" ]; then X="--config $BROKER_CONFIG"; fi
export WEIR_BOOTSTRAP="127.0.0.1:$B,127.0.0.1:$((B + 10)),127.0.0.1:$((B + 20))"
mem() { for p in $2; do awk -v k="$1:" '$1 == k {printf "%d ", $2 / 1024}' "/proc/$p/status"; done; }
for P in ${PRODUCERS:-1 4 16 64}; do
  D=$(mktemp -d /tmp/weir-overload.XXXX)
  PIDS=""
  for n in 1 2 3; do
    c=$((B + 10 * (n - 1)))
    # shellcheck disable=SC2086
    "$W" broker --id "$n" --data-dir "$D/b$n" --listen "127.0.0.1:$c" --peer-listen "127.0.0.1:$((c + 1))" \
      --peers "$PEERS" --log-level warn $X >"$D/b$n.log" 2>&1 &
    PIDS="$PIDS $!"
  done
  for _ in $(seq 100); do
    "$W" cluster describe --output json 2>/dev/null | grep -q '"controller_id":[1-9]' && break
    sleep 0.2
  done
  sleep 1
  rate=$(timeout 300 "$W" bench produce --topic overload --partitions 3 --replication-factor 3 \
    --records "${RECORDS:-1500000}" --record-size "${SIZE:-1024}" --acks all --producers "$P" \
    --output json 2>/dev/null | grep -o '"records_per_sec": *[0-9.]*' | head -n 1 | grep -o '[0-9.]*$')
  echo "producers $P: ${rate:-failed} records/s; peak MiB per broker: $(mem VmHWM "$PIDS"); after: $(mem VmRSS "$PIDS")"
  kill $PIDS
  wait
  rm -rf "$D"
done
