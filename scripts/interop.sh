#!/usr/bin/env bash
# The interop suite: what a user of another language sees of postmesh.
#
#   1. generated clients    scripts/gen-clients.sh --check: the code in clients/
#                           is what proto/ generates (installs the toolchains first)
#   2. buf                  scripts/buf-check.sh: lint, format, breaking vs the previous commit
#   3. mesh up              scripts/up.sh: the whole mesh (ports PM_COMMAND_PORT, PM_QUERY_PORT,
#                           PM_RELAY_PORT; 50051-50053 by default)
#   4. grpcurl examples     every example of docs/grpcurl-examples.md (and of README.md's
#                           grpcurl section), run verbatim, output checked
#      http examples        every curl example of docs/http.md, the same way
#      http client          tests/http/check_http.py: Python's urllib over every HTTP/JSON
#                           route, bad input, /openapi.json against the live routes, gRPC-Web
#   5-7. client packages    each installed the way its users install it, outside the
#                           repository, then clients/examples/<lang> and the scenario of
#                           clients/README.md run against the mesh; each exits non-zero on
#                           any deviation:
#                           python: `pip install ./clients/python[typing]` into a fresh venv,
#                                   `mypy --strict` over the installed package and the example
#                           go:     clients/examples/go, a module of its own requiring the
#                                   module by its public path (a replace points at clients/go)
#                           npm:    `npm pack` of clients/typescript, installed into a copy of
#                                   clients/examples/typescript; ESM and CommonJS, type-checked
#
# Then the services it started are stopped again (servers stay up, as after
# scripts/test.sh); a mesh that was already running is restarted by up.sh and
# left running. Prints one line per step and a final "N passed, N failed";
# exits non-zero when a step failed.
#
# usage: scripts/interop.sh
# Everything it installs is pinned and comes from the package registries
# (see scripts/gen-clients.sh, clients/python/constraints.txt, the lockfile and
# go.sum files); later runs take about a minute.
set -euo pipefail

PM_SCRIPT=interop
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export PM_COMMAND_PORT="${PM_COMMAND_PORT:-50051}" PM_QUERY_PORT="${PM_QUERY_PORT:-50052}"
export PM_RELAY_PORT="${PM_RELAY_PORT:-50053}"
export COMMAND_ADDR="localhost:$PM_COMMAND_PORT" QUERY_ADDR="localhost:$PM_QUERY_PORT"
# Where the packages are installed and their examples built: outside the
# repository, so nothing resolves from the source tree by accident.
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/postmesh-interop.XXXXXX")"

results=()
passed=0
failed=0

# step NAME CMD...: runs CMD, records the outcome and time; never stops the script.
step() {
    local name=$1 start rc=0
    shift
    printf '\n[interop] ===== %s =====\n' "$name"
    start=$SECONDS
    "$@" || rc=$?
    if ((rc == 0)); then
        results+=("$(printf 'ok      %-26s %4ss' "$name" $((SECONDS - start)))")
        passed=$((passed + 1))
    else
        results+=("$(printf 'FAILED  %-26s %4ss  (exit %s)' "$name" $((SECONDS - start)) "$rc")")
        failed=$((failed + 1))
    fi
    return "$rc"
}

# Whether a mesh was running before: if not, the one this script starts is stopped at the end.
mesh_was_up=""
for name in command-svc query-svc event-relay; do
    if pid_running "$RUN_DIR/$name.pid" "$name" >/dev/null; then mesh_was_up=1; fi
done

