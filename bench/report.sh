#!/usr/bin/env bash
# Runs every measurement of BENCHMARKS.md on this machine and prints one JSON line per result to
# stdout (progress on stderr). Needs the workspace built (`cargo build --workspace --locked`), and for
# the read-path comparison `wrk` and `nginx` (apt-get install -y wrk nginx). About 12 minutes.
#
#   bench/report.sh [GROWTH_ENTRIES]        # default 10,000,000
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}/debug"
growth_entries="${1:-10000000}"
work="$(mktemp -d)"
trap 'pkill -P $$ 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT

json() { "$@" --json --quiet | tail -1; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
say() { echo "== $*" >&2; }

say "transport ceiling (20 s)"
ceiling=$(json "$bin/cairn-bench" ceiling --duration 20)
echo "{\"ceiling\":$ceiling}"

say "embedded, max rate (60 s)"
max=$(json "$bin/cairn-bench" write --start embedded --duration 60)
echo "{\"embedded_max\":$max}"
half=$(python3 -c "print(int(float('$(field "$max" entries_per_sec)') / 2))")

say "embedded, half rate $half/s, sequenced (30 s)"
echo "{\"embedded_half_sequenced\":$(json "$bin/cairn-bench" write --start embedded --duration 30 --rate "$half")}"
say "embedded, half rate $half/s, published (30 s)"
echo "{\"embedded_half_published\":$(json "$bin/cairn-bench" write --start embedded --duration 30 --rate "$half" --wait published)}"

say "3-node cluster, max rate (30 s)"
echo "{\"cluster3_max\":$(json "$bin/cairn-bench" write --start cluster3 --duration 30)}"
say "3 nodes, 3 shards, every leader on node 1 (30 s)"
echo "{\"cluster3x3_packed_max\":$(json "$bin/cairn-bench" write --start cluster3x3-packed --duration 30)}"
say "3 nodes, 3 shards, one leader per node (30 s)"
echo "{\"cluster3x3_spread_max\":$(json "$bin/cairn-bench" write --start cluster3x3 --duration 30)}"

say "Sigstore shard: Rekor v2 CreateEntry, pre-signed P-256 and Ed25519ph entries (2 x 20 s)"
echo "{\"rekor_p256\":$(json "$bin/cairn-bench" rekor --start embedded --duration 20)}"
echo "{\"rekor_ed25519ph\":$(json "$bin/cairn-bench" rekor --start embedded --duration 20 --key ed25519ph)}"

say "consumers: monitor catch-up, search index, search latency (100,000 entries)"
echo "{\"consumer\":$(json "$bin/cairn-bench" consumer --entries 100000 --rate 200 --duration 10)}"

say "growth to $growth_entries entries"
mkdir -p "$work/growth"
(cd "$work/growth" && CAIRN_LOG=warn exec "$bin/cairn" serve --data-dir "$work/growth/data" \
  --grpc-addr 127.0.0.1:7410 --http-addr 127.0.0.1:7490 --raft-addr 127.0.0.1:7411 >serve.out 2>serve.err) &
for _ in $(seq 100); do grep -q "cairn serving" "$work/growth/serve.out" 2>/dev/null && break; sleep 0.1; done
pid=$(pgrep -f "cairn serve --data-dir $work/growth/data")
rate=$(field "$max" entries_per_sec)
secs=$(python3 -c "print(int($growth_entries / (0.6 * float('$rate'))) + 5)")
( while kill -0 "$pid" 2>/dev/null; do ps -o rss= -p "$pid" >>"$work/rss" || true; sleep 5; done ) &
growth=$(json "$bin/cairn-bench" write --server http://127.0.0.1:7410 --duration "$secs")
rss=$(python3 -c "import sys; v=[int(l) for l in open('$work/rss') if l.strip()]; print('{\"rss_kib_first\":%d,\"rss_kib_max\":%d,\"rss_kib_last\":%d,\"samples\":%d}' % (v[0], max(v), v[-1], len(v)))")
echo "{\"growth\":$growth,\"growth_rss\":$rss}"
sleep 2
size=$(curl -s http://127.0.0.1:7490/logs/1/checkpoint | sed -n 2p)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

if command -v wrk >/dev/null && command -v nginx >/dev/null; then
  say "read path: tile-server vs nginx on the same $size-entry directory"
  (cd "$work/growth" && CAIRN_LOG=warn exec "$bin/cairn" serve --data-dir "$work/growth/data" --roles tiles \
    --http-addr 127.0.0.1:7490 >tiles.out 2>tiles.err) &
  for _ in $(seq 100); do grep -q "cairn serving" "$work/growth/tiles.out" 2>/dev/null && break; sleep 0.1; done
  cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on; open_file_cache max=100000 inactive=60s;
  default_type application/octet-stream;
  server { listen 127.0.0.1:8089; root $work/growth/data/tiles;
    location / { add_header Cache-Control "public, max-age=31536000, immutable"; etag on; } }
}
NGINX
  nginx -c "$work/nginx.conf"
  full=$((size / 256))
  cat >"$work/tiles.lua" <<LUA
local n = 0
local function enc(i)
  local g = { string.format("%03d", i % 1000) }
  i = math.floor(i / 1000)
  while i > 0 do table.insert(g, 1, string.format("x%03d", i % 1000)); i = math.floor(i / 1000) end
  return table.concat(g, "/")
end
request = function() n = n + 1; return wrk.format("GET", "/logs/1/tile/0/" .. enc(n % $full)) end
LUA
  cat >"$work/proofs.lua" <<LUA
math.randomseed(os.time())
request = function() return wrk.format("GET", "/logs/1/proof/inclusion/$size/" .. math.random(0, $size - 1)) end
LUA
  rps() { wrk -t2 -c64 -d10s "$@" | awk '/Requests\/sec/ {print $2}'; }
  for round in 1 2 3; do
    th=$(rps http://127.0.0.1:7490/logs/1/tile/0/000); nh=$(rps http://127.0.0.1:8089/logs/1/tile/0/000)
    ta=$(rps -s "$work/tiles.lua" http://127.0.0.1:7490); na=$(rps -s "$work/tiles.lua" http://127.0.0.1:8089)
    echo "{\"read_round\":$round,\"tree_size\":$size,\"hot_tile\":{\"tile_server\":$th,\"nginx\":$nh},\"all_tiles\":{\"tile_server\":$ta,\"nginx\":$na}}"
  done
  rps -s "$work/proofs.lua" http://127.0.0.1:7490 >/dev/null  # warm the cache
  echo "{\"inclusion_proofs_per_sec\":$(rps -s "$work/proofs.lua" http://127.0.0.1:7490),\"tree_size\":$size}"
  pkill -TERM -f "cairn serve --data-dir $work/growth/data" || true
fi
say "done"
