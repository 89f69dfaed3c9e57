#!/usr/bin/env bash
# Checks deploy/k8s offline, strictly; exits non-zero with the reasons on any failure.
#
#  1. Renders every overlay (deploy/k8s/overlays/*) with kustomize.
#  2. Validates every rendered object against the OpenAPI schemas of Kubernetes 1.35, 1.36 and 1.37
#     with unknown fields as errors (kubernetes-validate, which ships the schemas: no download).
#  3. Checks what the schemas cannot: securityContext (non-root, read-only root filesystem, no
#     capabilities, seccomp RuntimeDefault) and requests/limits on every container, probes; Secrets
#     are marked placeholders holding REPLACE-ME only; cairn.toml in each ConfigMap parses, and its
#     [[peers]] name exactly the StatefulSet's pods under its headless Service (which publishes
#     not-ready addresses), with the container ports; the sequencers take their node ids from their
#     pod names (--node-id-from-hostname); the Raft port is open only to sequencers.
#  4. deploy/k8s/prometheus-rules.yaml: the rule-file structure (groups, rules, keys, durations),
#     every cairn_* metric it names is defined in the Rust sources, and `promtool check rules`.
#  5. The Dockerfile copies every workspace member; base/start.sh parses (sh -n).
#
# Tools, pinned and cached (a second run only checks versions):
#   kustomize   sigs.k8s.io/kustomize/kustomize/v5@v5.8.2 (go install; v5.8.3 needs Go 1.27)
#   promtool    github.com/prometheus/prometheus/cmd/promtool@v0.316.0 (go install)
#               both into ${CAIRN_GO_BIN:-$HOME/.cache/cairn-go/bin}, Go caches under
#               $HOME/.cache/cairn-go (scripts/go-tools.sh); Go >= 1.26.7 with GOTOOLCHAIN=local
#   kubernetes-validate 1.37.0 (PyPI) and its dependencies, pinned, in a venv at
#               ${CAIRN_K8S_VENV:-$HOME/.cache/cairn-k8s-py}
# The first run takes a few minutes (promtool is the long build); later runs take seconds.
#
# Usage: scripts/k8s-check.sh            check everything
#        scripts/k8s-check.sh --render   also print where the rendered overlays are kept
set -euo pipefail

KUSTOMIZE_PKG=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.8.2
PROMTOOL_PKG=github.com/prometheus/prometheus/cmd/promtool
PROMTOOL_VERSION=v0.316.0
K8S_VERSIONS="1.35.0 1.36.0 1.37.0"
PY_REQUIREMENTS="kubernetes-validate==1.37.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.4 packaging==26.4
importlib_resources==7.1.0 typing_extensions==4.16.0"

keep=0
case "${1:-}" in
  "") ;;
  --render) keep=1 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "k8s-check.sh: unknown argument '$1' (use --render or --help)" >&2; exit 2 ;;
esac

say() { echo "k8s-check: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_DIR="$REPO_ROOT/deploy/k8s"

NEED_GO_FOR="kustomize and promtool"
# shellcheck source=scripts/go-tools.sh
. "$REPO_ROOT/scripts/go-tools.sh"

# One installer at a time (scripts/test and a developer may run this at once).
exec 9>"$CACHE_ROOT/.k8s-check.lock"
flock 9

# go install PKG@VERSION into $GOBIN/NAME unless it is there at that version.
install_go_tool() {
  local name=$1 pkg=$2 version=$3
  local bin="$GOBIN/$name" stamp="$GOBIN/.$name.stamp" want="$pkg $version"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
     && [ "$(go_main_version "$bin")" = "$version" ]; then
    return 0
  fi
  need_go || return 1
  say "building $name $version (go install $pkg@$version)"
  local start=$SECONDS tmp
  tmp=$(mktemp -d "$CACHE_ROOT/tmp.$name.XXXXXX")
  if ! (cd "$tmp" && run_logged "go install $pkg@$version" "$LOG_DIR/$name.log" \
        env GOBIN="$tmp" go install "$pkg@$version"); then
    rm -rf "$tmp"; return 1
  fi
  mv -f "$tmp/$name" "$bin" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  local got; got=$(go_main_version "$bin")
  if [ "$got" != "$version" ]; then
    say "FAILED: built $bin but it records module version '$got', expected $version"
    return 1
  fi
  echo "$want" >"$stamp"
  say "$name $version built in $((SECONDS - start))s"
}

install_go_tool kustomize "$KUSTOMIZE_PKG" "$KUSTOMIZE_VERSION" \
  || die "cannot install kustomize $KUSTOMIZE_VERSION (log: $LOG_DIR/kustomize.log)"
install_go_tool promtool "$PROMTOOL_PKG" "$PROMTOOL_VERSION" \
  || die "cannot install promtool $PROMTOOL_VERSION (log: $LOG_DIR/promtool.log)"
KUSTOMIZE="$GOBIN/kustomize"
PROMTOOL="$GOBIN/promtool"

venv="${CAIRN_K8S_VENV:-$HOME/.cache/cairn-k8s-py}"
# shellcheck disable=SC2086 # one requirement per word
want_py=$(printf '%s\n' $PY_REQUIREMENTS | LC_ALL=C sort | tr '\n' ' ')
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.cairn-requirements" 2>/dev/null)" != "$want_py" ]; then
  say "creating the validator environment in $venv (kubernetes-validate, pinned)"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps $PY_REQUIREMENTS \
    || die "pip install into $venv failed"
  "$venv/bin/pip" check >/dev/null || die "the pinned Python packages in $venv are inconsistent: $("$venv/bin/pip" check)"
  echo "$want_py" >"$venv/.cairn-requirements"
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/cairn-k8s-check.XXXXXX")
if [ "$keep" = 0 ]; then trap 'rm -rf "$out"' EXIT; fi

