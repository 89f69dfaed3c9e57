#!/usr/bin/env bash
# Installs what the web explorer's browser tests need, once:
#   chromium        Debian's package (apt-get; needs root, as .ci/run has)
#   playwright-core the version pinned in tile-server/explorer/test/package-lock.json (npm ci, into
#                   tile-server/explorer/test/node_modules; npm's cache makes later installs offline)
# Node.js >= 20 must be on PATH.
#
# Usage:
#   scripts/browser.sh               install if needed, then print what was found
#   scripts/browser.sh --print-env   same, progress on stderr, export lines on stdout:
#                                    eval "$(scripts/browser.sh --print-env)"
#     CAIRN_CHROMIUM   path of the Chromium binary
#     CAIRN_NODE       path of node
set -euo pipefail

# shellcheck source=scripts/installer-args.sh
source "$(dirname "${BASH_SOURCE[0]}")/installer-args.sh"
installer_args browser "$@"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTS="$REPO_ROOT/tile-server/explorer/test"

node_bin=$(command -v node || true)
if [ -z "$node_bin" ]; then
  say "node is not on PATH: install Node.js 20 or newer"
  exit 1
fi
major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  say "node $("$node_bin" --version) is too old: the explorer tests need Node.js 20 or newer"
  exit 1
fi

chromium_bin=$(command -v chromium || true)
if [ -z "$chromium_bin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "chromium is not installed and this is not root: run 'apt-get install chromium' as root"
    exit 1
  fi
  say "installing Debian's chromium (apt-get)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  chromium_bin=$(command -v chromium)
fi

# npm ci again whenever the lockfile changed since the last install.
stamp="$TESTS/node_modules/.cairn-lock"
if ! cmp -s "$TESTS/package-lock.json" "$stamp" 2>/dev/null; then
  say "installing playwright-core (npm ci in tile-server/explorer/test)"
  (cd "$TESTS" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$TESTS/package-lock.json" "$stamp"
fi

if [ "$print_env" = 1 ]; then
  printf 'export CAIRN_CHROMIUM=%q CAIRN_NODE=%q\n' "$chromium_bin" "$node_bin"
else
  echo "chromium: $chromium_bin ($("$chromium_bin" --version 2>/dev/null | head -1))"
  echo "node:     $node_bin ($("$node_bin" --version))"
  echo "playwright-core: $(cd "$TESTS" && "$node_bin" -p 'require("playwright-core/package.json").version')"
fi
