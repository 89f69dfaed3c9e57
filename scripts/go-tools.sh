# Shared by the scripts that install pinned Go programs for the tests (sigstore-clients.sh,
# witness-peers.sh); sourced, not run. The caller defines `say` (progress on stderr) and `NEED_GO_FOR`
# (what the toolchain is needed for, for the error message) before sourcing.
#
# Caches: ${CAIRN_GO_BIN:-$HOME/.cache/cairn-go/bin} for binaries, $HOME/.cache/cairn-go/{mod,build}
# for GOMODCACHE/GOCACHE, $HOME/.cache/cairn-go/logs for build logs. GOTOOLCHAIN defaults to "local".

CACHE_ROOT="$HOME/.cache/cairn-go"
export GOBIN="${CAIRN_GO_BIN:-$CACHE_ROOT/bin}"
export GOMODCACHE="$CACHE_ROOT/mod"
export GOCACHE="$CACHE_ROOT/build"
export GOTOOLCHAIN="${CAIRN_GOTOOLCHAIN:-local}"
export GOWORK=off
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
LOG_DIR="$CACHE_ROOT/logs"
mkdir -p "$GOBIN" "$GOMODCACHE" "$GOCACHE" "$LOG_DIR"

failures=()

# Runs "$@" with output in a log file; on failure prints the exact error (log tail) and returns 1.
run_logged() {
  local what=$1 log=$2; shift 2
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] && return 0
  say "FAILED: $what (exit $rc): $*"
  say "  GOPROXY=$(go env GOPROXY 2>/dev/null || echo '?') GOTOOLCHAIN=${GOTOOLCHAIN}; full log: $log"
  tail -n 25 "$log" | sed 's/^/  | /' >&2
  return 1
}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    say "FAILED: 'go' not found in PATH; $NEED_GO_FOR need a Go toolchain (>= 1.26.0)"
    return 1
  fi
}

# Version of a Go binary's main module as recorded by the Go linker ("" if unknown).
go_main_version() {
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

# Ends an installer: the caller's `summary` (on stderr with --print-env), exit 1 if anything failed,
# then with --print-env one export line per NAME=VALUE argument.
finish_install() {
  local print_env=$1; shift
  if [ "$print_env" = 1 ]; then summary >&2; else summary; fi
  if [ ${#failures[@]} -gt 0 ]; then
    say "FAILED to install: ${failures[*]} (logs in $LOG_DIR)"
    exit 1
  fi
  if [ "$print_env" = 1 ]; then
    local kv
    for kv in "$@"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
  fi
}

# Builds PKG@VERSION into a scratch GOBIN and moves the binary BUILT (its name as go install writes it)
# to DEST, so a failed build never leaves a half-pinned binary; then checks that DEST records VERSION as
# its main module's version. Build output goes to $LOG_DIR/LOG.log. GOTOOLCHAIN from the environment.
go_install_pinned() {
  local pkg=$1 version=$2 built=$3 dest=$4 log=$5
  local tmp; tmp=$(mktemp -d "$CACHE_ROOT/tmp.$log.XXXXXX")
  if ! (cd "$tmp" && run_logged "go install $pkg@$version" "$LOG_DIR/$log.log" \
        env GOBIN="$tmp" GOTOOLCHAIN="$GOTOOLCHAIN" go install "$pkg@$version"); then
    rm -rf "$tmp"; return 1
  fi
  mv -f "$tmp/$built" "$dest" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  local got; got=$(go_main_version "$dest")
  if [ "$got" != "$version" ]; then
    say "FAILED: built $dest but it records module version '$got', expected $version"
    return 1
  fi
}
