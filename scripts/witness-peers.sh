#!/usr/bin/env bash
# Installs independent c2sp.org/tlog-witness peers for Cairn's witness tests, so that the tests talk
# to code that is not ours (tlog-witness, tlog-cosignature, signed-note, tlog-checkpoint).
# Pinned and cached; a second run only checks versions.
#
#   litewitness        filippo.io/torchwood/cmd/litewitness@v0.10.0   (go install; needs go >= 1.27.0,
#                      so it is built with GOTOOLCHAIN=go1.27.3, which the go command fetches from the
#                      Go module proxy once, about 76 MB)
#   cairn-go-witness   clients/go-witness (this repo; golang.org/x/mod v0.43.0 sumdb/note + sumdb/tlog,
#                      github.com/transparency-dev/formats v0.1.1 cosignature/v1 verifier), built with
#                      the local Go (>= 1.26.0); rebuilt whenever its sources change
#
# witnessctl (torchwood's companion that registers logs) is NOT installed: it imports
# sigsum.org/sigsum-go, which the Go module proxy here refuses (403 Forbidden). Register a log with
# litewitness's own SQLite database instead, once litewitness has created it (it does so at start):
#   sqlite3 DB "INSERT INTO log (origin, tree_size, tree_hash)
#               VALUES ('ORIGIN', 0, '47DEQpj8HBSa+/TImW+5JCeuQeRBm5NMpJWZG3hSuFU=');
#               INSERT INTO key (origin, key) VALUES ('ORIGIN', 'LOG_VKEY');"
# (the hash is the RFC 6962 empty tree's, base64). litewitness takes its Ed25519 key from an
# ssh-agent, so running it also needs ssh-keygen, ssh-agent and ssh-add; this script checks that
# those and sqlite3 are on PATH.
#
# Layout (override with the variables shown):
#   Go binaries   ${CAIRN_GO_BIN:-$HOME/.cache/cairn-go/bin}
#   Go caches     $HOME/.cache/cairn-go/mod (GOMODCACHE), $HOME/.cache/cairn-go/build (GOCACHE)
#   Toolchains    ${CAIRN_WITNESS_GOTOOLCHAIN:-go1.27.3} for litewitness, ${CAIRN_GOTOOLCHAIN:-local}
#                 for cairn-go-witness
#
# Only the Go module proxy is used. The litewitness build takes about two minutes the first time.
#
# Usage:
#   scripts/witness-peers.sh               install if needed, then print one line per tool
#   scripts/witness-peers.sh --print-env   same, but progress goes to stderr and stdout gets
#                                          export lines:  eval "$(scripts/witness-peers.sh --print-env)"
#     CAIRN_LITEWITNESS   path of the litewitness binary
#     CAIRN_GO_WITNESS    path of cairn-go-witness (keygen | log | fork | verify | witness-vkey)
set -euo pipefail

TORCHWOOD_MODULE=filippo.io/torchwood
LITEWITNESS_PKG=$TORCHWOOD_MODULE/cmd/litewitness
TORCHWOOD_VERSION=v0.10.0
LITEWITNESS_GOTOOLCHAIN="${CAIRN_WITNESS_GOTOOLCHAIN:-go1.27.3}"
RUNTIME_TOOLS=(sqlite3 ssh-keygen ssh-agent ssh-add)

# shellcheck source=scripts/installer-args.sh
source "$(dirname "${BASH_SOURCE[0]}")/installer-args.sh"
installer_args witness-peers "$@"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENT_SRC="$REPO_ROOT/clients/go-witness"

NEED_GO_FOR="litewitness and cairn-go-witness"
# shellcheck source=scripts/go-tools.sh
. "$REPO_ROOT/scripts/go-tools.sh"

LITEWITNESS_BIN="$GOBIN/litewitness"
LITEWITNESS_STAMP="$GOBIN/.litewitness.stamp"
CLIENT_BIN="$GOBIN/cairn-go-witness"
CLIENT_STAMP="$GOBIN/.cairn-go-witness.stamp"

# One installer at a time (tests may call this script in parallel).
exec 9>"$CACHE_ROOT/.witness-peers.lock"
flock 9

