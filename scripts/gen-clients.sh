#!/usr/bin/env bash
# Generates the client packages' code in clients/ from proto/ (the only source
# of the contract):
#
#   clients/python/src/postmesh_client/posts/   grpcio-tools (its bundled protoc, matched to the
#                                                pinned protobuf runtime): *_pb2.py, *_pb2_grpc.py;
#                                                mypy-protobuf: *_pb2.pyi, *_pb2_grpc.pyi (typed stubs)
#   clients/go/posts/v1/                         protoc + protoc-gen-go + protoc-gen-go-grpc, at the
#                                                protos' go_package: *.pb.go, *_grpc.pb.go
#   clients/typescript/src/gen/                  protoc + ts-proto (grpc-js services): posts/v1/*.ts and
#                                                google/rpc/{status,error_details}.ts for the error details
#
# The generated code is committed; CI runs `--check`, which regenerates into a
# scratch directory and fails on any difference, so a proto change without a
# regeneration (or a hand edit of generated code) cannot land.
#
# usage: scripts/gen-clients.sh            install what is missing, regenerate in place
#        scripts/gen-clients.sh --check    regenerate elsewhere; exit 1 on drift
#        scripts/gen-clients.sh --install  only install the toolchains (used by scripts/interop.sh)
#
# Installs (only what is missing or outdated; all pinned, all from package registries):
#   - Python: a venv in .run/venv-interop (INTEROP_VENV) from clients/python/requirements-gen.txt
#   - Go:     protoc-gen-go and protoc-gen-go-grpc into .run/bin, versions below
#   - npm:    `npm ci` in clients/typescript (package-lock.json)
#   - protoc: Debian's protobuf-compiler + libprotobuf-dev (scripts/install-deps.sh --tests)
#   The google/rpc protos come from the googleapis-common-protos wheel in the venv.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${INTEROP_VENV:-$ROOT/.run/venv-interop}
BIN=$ROOT/.run/bin
PROTOS=(posts/v1/post.proto posts/v1/command.proto posts/v1/query.proto)

log() { printf '[gen-clients] %s\n' "$*"; }
die() {
    printf '[gen-clients] error: %s\n' "$*" >&2
    exit 1
}

MODE=generate
case "${1:-}" in
    "") ;;
    --check) MODE=check ;;
    --install) MODE=install ;;
    -h | --help)
        sed -n '2,26p' "$0"
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac

