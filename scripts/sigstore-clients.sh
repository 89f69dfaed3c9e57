#!/usr/bin/env bash
# Installs the real Sigstore clients that Cairn's interoperability tests run against the log
# (Rekor v2 API + RFC 3161 TSA), so the tests exercise the unmodified upstream code paths rather
# than our own idea of what a client does. Pinned and cached; a second run only checks versions.
#
#   cosign                   github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3          (go install)
#   sigstore-go-conformance  github.com/sigstore/sigstore-go/test/conformance@v1.3.0   (go install;
#                            the upstream binary "conformance", renamed)
#   sigstore-python          sigstore==4.5.1 (+ cryptography, pyjwt, rfc3161-client pinned) in a venv
#   sigstore-js              @sigstore/sign@4.1.1 and @sigstore/bundle@4.0.0 from npm, every dependency
#                            pinned by clients/sigstore-js/package-lock.json (npm ci; Node.js >= 20.17)
#
# Layout (override with the variables shown):
#   Go binaries   ${CAIRN_GO_BIN:-$HOME/.cache/cairn-go/bin}
#   Go caches     $HOME/.cache/cairn-go/mod (GOMODCACHE), $HOME/.cache/cairn-go/build (GOCACHE)
#   Python venv   ${CAIRN_SIGSTORE_VENV:-$HOME/.cache/cairn-sigstore-py}
#   npm packages  ${CAIRN_SIGSTORE_JS_DIR:-$HOME/.cache/cairn-sigstore-js}/node_modules
#
# Only package registries are used (the Go module proxy, PyPI and npm). The Go builds take several
# minutes the first time. GOTOOLCHAIN defaults to "local" (cosign v3.1.3 and sigstore-go v1.3.0
# need go >= 1.26.0 / 1.25.8); set CAIRN_GOTOOLCHAIN (e.g. go1.27.3) to use another toolchain.
#
# Usage:
#   scripts/sigstore-clients.sh               install if needed, then print one line per tool
#   scripts/sigstore-clients.sh --print-env   same, but progress goes to stderr and stdout gets
#                                             export lines:  eval "$(scripts/sigstore-clients.sh --print-env)"
#     CAIRN_COSIGN           path of the cosign binary
#     CAIRN_SIGSTORE_GO      path of sigstore-go's conformance CLI
#     CAIRN_SIGSTORE_PYTHON  python interpreter of the venv (import sigstore; or: -m sigstore ...)
#     CAIRN_SIGSTORE_VENV    the venv itself ($CAIRN_SIGSTORE_VENV/bin/sigstore is the CLI)
#     CAIRN_SIGSTORE_JS      node_modules holding @sigstore/sign (for NODE_PATH)
set -euo pipefail

COSIGN_MODULE=github.com/sigstore/cosign/v3
COSIGN_PKG=$COSIGN_MODULE/cmd/cosign
COSIGN_VERSION=v3.1.3
SIGSTORE_GO_MODULE=github.com/sigstore/sigstore-go
SIGSTORE_GO_PKG=$SIGSTORE_GO_MODULE/test/conformance
SIGSTORE_GO_VERSION=v1.3.0
SIGSTORE_PY_VERSION=4.5.1
SIGSTORE_JS_VERSION=4.1.1
JS_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../clients/sigstore-js" && pwd)"
PY_PINS=(
  "sigstore==$SIGSTORE_PY_VERSION"
  "cryptography==50.0.2"
  "pyjwt==2.15.1"
  "rfc3161-client==1.0.9"
)

# shellcheck source=scripts/installer-args.sh
source "$(dirname "${BASH_SOURCE[0]}")/installer-args.sh"
installer_args sigstore-clients "$@"

NEED_GO_FOR="cosign and sigstore-go"
# shellcheck source=scripts/go-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/go-tools.sh"
VENV="${CAIRN_SIGSTORE_VENV:-$HOME/.cache/cairn-sigstore-py}"
PYTHON="${CAIRN_SIGSTORE_BASE_PYTHON:-python3}"

