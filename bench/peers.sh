#!/usr/bin/env bash
# Cairn and Trillian Tessera's POSIX conformance log, side by side, both driven by Tessera's own load
# tool (`hammer`), on this machine and in one run: so "faster than Tessera" is a ratio measured here.
#
#   bench/peers.sh [--duration SECS] [--rate OPS] [--json]
#
# Installs, pinned, from the Go module proxy: github.com/transparency-dev/tessera@v1.0.4's
# internal/hammer and cmd/conformance/posix (as tessera-hammer and tessera-posix in
# ~/.cache/cairn-go/bin). Needs Go, python3, curl and the workspace built
# (`cargo build --workspace --locked`; the `cairn` binary of $CARGO_TARGET_DIR, default
# ~/.cache/cairn-target).
#
# For each log, the hammer runs twice, SECS seconds each (default 60), with its readers on (4 full
# and 4 random, 20 reads/s: its defaults), leaves of at least 256 bytes and its default duplicate
# chance (0.1):
#   equal  - the same write rate for both (OPS/s, default 3000; 1024 writers), with -v=2 so that
#            integration latency can be read from its log;
#   max    - as fast as each log goes (4096 writers, 100000 ops/s offered).
# Each log runs on one CPU and the hammer on another (taskset, when there are two or more), so that
# a log's number is what one core gives and the load tool never competes with it. Leaves/s comes
# from the logs' own checkpoints (size growth over the run); CPU from /proc (user + system).
# Integration latency: from the hammer's "Wrote leaf at index N" (the /add answer) to its first
# "Updated checkpoint ... to M" with M > N; the hammer polls the checkpoint every 500 ms.
# After the runs, both logs are read whole over HTTP and checked for repeated entries (a duplicate
# that got a new index would show as one).
#
# The hammer checks every checkpoint's signature and a consistency proof between successive ones
# (it exits 255 on an inconsistent pair) and parses every entry bundle its readers fetch; it does not
# check that a duplicate got its original index (the audit above does), nor inclusion proofs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=60
RATE=3000
JSON=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    *) echo "usage: bench/peers.sh [--duration SECS] [--rate OPS] [--json]" >&2; exit 2 ;;
  esac
done

TESSERA=github.com/transparency-dev/tessera
TESSERA_VERSION=v1.0.4
say() { echo "== $*" >&2; }
NEED_GO_FOR="Tessera's hammer and POSIX log"
# shellcheck source=scripts/go-tools.sh
. scripts/go-tools.sh
need_go

install_tool() {
  local pkg=$1 built=$2 name=$3
  local dest="$GOBIN/$name"
  if [ -x "$dest" ] && [ "$(go_main_version "$dest")" = "$TESSERA_VERSION" ]; then return 0; fi
  say "installing $pkg@$TESSERA_VERSION"
  go_install_pinned "$pkg" "$TESSERA_VERSION" "$built" "$dest" "$name" || {
    say "FAILED to build $pkg@$TESSERA_VERSION; see above"; exit 1; }
}
install_tool "$TESSERA/internal/hammer" hammer tessera-hammer
install_tool "$TESSERA/cmd/conformance/posix" posix tessera-posix
HAMMER="$GOBIN/tessera-hammer"
POSIX="$GOBIN/tessera-posix"

CAIRN="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}/debug/cairn"
[ -x "$CAIRN" ] || { say "no $CAIRN: build first (cargo build --workspace --locked)"; exit 1; }

if [ "$(nproc)" -ge 2 ]; then
  LOG_CPU=(taskset -c 1); HAMMER_CPU=(taskset -c 0); PINNED="log on CPU 1, hammer on CPU 0"
else
  LOG_CPU=(); HAMMER_CPU=(); PINNED="not pinned (one CPU)"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_checkpoint() {
  local url=$1 deadline=$((SECONDS + 60))
  until curl -sf "${url}checkpoint" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { say "no checkpoint at ${url}checkpoint after 60 s"; return 1; }
    sleep 0.2
  done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tree_size() { curl -sf "${1}checkpoint" | sed -n 2p; }

# Tessera's POSIX log, with a key made by `cairn keygen` (the same note key format).
tport=$(free_port)
tessera_vkey=$("$CAIRN" keygen --origin bench.tessera.example --out "$work/tessera.key")
"${LOG_CPU[@]}" "$POSIX" --storage_dir "$work/tessera" --listen "127.0.0.1:$tport" \
  --private_key "$work/tessera.key" >"$work/tessera.log" 2>&1 &
tessera_pid=$!; pids+=("$tessera_pid")
TESSERA_URL="http://127.0.0.1:$tport/"

# Cairn's embedded default; shard 1 (opaque) is the log under test: its read path is /logs/1/ and
# `POST /logs/1/add` writes to it.
"${LOG_CPU[@]}" env CAIRN_LOG=warn "$CAIRN" serve --data-dir "$work/cairn" \
  --grpc-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)" \
  --raft-addr "127.0.0.1:$(free_port)" >"$work/cairn.out" 2>"$work/cairn.log" &