# hash_of FILE...: one sha256 over the files, for "is the install current" stamps.
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- tools
install_python() {
    local req=$ROOT/clients/python/requirements-gen.txt con=$ROOT/clients/python/constraints.txt
    local stamp=$VENV/.postmesh-requirements
    if [[ -x "$VENV/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$(hash_of "$req" "$con")" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is not installed"
    log "python: installing clients/python/requirements-gen.txt into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    # -r from the package directory, so the file's `-c constraints.txt` resolves.
    (cd "$ROOT/clients/python" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-virtualenv -r requirements-gen.txt)
    hash_of "$req" "$con" >"$stamp"
}

# go_bin_is BIN MODULE VERSION: BIN in .run/bin was built from MODULE@VERSION.
go_bin_is() {
    local info
    [[ -x "$BIN/$1" ]] || return 1
    info="$(go version -m "$BIN/$1" 2>/dev/null || true)"
    [[ "$info" == *"$(printf '\tmod\t%s\t%s\t' "$2" "$3")"* ]]
}

install_go() {
    command -v go >/dev/null || die "go is not installed"
    mkdir -p "$BIN"
    if ! go_bin_is protoc-gen-go google.golang.org/protobuf "$PROTOC_GEN_GO_VERSION"; then
        log "go: installing protoc-gen-go $PROTOC_GEN_GO_VERSION into .run/bin"
        GOBIN="$BIN" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
    fi
    if ! go_bin_is protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"; then
        log "go: installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION into .run/bin"
        GOBIN="$BIN" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
    fi
    # The client's own dependencies (go.sum pins them), so later builds need no network.
    (cd clients/go && go mod download)
}

install_node() {
    local dir=$ROOT/clients/typescript stamp=$ROOT/clients/typescript/node_modules/.postmesh-lock
    command -v npm >/dev/null || die "npm is not installed"
    if [[ -d "$dir/node_modules" && "$(cat "$stamp" 2>/dev/null)" == "$(hash_of "$dir/package-lock.json")" ]]; then
        return 0
    fi
    log "npm: npm ci in clients/typescript"
    # --ignore-scripts: nothing here needs an install script (protobufjs's only prints a notice).
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    hash_of "$dir/package-lock.json" >"$stamp"
}

need_protoc() {
    command -v protoc >/dev/null || die "protoc not found: run scripts/install-deps.sh (Debian protobuf-compiler)"
    [[ -f /usr/include/google/protobuf/timestamp.proto ]] ||
        die "google/protobuf/*.proto not found: run scripts/install-deps.sh (Debian libprotobuf-dev)"
}

install_all() {
    need_protoc
    install_python
    install_go
    install_node
}

# ---------------------------------------------------------------- generation
# Where each language's generated tree lives, relative to clients/ (and to OUT).
PY_GEN=python/src/postmesh_client/posts
GO_GEN=go/posts
TS_GEN=typescript/src/gen
GENERATED=("$PY_GEN" "$GO_GEN" "$TS_GEN")

# quiet_plugin CMD...: runs CMD, dropping mypy-protobuf's "Writing mypy to FILE" lines.
quiet_plugin() {
    local errors rc=0
    errors="$(mktemp)"
    "$@" 2>"$errors" || rc=$?
    grep -v '^Writing mypy to ' "$errors" >&2 || true
    rm -f "$errors"
    return "$rc"
}

# generate OUT: writes the three generated trees under OUT, laid out as in clients/.
generate() {
    local out=$1 rpc_protos py
    mkdir -p "$out/$PY_GEN" "$out/$GO_GEN" "$out/$TS_GEN"

    # Python: grpcio-tools' own protoc, so the code matches the pinned protobuf
    # runtime; mypy-protobuf's stubs carry the proto comments as docstrings.
    # protoc names modules after the proto paths (posts.v1.post_pb2); in the
    # package they live under postmesh_client, so the imports are rewritten,
    # and each directory gets an __init__.py (a regular package, for mypy too).
    py="$out/python/src/postmesh_client"
    (cd proto && quiet_plugin "$VENV/bin/python" -m grpc_tools.protoc -I . \
        --plugin=protoc-gen-mypy="$VENV/bin/protoc-gen-mypy" \
        --plugin=protoc-gen-mypy_grpc="$VENV/bin/protoc-gen-mypy_grpc" \
        --python_out="$py" --grpc_python_out="$py" --mypy_out="$py" --mypy_grpc_out="$py" \
        "${PROTOS[@]}")
    sed -i 's/^from posts\.v1 import /from postmesh_client.posts.v1 import /' "$py"/posts/v1/*.py "$py"/posts/v1/*.pyi
    if grep -n '^\(from\|import\) posts\b' "$py"/posts/v1/*.py "$py"/posts/v1/*.pyi; then
        die "generated Python code imports posts.* in a form the rewrite above does not cover"
    fi
    printf '"""Generated from proto/posts by scripts/gen-clients.sh."""\n' >"$py/posts/__init__.py"
    printf '"""posts.v1, generated from proto/posts/v1 by scripts/gen-clients.sh."""\n' >"$py/posts/v1/__init__.py"

    # Go: the import path is the protos' go_package (the module's posts/v1 package).
    (cd proto && protoc -I . \
        --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
        --go_out="$out/go" --go_opt=paths=source_relative \
        --go-grpc_out="$out/go" --go-grpc_opt=paths=source_relative \
        "${PROTOS[@]}")

    # TypeScript: ts-proto, plus google.rpc.Status and BadRequest (from the
    # googleapis-common-protos wheel) to decode grpc-status-details-bin.
    rpc_protos="$("$VENV/bin/python" -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')"
    [[ -f "$rpc_protos/google/rpc/error_details.proto" ]] || die "no google/rpc/error_details.proto in $rpc_protos"
    local rpc_include
    rpc_include="$(mktemp -d)"
    mkdir -p "$rpc_include/google/rpc"
    cp "$rpc_protos/google/rpc/status.proto" "$rpc_protos/google/rpc/error_details.proto" "$rpc_include/google/rpc/"
    (cd proto && protoc -I . -I "$rpc_include" \
        --plugin=protoc-gen-ts_proto="$ROOT/clients/typescript/node_modules/.bin/protoc-gen-ts_proto" \
        --ts_proto_out="$out/$TS_GEN" \
        --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js,exportCommonSymbols=false \
        "${PROTOS[@]}" google/rpc/status.proto google/rpc/error_details.proto)
    rm -rf "$rpc_include"
}

install_all
case "$MODE" in
    install) exit 0 ;;
    generate)
        scratch="$(mktemp -d)"
        trap 'rm -rf "$scratch"' EXIT
        generate "$scratch"
        for dir in "${GENERATED[@]}"; do
            rm -rf "clients/$dir"
            mkdir -p "$(dirname "clients/$dir")"
            cp -R "$scratch/$dir" "clients/$dir"
        done
        log "regenerated ${GENERATED[*]/#/clients/}"
        ;;
    check)
        scratch="$(mktemp -d)"
        trap 'rm -rf "$scratch"' EXIT
        generate "$scratch"
        drift=0
        for dir in "${GENERATED[@]}"; do
            if ! diff -ru --exclude=__pycache__ "clients/$dir" "$scratch/$dir" >"$scratch/diff.txt" 2>&1; then
                drift=1
                printf '[gen-clients] clients/%s differs from what proto/ generates:\n' "$dir" >&2
                head -n 40 "$scratch/diff.txt" >&2
            fi
        done
        if ((drift)); then
            die "generated code is out of date: run scripts/gen-clients.sh and commit clients/"
        fi
        log "generated code in clients/ matches proto/"
        ;;
esac