# 1. Render.
overlays=()
for dir in "$K8S_DIR"/overlays/*/; do
  name=$(basename "$dir")
  if ! "$KUSTOMIZE" build "$dir" >"$out/$name.yaml" 2>"$out/$name.err"; then
    sed 's/^/  | /' "$out/$name.err" >&2
    die "kustomize build deploy/k8s/overlays/$name failed"
  fi
  overlays+=("$name")
done
[ ${#overlays[@]} -gt 0 ] || die "no overlays under $K8S_DIR/overlays"

# 5 (cheap, first). The entrypoint must at least parse in a POSIX shell.
sh -n "$K8S_DIR/base/start.sh" || die "deploy/k8s/base/start.sh does not parse (sh -n)"

# 2-5. Schemas and the checks above, in Python.
args=()
for name in "${overlays[@]}"; do args+=("$name=$out/$name.yaml"); done
"$venv/bin/python" - "$REPO_ROOT" "$K8S_VERSIONS" "${args[@]}" <<'PY' || die "see the errors above"
import os, re, sys, tomllib
import yaml
import kubernetes_validate as kv

root, versions, overlays = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
errors = []

def err(where, msg):
    errors.append(f"{where}: {msg}")

def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"

def pod_spec(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc.get("spec") or {}
    return None

def check_pod(where, spec):
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        err(where, "pod securityContext.runAsNonRoot must be true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        err(where, "automountServiceAccountToken must be false (cairn uses no Kubernetes API)")
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            err(cw, "securityContext.readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False:
            err(cw, "securityContext.runAsNonRoot must not be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            err(cw, "securityContext.capabilities.drop must include ALL")
        if (sc.get("capabilities") or {}).get("add"):
            err(cw, "securityContext.capabilities.add must be empty")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            err(cw, "seccompProfile.type must be RuntimeDefault")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    err(cw, f"resources.{part}.{r} is missing")
        if c in (spec.get("containers") or []):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    err(cw, f"{probe} is missing")

def port_of(addr):
    return int(addr.rsplit(":", 1)[1])

def check_cairn(overlay, docs):
    by = {(d.get("kind"), d["metadata"]["name"]): d for d in docs}
    configs = [d for d in docs if d.get("kind") == "ConfigMap" and "cairn.toml" in (d.get("data") or {})]
    if len(configs) != 1:
        err(overlay, f"expected one ConfigMap with cairn.toml, found {len(configs)}")
        return
    cm = configs[0]
    try:
        conf = tomllib.loads(cm["data"]["cairn.toml"])
    except tomllib.TOMLDecodeError as e:
        err(f"{overlay} {name_of(cm)}", f"cairn.toml does not parse: {e}")
        return
    for key in ("node_id", "admin_token", "tenants"):
        if key in conf:
            err(f"{overlay} cairn.toml", f"`{key}` must not be in the shared file (start.sh adds it per pod, from Secrets)")
    sts = by.get(("StatefulSet", "cairn-sequencer"))
    if sts is None:
        err(overlay, "no StatefulSet cairn-sequencer")
        return
    spec = sts["spec"]
    where = f"{overlay} StatefulSet/cairn-sequencer"
    if spec.get("podManagementPolicy") != "Parallel":
        err(where, "podManagementPolicy must be Parallel (a Raft majority must start together)")
    svc_name = spec.get("serviceName")
    svc = by.get(("Service", svc_name))
    if svc is None:
        err(where, f"serviceName {svc_name} is not a Service of the overlay")
    else:
        if svc["spec"].get("clusterIP") != "None":
            err(f"{overlay} Service/{svc_name}", "must be headless (clusterIP: None)")
        if svc["spec"].get("publishNotReadyAddresses") is not True:
            err(f"{overlay} Service/{svc_name}", "publishNotReadyAddresses must be true (peers resolve each other before they are ready)")
    container = spec["template"]["spec"]["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    for key, pname in (("grpc_addr", "grpc"), ("http_addr", "http"), ("raft_addr", "raft")):
        if key in conf and ports.get(pname) != port_of(conf[key]):
            err(where, f"container port {pname} ({ports.get(pname)}) is not the port of cairn.toml {key} ({conf[key]})")
    replicas = spec.get("replicas", 1)
    peers = conf.get("peers", [])
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    if replicas > 1 or peers:
        expect = [
            {"id": i + 1,
             "raft": f"cairn-sequencer-{i}.{svc_name}:{ports.get('raft')}",
             "grpc": f"http://cairn-sequencer-{i}.{svc_name}:{ports.get('grpc')}"}
            for i in range(replicas)
        ]
        if len(peers) != len(expect):
            err(f"{overlay} cairn.toml", f"{len(peers)} [[peers]], but the StatefulSet has {replicas} replicas")
        for want, got in zip(expect, peers):
            if want != got:
                err(f"{overlay} cairn.toml", f"[[peers]] #{want['id']} must be pod cairn-sequencer-{want['id'] - 1}: {want}, not {got}")
    if "--node-id-from-hostname" not in (container.get("args") or []):
        err(where, "cairn serve needs --node-id-from-hostname: node ids come from the pod names, as [[peers]] number them")
    if "CAIRN_NODE_ID" in env:
        err(where, "CAIRN_NODE_ID is cairn's --node-id, which conflicts with --node-id-from-hostname")
    for d in docs:
        if d.get("kind") != "NetworkPolicy":
            continue
        raft = ports.get("raft")
        for rule in (d["spec"].get("ingress") or []):
            rule_ports = {p.get("port") for p in rule.get("ports") or []}
            if rule_ports and raft not in rule_ports and "raft" not in rule_ports:
                continue
            sources = rule.get("from") or []
            ok = sources and all(
                set(s) == {"podSelector"}
                and (s["podSelector"].get("matchLabels") or {}).get("app.kubernetes.io/component") == "sequencer"
                for s in sources)
            if not ok:
                err(f"{overlay} {name_of(d)}", f"an ingress rule opens the Raft port {raft} to more than the sequencer pods")

for arg in overlays:
    overlay, path = arg.split("=", 1)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        err(overlay, "renders no objects")
    for doc in docs:
        where = f"{overlay} {name_of(doc)}"
        for v in versions:
            try:
                kv.validate(doc, v, strict=True)
            except kv.ValidationError as e:
                loc = "/".join(str(p) for p in e.path)
                err(where, f"Kubernetes {v}: {loc or '(top)'}: {e.message}")
            except kv.SchemaNotFoundError:
                err(where, f"Kubernetes {v} has no {doc.get('apiVersion')} {doc.get('kind')}")
            except Exception as e:  # VersionNotSupportedError, InvalidSchemaError
                err(where, f"Kubernetes {v}: {type(e).__name__}: {e}")
        spec = pod_spec(doc)
        if spec is not None:
            check_pod(where, spec)
        if doc.get("kind") == "Secret":
            if (doc["metadata"].get("annotations") or {}).get("cairn/placeholder") != "true":
                err(where, "Secrets in this repository must be placeholders (annotation cairn/placeholder: \"true\")")
            values = list((doc.get("stringData") or {}).values())
            if doc.get("data"):
                err(where, "use stringData with REPLACE-ME placeholders, not data")
            for k, v in (doc.get("stringData") or {}).items():
                if "REPLACE-ME" not in v:
                    err(where, f"{k} holds no REPLACE-ME placeholder: real secrets never go into the repository")
    check_cairn(overlay, docs)
    print(f"k8s-check: {overlay}: {len(docs)} objects, Kubernetes {', '.join(versions)} (strict)", file=sys.stderr)

# Prometheus rules: a plain rule file.
rules_path = os.path.join(root, "deploy/k8s/prometheus-rules.yaml")
where = "deploy/k8s/prometheus-rules.yaml"
duration = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
try:
    with open(rules_path) as f:
        rules_doc = yaml.safe_load(f)
except (OSError, yaml.YAMLError) as e:
    err(where, f"does not parse: {e}")
    rules_doc = None
exprs = []
if rules_doc is not None:
    if not isinstance(rules_doc, dict) or set(rules_doc) != {"groups"} or not isinstance(rules_doc["groups"], list):
        err(where, "must be a mapping with only `groups:` (a list)")
    else:
        seen_groups = set()
        for gi, g in enumerate(rules_doc["groups"]):
            gw = f"{where} groups[{gi}]"
            if not isinstance(g, dict):
                err(gw, "not a mapping"); continue
            extra = set(g) - {"name", "interval", "rules", "limit", "query_offset", "labels"}
            if extra:
                err(gw, f"unknown keys {sorted(extra)}")
            if not isinstance(g.get("name"), str) or not g["name"]:
                err(gw, "needs a name")
            elif g["name"] in seen_groups:
                err(gw, f"duplicate group name {g['name']}")
            seen_groups.add(g.get("name"))
            if "interval" in g and not duration.match(str(g["interval"])):
                err(gw, f"interval {g['interval']!r} is not a duration")
            if not isinstance(g.get("rules"), list) or not g["rules"]:
                err(gw, "needs a non-empty rules list"); continue
            for ri, r in enumerate(g["rules"]):
                rw = f"{gw}.rules[{ri}]"
                if not isinstance(r, dict):
                    err(rw, "not a mapping"); continue
                rw = f"{gw} {r.get('alert') or r.get('record')}"
                if ("alert" in r) == ("record" in r):
                    err(rw, "needs exactly one of alert and record")
                allowed = {"expr", "labels"} | ({"alert", "for", "keep_firing_for", "annotations"} if "alert" in r else {"record"})
                extra = set(r) - allowed
                if extra:
                    err(rw, f"unknown keys {sorted(extra)}")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    err(rw, "needs an expr (a PromQL string)")
                else:
                    exprs.append((rw, r["expr"]))
                for k in ("for", "keep_firing_for"):
                    if k in r and not (isinstance(r[k], str) and duration.match(r[k])):
                        err(rw, f"{k} {r[k]!r} is not a duration")
                for k in ("labels", "annotations"):
                    if k in r and not (isinstance(r[k], dict) and all(isinstance(x, str) and isinstance(y, str) for x, y in r[k].items())):
                        err(rw, f"{k} must map strings to strings")
                if "alert" in r and "severity" not in (r.get("labels") or {}):
                    err(rw, "alerts need a severity label")

# Every cairn_* metric an expression names must be defined (as a string literal) in the Rust sources.
defined = set()
for crate_dir, _, files in os.walk(root):
    rel = os.path.relpath(crate_dir, root)
    if rel.startswith(("target", ".git", "fuzz", "deploy", "clients", "bench")) or "/tests" in f"/{rel}":
        continue
    for fn in files:
        if fn.endswith(".rs"):
            with open(os.path.join(crate_dir, fn), encoding="utf-8") as f:
                defined.update(re.findall(r'"(cairn_[a-z0-9_]+)"', f.read()))
for rw, expr in exprs:
    for m in sorted(set(re.findall(r"\bcairn_[a-z0-9_]+", expr))):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if m not in defined and base not in defined:
            err(rw, f"metric {m} is not defined anywhere in the Rust sources")

# The Dockerfile copies every workspace member.
with open(os.path.join(root, "Cargo.toml"), "rb") as f:
    members = tomllib.load(f)["workspace"]["members"]
with open(os.path.join(root, "Dockerfile")) as f:
    copied = {line.split()[1] for line in f if line.startswith("COPY ") and "--from" not in line}
for m in members:
    if m not in copied:
        err("Dockerfile", f"does not COPY workspace member {m} (the build would not load the workspace)")

if errors:
    for e in errors:
        print(f"k8s-check: ERROR {e}", file=sys.stderr)
    print(f"k8s-check: {len(errors)} error(s)", file=sys.stderr)
    sys.exit(1)
print(f"k8s-check: prometheus-rules.yaml: {len(exprs)} rules, metrics defined in the sources", file=sys.stderr)
PY

# 4. PromQL and the rule file, as Prometheus reads it.
if ! "$PROMTOOL" check rules "$K8S_DIR/prometheus-rules.yaml" >"$out/promtool.log" 2>&1; then
  sed 's/^/  | /' "$out/promtool.log" >&2
  die "promtool check rules deploy/k8s/prometheus-rules.yaml failed"
fi
say "promtool $PROMTOOL_VERSION: $(grep -o 'SUCCESS.*' "$out/promtool.log" | head -1)"

if [ "$keep" = 1 ]; then say "rendered overlays kept in $out"; fi
say "OK: overlays ${overlays[*]} render and validate; rules and Dockerfile checked (kustomize $KUSTOMIZE_VERSION, kubernetes-validate 1.37.0)"
