# Shared by the installer scripts the tests use (sigstore-clients.sh, witness-peers.sh, browser.sh);
# sourced, not run: `installer_args NAME "$@"` reads the one optional argument (--print-env or --help,
# which prints the calling script's header comment), sets print_env, and defines `say`, which writes
# progress to stderr so that --print-env's stdout can be eval'ed.
installer_args() {
  local name=$1
  shift
  print_env=0
  case "${1:-}" in
    "") ;;
    --print-env) print_env=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$name.sh: unknown argument '$1' (use --print-env or --help)" >&2; exit 2 ;;
  esac
  eval "say() { echo \"$name: \$*\" >&2; }"
}