finish() {
    local rc=$?
    rm -rf "$SCRATCH"
    if [[ -z "$mesh_was_up" ]]; then
        "$ROOT/scripts/down.sh" --keep-servers >/dev/null 2>&1 || true
        if [[ -n "${run_id:-}" ]]; then rm -f "$RUN_DIR/$run_id".db*; fi
    fi
    printf '\n[interop] ===== summary =====\n'
    if ((${#results[@]} > 0)); then printf '  %s\n' "${results[@]}"; fi
    printf '%d passed, %d failed\n' "$passed" "$failed"
    if ((rc == 0 && failed > 0)); then rc=1; fi
    exit "$rc"
}
trap finish EXIT

# python: a fresh venv, the package (with its typing extra) and mypy from
# constraints.txt; mypy --strict proves the installed package's types resolve
# (py.typed, the .pyi stubs); run from SCRATCH so only the installed copy imports.
python_package() {
    local venv=$SCRATCH/python-venv
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c clients/python/constraints.txt "./clients/python[typing]" mypy
    cp clients/examples/python/hello.py "$SCRATCH/hello.py"
    (cd "$SCRATCH" && "$venv/bin/mypy" --strict --no-incremental -p postmesh_client &&
        "$venv/bin/mypy" --strict --no-incremental hello.py) &&
        (cd "$SCRATCH" && "$venv/bin/python" hello.py && "$venv/bin/postmesh-scenario")
}

# go: the example is a module of its own that requires the client module by
# its public path; the scenario is built from there too, as `go install` would.
go_module() {
    (cd clients/go && go vet ./...) &&
        (cd clients/examples/go && go build -o "$SCRATCH/hello-go" . &&
            go build -o "$SCRATCH/postmesh-scenario-go" github.com/postmesh/postmesh/clients/go/cmd/postmesh-scenario) &&
        "$SCRATCH/hello-go" && "$SCRATCH/postmesh-scenario-go"
}

# npm: the tarball `npm publish` would upload (npm pack runs the build), into a
# copy of the example project; tsc checks the ESM and CommonJS imports' types.
npm_package() {
    local tarball project=$SCRATCH/npm-project
    tarball="$(cd clients/typescript && npm pack --silent --pack-destination "$SCRATCH" | tail -n 1)"
    mkdir -p "$project"
    cp clients/examples/typescript/{package.json,tsconfig.json,hello.ts,hello-cjs.cts} "$project/"
    (cd "$project" && npm install --no-audit --no-fund --loglevel=error "$SCRATCH/$tarball" &&
        node_modules/.bin/tsc -p . && node out/hello.js && node out/hello-cjs.cjs &&
        node_modules/.bin/postmesh-scenario)
}

# Without the tools or the mesh nothing else can run: stop at the first failure there.
step "generated clients" scripts/gen-clients.sh --check || exit 1
step "buf lint/format/breaking" scripts/buf-check.sh || true
# A mesh started here gets an event store, stream, channel and read model of
# its own: servers shared with other checkouts or earlier runs may hold posts
# whose ids a fresh event store would hand out again.
if [[ -z "$mesh_was_up" ]]; then
    run_id="interop_$(date +%s)_$$"
    export COMMAND_DATABASE_URL="sqlite://$RUN_DIR/$run_id.db?mode=rwc"
    export READ_STORE_DATABASE="$run_id" STREAM_NAME="$run_id.events" NOTIFY_CHANNEL="$run_id.applied"
    # The default read store is a SQLite file: one of this run's own too.
    if [[ "${PM_READ_STORE:-sqlite}" != mongo ]]; then
        export READ_STORE_URL="sqlite://$RUN_DIR/$run_id.read.db?mode=rwc"
    fi
fi
step "mesh up" scripts/up.sh || exit 1

# The examples keep ids with jq (Debian's package; most machines have it).
need_jq() {
    command -v jq >/dev/null && return 0
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
    log "apt: installing jq"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq </dev/null ||
        { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends jq </dev/null; }
}
grpcurl_examples() { need_jq && python3 clients/grpcurl/check_examples.py; }

step "grpcurl examples" grpcurl_examples || true
http_examples() { need_jq && python3 clients/grpcurl/check_examples.py --source docs/http.md; }
step "http examples" http_examples || true
step "http client (urllib)" python3 tests/http/check_http.py || true
step "python package" python_package || true
step "go module" go_module || true
step "npm package" npm_package || true
