#!/bin/sh
# e2e latency on three fresh brokers (RF 3, fsync always) with the CPU it
# cost, optionally right after (b)'s two produce runs on the same brokers.
#
#   scripts/e2e-cpu.sh RATE [BIN] [after-b]
#
# Prints `weir bench e2e`'s JSON summary, the brokers' user and system CPU
# over the e2e run (from /proc/PID/stat) and the machine's split of CPU time
# over it (from /proc/stat: user, system, idle, iowait, softirq, steal).
# BIN defaults to target/release/weir; ports 18400-18421; data in a
# temporary directory removed at the end. BROKER_CONFIG, if set, is passed
# to every broker as --config (e.g. a file with page_cache_keep_bytes).
set -u
R=$1 W=${2:-target/release/weir} MODE=${3:-fresh}
D=$(mktemp -d /tmp/weir-e2e.XXXX); B=18400
peers="1=127.0.0.1:$((B+1)),2=127.0.0.1:$((B+11)),3=127.0.0.1:$((B+21))"
P="" X=""
if [ -n "${BROKER_CONFIG:-}" ]; then X="--config $BROKER_CONFIG"; fi
for i in 1 2 3; do
  p=$((B + 10 * (i - 1)))
  "$W" broker --id "$i" --data-dir "$D/d$i" --listen "127.0.0.1:$p" --peer-listen "127.0.0.1:$((p + 1))" \
    --peers "$peers" --log-level warn --fsync always $X >"$D/b$i.log" 2>&1 &
  P="$P $!"
done
export WEIR_BOOTSTRAP="127.0.0.1:$B,127.0.0.1:$((B + 10)),127.0.0.1:$((B + 20))"
for _ in $(seq 100); do
  "$W" cluster describe --output json 2>/dev/null | grep -q '"controller_id":[1-9]' && break
  sleep 0.2
done
sleep 1
if [ "$MODE" = after-b ]; then
  "$W" bench produce --topic b --partitions 3 --replication-factor 3 --records 3000000 \
    --record-size 100 --acks all --output json 2>/dev/null | cut -c1-70
  "$W" bench produce --topic b1k --partitions 3 --replication-factor 3 --records 750000 \
    --record-size 1024 --acks all --output json 2>/dev/null | cut -c1-70
fi
cpu() { for p in $P; do awk '{printf "%d %d ", $14, $15}' "/proc/$p/stat"; done; }
head -1 /proc/stat >"$D/s0"; cpu >"$D/c0"
timeout 120 "$W" bench e2e --topic d --partitions 3 --replication-factor 3 --rate "$R" \
  --records $((R * 10)) --record-size 100 --acks all --output json 2>/dev/null | sed 's/,"brokers".*/}/'
head -1 /proc/stat >"$D/s1"; cpu >"$D/c1"
paste -d' ' "$D/c0" "$D/c1" | awk '{printf "brokers: user %.2f sys %.2f CPU-s\n", ($7-$1+$9-$3+$11-$5)/100, ($8-$2+$10-$4+$12-$6)/100}'
paste -d' ' "$D/s0" "$D/s1" | awk '{printf "machine: user %.1f sys %.1f idle %.1f iowait %.1f softirq %.1f steal %.1f CPU-s\n", ($13-$2)/100, ($15-$4)/100, ($16-$5)/100, ($17-$6)/100, ($19-$8)/100, ($20-$9)/100}'
kill $P; wait; rm -rf "$D"
