#!/bin/sh
# Container entrypoint of every Cairn pod: assembles this process's cairn.toml, then runs its
# arguments (normally `cairn serve --config /run/cairn/cairn.toml [--roles ...]`). With no arguments it
# only assembles and prints the path (cli/tests/k8s_config.rs runs it that way).
#
# Why a wrapper: `cairn serve` takes the tenants' tokens and the admin token only from its
# configuration file (no environment or file overrides), one ConfigMap is shared by every pod, and
# cairn refuses key files that its group can read, which is what Kubernetes makes of every Secret file
# in a pod with an fsGroup (defaultMode is not honoured then, kubernetes/kubernetes#57923). The node id
# is not its business: the StatefulSet passes `--node-id-from-hostname` (cairn-sequencer-0 is node 1).
#
# The assembled file is, in order:
#   admin_token = '...'  from $CAIRN_SECRETS/admin-token, when that file exists
#   $CAIRN_CONFIG        the shared file (ConfigMap cairn-config)
#   [[tenants]] ...      $CAIRN_SECRETS/tenants.toml, when that file exists
# and $CAIRN_SECRETS/shard-*.key, tsa-key.pem and tsa-chain.pem are copied, mode 0600, to
# $CAIRN_RUN_DIR/keys/ and $CAIRN_RUN_DIR/tsa/ (an in-memory emptyDir), where cairn.toml points.
# While the process runs, a shard key added to the Secret later (for a shard added at runtime with
# `cairn shard add`) is copied too: Kubernetes updates a mounted Secret's files within about a minute,
# and a loop copies each new shard-*.key every $CAIRN_KEY_SYNC_S seconds (default 10), so the
# sequencer finds it in its key directory without a restart. Keys copied are never replaced or
# removed while the process runs.
# It refuses to start while anything it assembled, or an environment variable (Secret cairn-s3),
# still holds a REPLACE-ME placeholder.
#
# Needs only a POSIX shell, cat, cp, grep, mkdir, chmod, mv, rm, sleep and kill (the image is
# debian:*-slim).
set -eu

config=${CAIRN_CONFIG:-/etc/cairn/config/cairn.toml}
secrets=${CAIRN_SECRETS:-/etc/cairn/secrets}
run=${CAIRN_RUN_DIR:-/run/cairn}

fail() {
  echo "cairn start.sh: $*" >&2
  exit 1
}

[ -r "$config" ] || fail "cannot read the shared configuration $config (ConfigMap cairn-config)"

umask 077
mkdir -p "$run/keys" "$run/tsa"
out="$run/cairn.toml"
# A restarted container finds the emptyDir as it left it: start from nothing.
rm -f "$out" "$run"/keys/shard-*.key

admin_token=
if [ -f "$secrets/admin-token" ]; then
  admin_token=$(cat "$secrets/admin-token")
  # A TOML literal string ('...') cannot hold a quote or a line break: keep tokens to URL-safe text.
  case "$admin_token" in
    *[!A-Za-z0-9._~+/=-]*) fail "$secrets/admin-token may hold only A-Z a-z 0-9 . _ ~ + / = - (one line)" ;;
    '') fail "$secrets/admin-token is empty" ;;
  esac
fi

{
  echo "# Assembled by start.sh from $config and $secrets; do not edit."
  [ -n "$admin_token" ] && echo "admin_token = '$admin_token'"
  cat "$config"
  echo
  if [ -f "$secrets/tenants.toml" ]; then
    cat "$secrets/tenants.toml"
    echo
  fi
} >"$out"

# Copies the shard keys of the Secret not yet in the key directory (whole files only: written
# aside, then renamed).
sync_keys() {
  for f in "$secrets"/shard-*.key; do
    [ -f "$f" ] || continue
    name=${f##*/}
    [ -f "$run/keys/$name" ] && continue
    if grep -q 'REPLACE-ME' "$f"; then
      echo "cairn start.sh: placeholder in $name (from $secrets): not copied" >&2
      continue
    fi
    if ! { cp "$f" "$run/keys/.$name.tmp" && chmod 600 "$run/keys/.$name.tmp" &&
      mv "$run/keys/.$name.tmp" "$run/keys/$name"; }; then
      echo "cairn start.sh: copying $name failed; retrying in the next pass" >&2
      rm -f "$run/keys/.$name.tmp"
    fi
  done
  return 0
}

copied=
for f in "$secrets"/shard-*.key; do
  [ -f "$f" ] || continue
  name=${f##*/}
  rm -f "$run/keys/$name"
  cp "$f" "$run/keys/$name"
  chmod 600 "$run/keys/$name"
  copied="$copied $run/keys/$name"
done
for name in tsa-key.pem tsa-chain.pem; do
  [ -f "$secrets/$name" ] || continue
  rm -f "$run/tsa/$name"
  cp "$secrets/$name" "$run/tsa/$name"
  chmod 600 "$run/tsa/$name"
  copied="$copied $run/tsa/$name"
done

# Placeholders: lines of the shared file are shown; of Secrets, only the file's name.
bad=
if grep -q 'REPLACE-ME' "$config"; then
  grep -n 'REPLACE-ME' "$config" | cut -c1-160 | sed "s|^|cairn start.sh: placeholder in $config:|" >&2
  bad=1
fi
for f in "$secrets/admin-token" "$secrets/tenants.toml" $copied; do
  if [ -f "$f" ] && grep -q 'REPLACE-ME' "$f"; then
    echo "cairn start.sh: placeholder in ${f##*/} (from $secrets)" >&2
    bad=1
  fi
done
for name in $(env | grep 'REPLACE-ME' | cut -d= -f1); do
  echo "cairn start.sh: placeholder in environment variable $name" >&2
  bad=1
done
[ -z "$bad" ] || fail "replace the REPLACE-ME placeholders (ConfigMap cairn-config, Secrets cairn-*) first"

if [ $# -eq 0 ]; then
  echo "$out"
  exit 0
fi
# Runs beside the process exec starts (which keeps this shell's pid, $$) and ends with it; it writes
# nothing to stdout (only messages to stderr), so it does not hold the process's stdout open.
interval=${CAIRN_KEY_SYNC_S:-10}
(
  # A failed pass must not end the loop.
  set +e
  while sleep "$interval" && kill -0 $$ 2>/dev/null; do
    sync_keys
  done
) >/dev/null &
exec "$@"