COSIGN_BIN="$GOBIN/cosign"
SIGSTORE_GO_BIN="$GOBIN/sigstore-go-conformance"
SIGSTORE_GO_STAMP="$GOBIN/.sigstore-go-conformance.stamp"
PY_STAMP="$VENV/.cairn-sigstore.stamp"
JS_DIR="${CAIRN_SIGSTORE_JS_DIR:-$HOME/.cache/cairn-sigstore-js}"
JS_STAMP="$JS_DIR/.cairn-sigstore-js.stamp"

# One installer at a time (tests may call this script in parallel).
exec 9>"$CACHE_ROOT/.sigstore-clients.lock"
flock 9

cosign_version() {
  "$COSIGN_BIN" version 2>/dev/null | awk '$1 == "GitVersion:" { print $2; exit }'
}

install_cosign() {
  if [ -x "$COSIGN_BIN" ] && [ "$(cosign_version)" = "$COSIGN_VERSION" ]; then
    say "cosign $COSIGN_VERSION already installed at $COSIGN_BIN"
    return 0
  fi
  need_go || return 1
  say "building cosign $COSIGN_VERSION with $(go version | awk '{print $3}') (a few minutes)"
  local start=$SECONDS
  # Build into a scratch GOBIN, then move: a failed build never leaves a half-pinned binary.
  local tmp; tmp=$(mktemp -d "$CACHE_ROOT/tmp.cosign.XXXXXX")
  if ! (cd "$tmp" && run_logged "go install $COSIGN_PKG@$COSIGN_VERSION" "$LOG_DIR/cosign.log" \
        env GOBIN="$tmp" go install "$COSIGN_PKG@$COSIGN_VERSION"); then
    rm -rf "$tmp"; return 1
  fi
  mv -f "$tmp/cosign" "$COSIGN_BIN" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  local got; got=$(cosign_version)
  if [ "$got" != "$COSIGN_VERSION" ]; then
    say "FAILED: built $COSIGN_BIN but 'cosign version' reports GitVersion '$got', expected $COSIGN_VERSION"
    return 1
  fi
  say "cosign $COSIGN_VERSION built in $((SECONDS - start))s"
}

install_sigstore_go() {
  local want="$SIGSTORE_GO_MODULE $SIGSTORE_GO_VERSION"
  if [ -x "$SIGSTORE_GO_BIN" ] && [ "$(cat "$SIGSTORE_GO_STAMP" 2>/dev/null)" = "$want" ]; then
    say "sigstore-go-conformance $SIGSTORE_GO_VERSION already installed at $SIGSTORE_GO_BIN"
    return 0
  fi
  need_go || return 1
  say "building sigstore-go conformance CLI $SIGSTORE_GO_VERSION with $(go version | awk '{print $3}')"
  local start=$SECONDS
  go_install_pinned "$SIGSTORE_GO_PKG" "$SIGSTORE_GO_VERSION" conformance "$SIGSTORE_GO_BIN" \
    sigstore-go-conformance || return 1
  echo "$want" >"$SIGSTORE_GO_STAMP"
  say "sigstore-go-conformance $SIGSTORE_GO_VERSION built in $((SECONDS - start))s"
}

py_sigstore_version() {
  "$VENV/bin/python" -c 'import sigstore; print(sigstore.__version__)' 2>/dev/null
}

install_sigstore_python() {
  local want="${PY_PINS[*]}"
  if [ "$(cat "$PY_STAMP" 2>/dev/null)" = "$want" ] && [ "$(py_sigstore_version)" = "$SIGSTORE_PY_VERSION" ]; then
    say "sigstore-python $SIGSTORE_PY_VERSION already installed in $VENV"
    return 0
  fi
  local start=$SECONDS
  if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
      say "FAILED: '$PYTHON' not found; sigstore-python $SIGSTORE_PY_VERSION needs Python >= 3.10"
      return 1
    fi
    say "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    run_logged "$PYTHON -m venv $VENV" "$LOG_DIR/sigstore-python-venv.log" "$PYTHON" -m venv "$VENV" || return 1
  fi
  say "installing ${PY_PINS[*]} from PyPI into $VENV"
  rm -f "$PY_STAMP"
  run_logged "pip install ${PY_PINS[*]}" "$LOG_DIR/sigstore-python.log" \
    "$VENV/bin/python" -m pip install --disable-pip-version-check "${PY_PINS[@]}" || return 1
  local got; got=$(py_sigstore_version)
  if [ "$got" != "$SIGSTORE_PY_VERSION" ]; then
    say "FAILED: installed sigstore in $VENV but 'import sigstore' reports '$got', expected $SIGSTORE_PY_VERSION"
    return 1
  fi
  echo "$want" >"$PY_STAMP"
  say "sigstore-python $SIGSTORE_PY_VERSION installed in $((SECONDS - start))s"
}

