#!/usr/bin/env bash
# Generates the client code in clients/ from proto/ (the only source of the
# contract), for the three interop clients:
#
#   clients/python/gen/posts/v1/        grpcio-tools (its bundled protoc, matched to
#                                        the pinned protobuf runtime): *_pb2.py, *_pb2.pyi, *_pb2_grpc.py
#   clients/go/gen/posts/v1/            protoc + protoc-gen-go + protoc-gen-go-grpc: *.pb.go, *_grpc.pb.go
#   clients/typescript/src/gen/         protoc + ts-proto (grpc-js services): posts/v1/*.ts and
#                                        google/rpc/{status,error_details}.ts for the error details
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
#   - Python: a venv in .run/venv-interop (INTEROP_VENV) from clients/python/requirements.txt
#   - Go:     protoc-gen-go and protoc-gen-go-grpc into .run/bin, versions below
#   - npm:    `npm ci` in clients/typescript (package-lock.json)
#   - protoc: Debian's protobuf-compiler + libprotobuf-dev (scripts/install-deps.sh)
#   The google/rpc protos come from the googleapis-common-protos wheel in the venv.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${INTEROP_VENV:-$ROOT/.run/venv-interop}
BIN=$ROOT/.run/bin
GO_MODULE=postmesh/clients/go
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
        sed -n '2,27p' "$0"
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac

# hash_of FILE...: one sha256 over the files, for "is the install current" stamps.
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- tools
install_python() {
    local req=$ROOT/clients/python/requirements.txt stamp=$VENV/.postmesh-requirements
    if [[ -x "$VENV/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$(hash_of "$req")" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is not installed"
    log "python: installing clients/python/requirements.txt into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv -r "$req"
    hash_of "$req" >"$stamp"
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
# generate OUT: writes the three generated trees under OUT, laid out as in clients/.
generate() {
    local out=$1 rpc_protos go_opts=() p
    mkdir -p "$out/python/gen" "$out/go/gen" "$out/typescript/src/gen"

    # Python: grpcio-tools' own protoc, so the code matches the pinned protobuf runtime.
    (cd proto && "$VENV/bin/python" -m grpc_tools.protoc -I . \
        --python_out="$out/python/gen" --pyi_out="$out/python/gen" --grpc_python_out="$out/python/gen" \
        "${PROTOS[@]}")

    # Go: the protos carry no go_package option (the contract stays language-neutral),
    # so the import path is given here.
    for p in "${PROTOS[@]}"; do
        go_opts+=("--go_opt=M$p=$GO_MODULE/gen/posts/v1;postsv1" "--go-grpc_opt=M$p=$GO_MODULE/gen/posts/v1;postsv1")
    done
    (cd proto && protoc -I . \
        --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
        --go_out="$out/go/gen" --go_opt=paths=source_relative \
        --go-grpc_out="$out/go/gen" --go-grpc_opt=paths=source_relative \
        "${go_opts[@]}" "${PROTOS[@]}")

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
        --ts_proto_out="$out/typescript/src/gen" \
        --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true \
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
        rm -rf clients/python/gen clients/go/gen clients/typescript/src/gen
        mkdir -p clients/typescript/src
        cp -R "$scratch/python/gen" clients/python/gen
        cp -R "$scratch/go/gen" clients/go/gen
        cp -R "$scratch/typescript/src/gen" clients/typescript/src/gen
        log "regenerated clients/python/gen, clients/go/gen, clients/typescript/src/gen"
        ;;
    check)
        scratch="$(mktemp -d)"
        trap 'rm -rf "$scratch"' EXIT
        generate "$scratch"
        drift=0
        for dir in python/gen go/gen typescript/src/gen; do
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
