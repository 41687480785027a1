#!/usr/bin/env bash
# Installs what postmesh needs, and only what is missing: a fresh Debian
# machine gets everything; a prepared one is done in seconds.
#
# usage: scripts/install-deps.sh [--mongo]   what the mesh needs (scripts/up.sh)
#        scripts/install-deps.sh --tests     everything CI needs (scripts/test.sh, .ci/run)
#
#   mesh (default):
#     apt:    redis-server, protobuf-compiler (+ libprotobuf-dev for
#             google/protobuf/*.proto, only a Recommends of protoc), jq (the
#             README's "try it" keeps an id with it)
#     go:     grpcurl (up.sh's health checks and the "try it" calls)
#     rust:   cargo (checked, not installed)
#   --mongo:  the mesh with FerretDB (a MongoDB-compatible server) as the read store:
#     go:     ferretdb
#   --tests:  the mesh with FerretDB, plus
#     apt:    mariadb-server (the MySQL event-store tests), curl (the HTTP suites and docs/http.md),
#             chromium + chromium-driver (the console's browser test), mmdebstrap and
#             docker.io (scripts/check-images.sh builds and runs the images)
#     go:     buf (proto lint/breaking), jaeger (the tracing test's OTLP receiver)
#     pip:    secantusdb (a MongoDB-compatible server: the MongoDB store suite's
#             second server), in a virtualenv of its own ($PM_SECANTUS_VENV)
#     rustup: rustfmt, clippy
# Go tools are pinned and go to $(go env GOPATH)/bin. The deploy checks
# (scripts/check-deploy.sh) and the client toolchains (scripts/gen-clients.sh)
# install their own tools on first use.
set -euo pipefail

PM_SCRIPT=install-deps
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=mesh
case "${1:-}" in
    "") ;;
    --mongo) MODE=mongo ;;
    --tests) MODE=tests ;;
    -h | --help)
        sed -n '2,22p' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 [--mongo | --tests]" >&2
        exit 2
        ;;
esac

FERRETDB_VERSION=v1.24.2
JAEGER_VERSION=v1.76.0
GRPCURL_VERSION=v1.9.4
# v1.65.0 needs only go >= 1.24 (later v1.7x releases need go 1.25/1.26) and
# understands the v2 buf.yaml in proto/.
BUF_VERSION=v1.65.0
APT_PACKAGES=(redis-server protobuf-compiler libprotobuf-dev jq)
if [[ $MODE == tests ]]; then APT_PACKAGES+=(mariadb-server curl chromium chromium-driver python3-venv mmdebstrap docker.io); fi
SECANTUS_VERSION=0.7.0b3

# Whatever was created only for this run is removed however the script ends.
sudo=()
policy_added=""
build_dir=""
cleanup() {
    if [[ -n "$policy_added" ]]; then "${sudo[@]}" rm -f "$policy_added"; fi
    if [[ -n "$build_dir" ]]; then rm -rf "$build_dir"; fi
}
trap cleanup EXIT
cd "$ROOT"

# ---------------------------------------------------------------- apt
apt_missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
        apt_missing+=("$pkg")
    fi
done