cairn_pid=$!; pids+=("$cairn_pid")
deadline=$((SECONDS + 60))
until grep -q '^cairn serving' "$work/cairn.out" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { say "cairn serve did not start"; cat "$work/cairn.log" >&2; exit 1; }
  sleep 0.2
done
cairn_http=$(sed -n 's/.* http=\([^ ]*\) .*/\1/p' "$work/cairn.out")
cairn_vkey=$(sed -n 's/^shard 1 .*vkey=\([^ ]*\).*/\1/p' "$work/cairn.out")
CAIRN_URL="http://$cairn_http/logs/1/"
wait_checkpoint "$TESSERA_URL"
wait_checkpoint "$CAIRN_URL"

results=()
# run NAME LOG_URL VKEY LOG_PID MODE WRITERS OPS VERBOSITY
run() {
  local name=$1 url=$2 vkey=$3 pid=$4 mode=$5 writers=$6 ops=$7 v=$8
  local hlog="$work/hammer-$name-$mode.log"
  say "$name, $mode: $writers writers, $ops writes/s offered, ${DURATION}s"
  local n0 c0 t0 n1 c1 t1 hc rc=0
  n0=$(tree_size "$url"); c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  "${HAMMER_CPU[@]}" "$HAMMER" --log_url "$url" --log_public_key "$vkey" --show_ui=false \
    --num_writers "$writers" --max_write_ops "$ops" --leaf_min_size 256 \
    --max_runtime "${DURATION}s" -v="$v" >"$hlog" 2>&1 &
  local hp=$!
  # The hammer's own CPU, sampled just before it exits.
  sleep $((DURATION - 1)); hc=$(cpu_ticks "$hp" 2>/dev/null || echo 0)
  wait "$hp" || rc=$?
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid"); n1=$(tree_size "$url")
  # Exit 1 with "Max runtime reached" is the normal end of a timed run; 255 is an inconsistent
  # checkpoint, 2 a reader's panic.
  local verdict=ok
  if [ "$rc" != 0 ] && ! { [ "$rc" = 1 ] && grep -q 'Max runtime reached' "$hlog"; }; then
    verdict="hammer exited $rc"
    tail -n 20 "$hlog" >&2
  fi
  results+=("$(python3 - "$name" "$mode" "$writers" "$ops" "$n0" "$n1" "$t0" "$t1" "$c0" "$c1" "$hc" \
    "$((DURATION - 1))" "$verdict" "$hlog" <<'EOF'
import json, re, sys
from datetime import datetime
name, mode, writers, ops, n0, n1, t0, t1, c0, c1, hc, hsecs, verdict, hlog = sys.argv[1:]
wall = float(t1) - float(t0)
hz = 100.0
line = re.compile(r'^([IWEF])(\d{4}) (\d\d:\d\d:\d\d\.\d+)\s+\d+ (\S+)\] (.*)$')
def ts(md, hms):
    return datetime.strptime(f"{md} {hms}", "%m%d %H:%M:%S.%f").timestamp()
acks, updates, warnings, pushbacks = [], [], 0, 0
for l in open(hlog, errors="replace"):
    m = line.match(l)
    if not m:
        continue
    sev, md, hms, _, msg = m.groups()
    if sev in "WE":
        warnings += 1
    if "received pushback" in msg:
        pushbacks += int(msg.split()[0])
    if msg.startswith("Wrote leaf at index "):
        acks.append((ts(md, hms), int(msg.rsplit(" ", 1)[1])))
    elif msg.startswith("Updated checkpoint from "):
        updates.append((ts(md, hms), int(msg.rsplit(" ", 1)[1])))
lat = []
if acks and updates:
    updates.sort()
    seen = 0  # largest size seen so far
    # For each ack (in time order), the first checkpoint update after it that covers the index; an
    # index already covered when acknowledged (a duplicate of an old leaf) has no latency to measure.
    acks.sort()
    k = 0
    for t, idx in acks:
        while k < len(updates) and updates[k][0] <= t:
            seen = max(seen, updates[k][1]); k += 1
        if idx < seen:
            continue
        j = k
        while j < len(updates) and updates[j][1] <= idx:
            j += 1
        if j < len(updates):
            lat.append(updates[j][0] - t)
lat.sort()
pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None
print(json.dumps({
    "log": name, "mode": mode, "writers": int(writers), "offered_ops": int(ops),
    "seconds": round(wall, 1), "leaves": int(n1) - int(n0),
    "leaves_per_sec": round((int(n1) - int(n0)) / wall),
    "log_cpu_cores": round((float(c1) - float(c0)) / hz / wall, 2),
    "hammer_cpu_cores": round(float(hc) / hz / float(hsecs), 2) if float(hc) > 0 else None,
    "integration_p50_s": pct(0.5), "integration_p99_s": pct(0.99),
    "latency_samples": len(lat), "pushbacks": pushbacks, "warnings": warnings,
    "hammer": verdict,
}))
EOF
)")
  say "${results[-1]}"
}