install_litewitness() {
  local want="$LITEWITNESS_PKG $TORCHWOOD_VERSION"
  if [ -x "$LITEWITNESS_BIN" ] && [ "$(cat "$LITEWITNESS_STAMP" 2>/dev/null)" = "$want" ] \
     && [ "$(go_main_version "$LITEWITNESS_BIN")" = "$TORCHWOOD_VERSION" ]; then
    say "litewitness $TORCHWOOD_VERSION already installed at $LITEWITNESS_BIN"
    return 0
  fi
  need_go || return 1
  say "building litewitness $TORCHWOOD_VERSION with GOTOOLCHAIN=$LITEWITNESS_GOTOOLCHAIN (about two minutes)"
  local start=$SECONDS
  GOTOOLCHAIN="$LITEWITNESS_GOTOOLCHAIN" go_install_pinned "$LITEWITNESS_PKG" "$TORCHWOOD_VERSION" \
    litewitness "$LITEWITNESS_BIN" litewitness || return 1
  echo "$want" >"$LITEWITNESS_STAMP"
  say "litewitness $TORCHWOOD_VERSION built in $((SECONDS - start))s"
}

# Digest of everything that goes into cairn-go-witness, so that a source change rebuilds it.
client_digest() {
  (cd "$CLIENT_SRC" && cat go.mod go.sum $(ls ./*.go | LC_ALL=C sort)) | sha256sum | awk '{print $1}'
}

install_client() {
  if [ ! -f "$CLIENT_SRC/go.mod" ]; then
    say "FAILED: $CLIENT_SRC/go.mod not found (cairn-go-witness sources are part of this repo)"
    return 1
  fi
  local want; want="cairn-go-witness $(client_digest)"
  if [ -x "$CLIENT_BIN" ] && [ "$(cat "$CLIENT_STAMP" 2>/dev/null)" = "$want" ]; then
    say "cairn-go-witness (sources ${want##* }) already built at $CLIENT_BIN"
    return 0
  fi
  need_go || return 1
  say "building cairn-go-witness from $CLIENT_SRC with $(go version | awk '{print $3}')"
  local start=$SECONDS
  local tmp; tmp=$(mktemp -d "$CACHE_ROOT/tmp.cairn-go-witness.XXXXXX")
  # -mod=readonly: the build uses exactly the versions pinned in go.mod/go.sum, or fails.
  if ! (cd "$CLIENT_SRC" && run_logged "go build ./clients/go-witness" "$LOG_DIR/cairn-go-witness.log" \
        go build -mod=readonly -trimpath -o "$tmp/cairn-go-witness" .); then
    rm -rf "$tmp"; return 1
  fi
  mv -f "$tmp/cairn-go-witness" "$CLIENT_BIN" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  echo "$want" >"$CLIENT_STAMP"
  say "cairn-go-witness built in $((SECONDS - start))s"
}

check_runtime_tools() {
  local missing=()
  local t
  for t in "${RUNTIME_TOOLS[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "FAILED: litewitness tests also need ${missing[*]} on PATH (Debian: apt-get install sqlite3 openssh-client)"
    return 1
  fi
}

install_litewitness || failures+=("litewitness $TORCHWOOD_VERSION")
install_client || failures+=("cairn-go-witness")
check_runtime_tools || failures+=("runtime tools (${RUNTIME_TOOLS[*]})")

# One line per tool: name, path, version.
summary() {
  printf '%-24s %-60s %s\n' litewitness "$LITEWITNESS_BIN" \
    "$( [ -x "$LITEWITNESS_BIN" ] && go_main_version "$LITEWITNESS_BIN" || echo MISSING)"
  printf '%-24s %-60s %s\n' cairn-go-witness "$CLIENT_BIN" \
    "$( [ -x "$CLIENT_BIN" ] && echo "sources $(cut -d' ' -f2 "$CLIENT_STAMP" 2>/dev/null | cut -c1-12)" || echo MISSING)"
}

finish_install "$print_env" CAIRN_LITEWITNESS="$LITEWITNESS_BIN" CAIRN_GO_WITNESS="$CLIENT_BIN"