if ((${#apt_missing[@]} > 0)); then
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to install: ${apt_missing[*]}"
        sudo=(sudo)
    fi
    # apt must not start the distribution's own mariadb/redis on 3306/6379:
    # servers.sh runs its own, with the test user. A policy-rc.d that answers
    # 101 ("action forbidden") is Debian's way to say so; add one for the
    # duration of the install unless the machine already has one (containers do).
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        policy_added="$policy"
    fi
    log "apt: installing ${apt_missing[*]} (a minute on a fresh machine)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" </dev/null
else
    log "apt: ${APT_PACKAGES[*]} present"
fi

# ---------------------------------------------------------------- go tools
command -v go >/dev/null || die "go is not installed (needed to build grpcurl$([[ $MODE == mesh ]] || echo ", ferretdb"))"
mkdir -p "$PM_GO_BIN"

# Output is captured before matching: with pipefail, `cmd | grep -q` fails
# at random when grep exits early and cmd dies of SIGPIPE.

# go_bin_is BIN MODULE VERSION: the binary was built from MODULE at VERSION
# (read from the build info Go embeds; no need to run the binary).
go_bin_is() {
    local info
    [[ -x "$PM_GO_BIN/$1" ]] || return 1
    info="$(go version -m "$PM_GO_BIN/$1" 2>/dev/null || true)"
    [[ "$info" == *"$(printf '\tmod\t%s\t%s\t' "$2" "$3")"* ]]
}

# ferretdb_ok: ferretdb runs and reports the pinned version.
ferretdb_ok() {
    local out
    out="$("$PM_GO_BIN/ferretdb" --version 2>/dev/null || true)"
    [[ $'\n'"$out"$'\n' == *$'\n'"version: $FERRETDB_VERSION"$'\n'* ]]
}

go_present=()
if ! go_bin_is grpcurl github.com/fullstorydev/grpcurl "$GRPCURL_VERSION"; then
    log "go: installing grpcurl $GRPCURL_VERSION (a minute on a fresh machine)"
    GOBIN="$PM_GO_BIN" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
else
    go_present+=("grpcurl $GRPCURL_VERSION")
fi

if [[ $MODE == tests ]]; then
    if ! go_bin_is buf github.com/bufbuild/buf "$BUF_VERSION"; then
        log "go: installing buf $BUF_VERSION (a few minutes on a fresh machine)"
        GOBIN="$PM_GO_BIN" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
    else
        go_present+=("buf $BUF_VERSION")
    fi
fi

# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a
# binary that panics at start: FerretDB embeds build/version/version.txt,
# which is generated by its release tooling and absent from the module zip.
# So build it from a copy of the module source with that file written.
# The check runs the binary, which also catches such a broken install.
if [[ $MODE == mesh ]]; then
    :
elif ferretdb_ok; then
    go_present+=("ferretdb $FERRETDB_VERSION")
else
    log "go: building ferretdb $FERRETDB_VERSION (a few minutes on a fresh machine)"
    src="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
    [[ -d "$src" ]] || die "go mod download gave no source directory for FerretDB $FERRETDB_VERSION"
    build_dir="$(mktemp -d)"
    # Module cache files are read-only; make the copy writable so it can be removed.
    cp -R "$src/." "$build_dir/"
    chmod -R u+w "$build_dir"
    printf '%s\n' "$FERRETDB_VERSION" >"$build_dir/build/version/version.txt"
    printf 'local\n' >"$build_dir/build/version/package.txt"
    (cd "$build_dir" && go build -buildvcs=false -trimpath -o "$PM_GO_BIN/ferretdb.new" ./cmd/ferretdb)
    mv -f "$PM_GO_BIN/ferretdb.new" "$PM_GO_BIN/ferretdb"
    ferretdb_ok || die "the freshly built ferretdb does not report $FERRETDB_VERSION"
fi

# Jaeger v1.76.0 is the OTLP receiver of the tracing test. Its module has
# replace directives, so `go install ...@v1.76.0` refuses it; build it from a
# copy of the module source instead. Such a build records its version as
# "(devel)", so a stamp file next to the binary says which version it is.
if [[ $MODE != tests ]]; then
    :
elif [[ -x "$PM_GO_BIN/jaeger" && "$(cat "$PM_GO_BIN/.jaeger.version" 2>/dev/null)" == "$JAEGER_VERSION" ]]; then
    go_present+=("jaeger $JAEGER_VERSION")
else
    log "go: building jaeger $JAEGER_VERSION (several minutes on a fresh machine)"
    src="$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
    [[ -d "$src" ]] || die "go mod download gave no source directory for Jaeger $JAEGER_VERSION"
    build_dir="$(mktemp -d)"
    cp -R "$src/." "$build_dir/"
    chmod -R u+w "$build_dir"
    (cd "$build_dir" && go build -buildvcs=false -trimpath -o "$PM_GO_BIN/jaeger.new" ./cmd/jaeger)
    mv -f "$PM_GO_BIN/jaeger.new" "$PM_GO_BIN/jaeger"
    printf '%s\n' "$JAEGER_VERSION" >"$PM_GO_BIN/.jaeger.version"
    rm -rf "$build_dir"
fi
if ((${#go_present[@]} > 0)); then log "go: $(printf '%s, ' "${go_present[@]}" | sed 's/, $//') present in $PM_GO_BIN"; fi

# ---------------------------------------------------------------- pip
# SecantusDB from PyPI, pinned, in a virtualenv (Debian's python refuses
# system-wide pip installs, and the server's dependencies stay apart).
if [[ $MODE == tests ]]; then
    secantus_bin="$PM_SECANTUS_VENV/bin/secantusd-py"
    secantus_installed=""
    if [[ -x "$secantus_bin" ]]; then
        secantus_installed="$("$PM_SECANTUS_VENV/bin/python" -m pip show secantusdb 2>/dev/null || true)"
    fi
    if [[ "$secantus_installed" == *"Version: $SECANTUS_VERSION"* ]]; then
        log "pip: secantusdb $SECANTUS_VERSION present in $PM_SECANTUS_VENV"
    else
        log "pip: installing secantusdb $SECANTUS_VERSION into $PM_SECANTUS_VENV"
        python3 -m venv "$PM_SECANTUS_VENV"
        "$PM_SECANTUS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "secantusdb==$SECANTUS_VERSION"
        [[ -x "$secantus_bin" ]] || die "secantusdb installed no $secantus_bin"
    fi
fi

# ---------------------------------------------------------------- rust
command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup: https://rustup.rs)"
rust_missing=()
if [[ $MODE == tests ]]; then
    cargo fmt --version >/dev/null 2>&1 || rust_missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || rust_missing+=(clippy)
fi
if ((${#rust_missing[@]} > 0)); then
    command -v rustup >/dev/null || die "missing ${rust_missing[*]} and no rustup to add them"
    log "rustup: adding ${rust_missing[*]}"
    rustup component add "${rust_missing[@]}"
fi

log "all dependencies of mode '$MODE' present"