js_sign_version() {
  node -p "require('$JS_DIR/node_modules/@sigstore/sign/package.json').version" 2>/dev/null
}

install_sigstore_js() {
  local want; want=$(sha256sum "$JS_SRC/package-lock.json" | awk '{print $1}')
  if [ "$(cat "$JS_STAMP" 2>/dev/null)" = "$want" ] && [ "$(js_sign_version)" = "$SIGSTORE_JS_VERSION" ]; then
    say "sigstore-js $SIGSTORE_JS_VERSION already installed in $JS_DIR"
    return 0
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 ||
     ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
                process.exit(a > 20 || (a === 20 && b >= 17) ? 0 : 1)'; then
    say "FAILED: sigstore-js $SIGSTORE_JS_VERSION needs node (>= 20.17) and npm; found: $(node --version 2>&1 || true)"
    return 1
  fi
  local start=$SECONDS
  mkdir -p "$JS_DIR"
  rm -f "$JS_STAMP"
  cp "$JS_SRC/package.json" "$JS_SRC/package-lock.json" "$JS_DIR/"
  say "installing sigstore-js $SIGSTORE_JS_VERSION from npm into $JS_DIR (npm ci, the committed lock file)"
  run_logged "npm ci" "$LOG_DIR/sigstore-js.log" \
    npm ci --prefix "$JS_DIR" --no-audit --no-fund || return 1
  local got; got=$(js_sign_version)
  if [ "$got" != "$SIGSTORE_JS_VERSION" ]; then
    say "FAILED: installed @sigstore/sign in $JS_DIR but it reports '$got', expected $SIGSTORE_JS_VERSION"
    return 1
  fi
  echo "$want" >"$JS_STAMP"
  say "sigstore-js $SIGSTORE_JS_VERSION installed in $((SECONDS - start))s"
}

install_cosign || failures+=("cosign $COSIGN_VERSION")
install_sigstore_go || failures+=("sigstore-go-conformance $SIGSTORE_GO_VERSION")
install_sigstore_python || failures+=("sigstore-python $SIGSTORE_PY_VERSION")
install_sigstore_js || failures+=("sigstore-js $SIGSTORE_JS_VERSION")

# One line per tool: name, path, version as reported by the installed tool itself.
summary() {
  printf '%-24s %-60s %s\n' cosign "$COSIGN_BIN" "$( [ -x "$COSIGN_BIN" ] && cosign_version || echo MISSING)"
  printf '%-24s %-60s %s\n' sigstore-go-conformance "$SIGSTORE_GO_BIN" \
    "$( [ -x "$SIGSTORE_GO_BIN" ] && go_main_version "$SIGSTORE_GO_BIN" || echo MISSING)"
  printf '%-24s %-60s %s\n' sigstore-python "$VENV/bin/sigstore" "$(py_sigstore_version || echo MISSING)"
  printf '%-24s %-60s %s\n' sigstore-js "$JS_DIR/node_modules/@sigstore/sign" "$(js_sign_version || echo MISSING)"
}

finish_install "$print_env" CAIRN_COSIGN="$COSIGN_BIN" CAIRN_SIGSTORE_GO="$SIGSTORE_GO_BIN" \
  CAIRN_SIGSTORE_PYTHON="$VENV/bin/python" CAIRN_SIGSTORE_VENV="$VENV" \
  CAIRN_SIGSTORE_JS="$JS_DIR/node_modules"