run tessera "$TESSERA_URL" "$tessera_vkey" "$tessera_pid" equal 1024 "$RATE" 2
run cairn "$CAIRN_URL" "$cairn_vkey" "$cairn_pid" equal 1024 "$RATE" 2
run tessera "$TESSERA_URL" "$tessera_vkey" "$tessera_pid" max 4096 100000 1
run cairn "$CAIRN_URL" "$cairn_vkey" "$cairn_pid" max 4096 100000 1

# Every entry of both logs, read back over HTTP: repeated entries mean a duplicate got a new index.
audit() {
  python3 - "$1" "$2" <<'EOF'
import json, sys, urllib.request
name, url = sys.argv[1:]
size = int(urllib.request.urlopen(url + "checkpoint").read().decode().split("\n")[1])
def path(n):  # c2sp.org/tlog-tiles: x001/x234/067
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.insert(0, f"x{n % 1000:03d}"); n //= 1000
    return "/".join(parts)
seen, repeats, read = set(), 0, 0
for b in range((size + 255) // 256):
    w = min(256, size - b * 256)
    u = url + "tile/entries/" + path(b) + (f".p/{w}" if w < 256 else "")
    data = urllib.request.urlopen(u).read()
    i = 0
    for _ in range(w):
        n = int.from_bytes(data[i:i + 2], "big"); e = data[i + 2:i + 2 + n]; i += 2 + n
        repeats += e in seen
        seen.add(e)
        read += 1
print(json.dumps({"log": name, "audit_entries": read, "audit_tree_size": size, "repeated_entries": repeats}))
EOF
}
audits=("$(audit tessera "$TESSERA_URL")" "$(audit cairn "$CAIRN_URL")")

if [ "$JSON" = 1 ]; then
  printf '%s\n' "${results[@]}" "${audits[@]}"
  exit 0
fi
python3 - "$PINNED" "$(nproc)" "${results[@]}" "${audits[@]}" <<'EOF'
import json, sys
pinned, cpus, *rows = sys.argv[1:]
rows = [json.loads(r) for r in rows]
runs = [r for r in rows if "mode" in r]
audits = {r["log"]: r for r in rows if "audit_entries" in r}
print(f"# Tessera's hammer against Tessera POSIX and Cairn ({cpus} CPUs; {pinned})\n")
print("| log | run | leaves/s | log CPU (cores) | hammer CPU | integration p50 / p99 (s) | pushbacks | hammer |")
print("|---|---|---:|---:|---:|---|---:|---|")
for r in runs:
    lat = f"{r['integration_p50_s']} / {r['integration_p99_s']}" if r["latency_samples"] else "-"
    print(f"| {r['log']} | {r['mode']} ({r['writers']} writers, {r['offered_ops']}/s offered) | "
          f"{r['leaves_per_sec']} | {r['log_cpu_cores']} | {r['hammer_cpu_cores']} | {lat} | "
          f"{r['pushbacks']} | {r['hammer']} |")
by = {(r["log"], r["mode"]): r for r in runs}
for mode in ("equal", "max"):
    t, c = by.get(("tessera", mode)), by.get(("cairn", mode))
    if t and c and t["leaves_per_sec"]:
        print(f"\nCairn / Tessera at {mode}: {c['leaves_per_sec'] / t['leaves_per_sec']:.2f}x leaves/s", end="")
        if t["log_cpu_cores"] and c["log_cpu_cores"]:
            per_t = t["leaves_per_sec"] / t["log_cpu_cores"]
            per_c = c["leaves_per_sec"] / c["log_cpu_cores"]
            print(f"; per core of the log: {per_c:.0f} vs {per_t:.0f} leaves/s ({per_c / per_t:.2f}x)", end="")
        print()
print()
for name, a in audits.items():
    print(f"{name}: read {a['audit_entries']} entries of {a['audit_tree_size']}; repeated entries: {a['repeated_entries']}")
# Tessera POSIX deduplicates best-effort (the last 256Ki entries, in memory): its repeats are
# reported, not failed. Cairn promises every repeat its original index.
bad = [r for r in runs if r["hammer"] != "ok"] + [a for n, a in audits.items() if n == "cairn" and a["repeated_entries"]]
sys.exit(1 if bad else 0)
EOF
