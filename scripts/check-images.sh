#!/usr/bin/env bash
# Builds the three images from deploy/Dockerfile as a user with internet
# would, and runs them, without pulling anything from an image registry:
#
#   1. base images: local equivalents of the Dockerfile's public defaults,
#      built from Debian's packages with mmdebstrap and `docker import`ed:
#        rust    Debian 12 + gcc + this machine's Rust toolchain (RUST_IMAGE)
#        golang  the same rootfs + this machine's Go (GO_IMAGE)
#        runtime Debian 12's libc6, libgcc-s1, CA certificates and tzdata,
#                extracted only, user nonroot 65532 (RUNTIME_IMAGE, as distroless/cc)
#      The root filesystems are cached in .run/images/ (PM_IMAGE_CACHE), keyed
#      by what goes into them, so a warm run skips them.
#   2. a Docker engine of its own (Debian's docker.io) on a private socket,
#      host networking, BuildKit, state in .run/docker (build cache kept);
#   3. `docker build --target command-svc|query-svc|event-relay` with the
#      base images as build arguments, each timed, sizes printed;
#   4. the images run non-root with a read-only root filesystem against the
#      servers (MariaDB event store, FerretDB read model, Redis, each with
#      names of this run only), and the smoke test (scripts/smoke.sh):
#      create, read your write (GetPost min_version: the relay applied it),
#      health SERVING, then SIGTERM and exit status 0 for each container;
#   5. compose: Compose v2 (github.com/docker/compose/v2, built from the Go
#      module into a CLI plugin, cached in .run/bin) validates
#      deploy/compose.yaml (`docker compose config`), then brings the mesh up
#      with deploy/compose.local.yaml swapping in the images built here and
#      this machine's servers, runs the same smoke test, stops it (SIGTERM,
#      every container exits 0) and removes it.
#
# usage: scripts/check-images.sh [--keep]   (--keep: leave dockerd running)
# Needs root (dockerd), apt-get (mmdebstrap, docker.io when missing), the
# servers of scripts/servers.sh and grpcurl (scripts/install-deps.sh --tests).
set -euo pipefail

PM_SCRIPT=images
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

KEEP=""
case "${1:-}" in
    "") ;;
    --keep) KEEP=1 ;;
    *)
        echo "usage: $0 [--keep]" >&2
        exit 2
        ;;
esac

SUITE=bookworm
MIRROR="${PM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${PM_IMAGE_CACHE:-$RUN_DIR/images}"
DOCKER_STATE="$RUN_DIR/docker"
# dockerd's exec root holds unix sockets: keep its path short.
DOCKER_EXEC="/tmp/pm-docker-$(id -u)-$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)"
DOCKER_SOCK="$DOCKER_STATE/docker.sock"
DOCKER_PID="$DOCKER_STATE/dockerd.pid"
# Debian's CLI: it has BuildKit built in (newer CLIs want the buildx plugin).
DOCKER_CLI="${PM_DOCKER_CLI:-/usr/bin/docker}"
TAG="${PM_IMAGE_TAG:-ci}"
# name tag pairs, as the Dockerfile's build arguments take them
RUST_IMAGE=(postmesh-local/rust "$SUITE")
GO_IMAGE=(postmesh-local/golang "$SUITE")
RUNTIME_IMAGE=(postmesh-local/distroless-cc nonroot)
SERVICES=(command-svc query-svc event-relay)
COMPOSE_VERSION=v2.40.3
COMPOSE_BIN="$RUN_DIR/bin/docker-compose"
export DOCKER_CONFIG="$DOCKER_STATE/config"

docker() { "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" "$@"; }
export DOCKER_BUILDKIT=1

# timed NAME CMD...: run CMD and record how long it took, for the summary.
timings=()
timed() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    timings+=("$(printf '%-44s %5ss' "$name" $((SECONDS - start)))")
}

# ------------------------------------------------------------------ tools
need_apt() { # need_apt CMD PACKAGE
    command -v "$1" >/dev/null && return 0
    log "apt: installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" </dev/null >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$2" </dev/null >/dev/null; }
}

# ------------------------------------------------------------------ base root filesystems
RUSTC_DIR="$(rustc --print sysroot)"
GO_DIR="$(go env GOROOT)"
CA_DIR=/usr/local/share/ca-certificates

# The key of a cached rootfs: everything that goes into it.
builder_key() {
    {
        echo "$SUITE $MIRROR v1 ca-certificates gcc libc6-dev"
        rustc --version
        go version
        cat "$CA_DIR"/*.crt 2>/dev/null || true
    } | sha256sum | cut -c1-16
}
runtime_key() {
    {
        echo "$SUITE $MIRROR v1 libc6 libgcc-s1 ca-certificates tzdata base-files netbase"
        cat /etc/ssl/certs/ca-certificates.crt
    } | sha256sum | cut -c1-16
}

# The builder: what rust:1.89-bookworm and golang:1.26-bookworm offer the
# Dockerfile (apt, gcc, a Rust toolchain in PATH, Go in /usr/local/go), with
# the CA certificates of this machine (its egress proxy signs TLS).
build_builder_rootfs() {
    local out=$1
    mmdebstrap --quiet --variant=apt --include=ca-certificates,gcc,libc6-dev \
        --customize-hook="mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/cargo/bin\"" \
        --customize-hook="tar -C '$RUSTC_DIR' --exclude=./share/doc -cf - . | tar -C \"\$1/usr/local/rust\" -xf -" \
        --customize-hook="cp -a '$GO_DIR' \"\$1/usr/local/go\"" \
        --customize-hook="if ls '$CA_DIR'/*.crt >/dev/null 2>&1; then cp '$CA_DIR'/*.crt \"\$1/usr/local/share/ca-certificates/\"; chroot \"\$1\" update-ca-certificates >/dev/null 2>&1; fi" \
        "$SUITE" "$out" "$MIRROR"
}

# The runtime: distroless/cc's contents (glibc, libgcc, CA certificates,
# tzdata, /etc/passwd with nonroot 65532), extracted from Debian's packages
# without a shell or package manager.
build_runtime_rootfs() {
    local out=$1
    mmdebstrap --quiet --variant=extract \
        --include=libc6,libgcc-s1,ca-certificates,tzdata,base-files,netbase \
        --customize-hook="mkdir -p \"\$1/etc/ssl/certs\" \"\$1/tmp\" \"\$1/home/nonroot\" && chmod 1777 \"\$1/tmp\"" \
        --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
        --customize-hook="printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >\"\$1/etc/passwd\"" \
        --customize-hook="printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >\"\$1/etc/group\"" \
        --customize-hook="chown 65532:65532 \"\$1/home/nonroot\"" \
        --customize-hook="rm -rf \"\$1/usr/share/doc\" \"\$1/usr/share/man\" \"\$1/usr/share/info\" \"\$1/usr/share/lintian\"" \
        "$SUITE" "$out" "$MIRROR"
}

# cached_rootfs NAME KEY BUILD_FN: path of the cached tarball, built when absent.
cached_rootfs() {
    local name=$1 key=$2 build=$3 tar
    tar="$CACHE/$name-$key.tar"
    if [[ ! -s "$tar" ]]; then
        log "rootfs $name: building with mmdebstrap (cached as ${tar#"$ROOT"/})" >&2
        mkdir -p "$CACHE"
        rm -f "$CACHE/$name"-*.tar
        # mmdebstrap picks the output format by the name's extension: keep .tar last.
        "$build" "${tar%.tar}.partial.tar" >&2
        mv "${tar%.tar}.partial.tar" "$tar"
    else
        log "rootfs $name: cached (${tar#"$ROOT"/})" >&2
    fi
    printf '%s\n' "$tar"
}

# import_image TAR IMAGE CHANGE...: `docker import` unless IMAGE already came from TAR.
import_image() {
    local tar=$1 image=$2 label
    shift 2
    label="$(basename "$tar")"
    if [[ "$(docker image inspect -f '{{ index .Config.Labels "postmesh.rootfs" }}' "$image" 2>/dev/null)" == "$label" ]]; then
        log "image $image: present"
        return 0
    fi
    log "image $image: docker import"
    local changes=(--change "LABEL postmesh.rootfs=$label")
    for c in "$@"; do changes+=(--change "$c"); done
    docker import "${changes[@]}" "$tar" "$image" >/dev/null
}

# ------------------------------------------------------------------ dockerd
dockerd_up() {
    mkdir -p "$DOCKER_STATE" "$LOG_DIR"
    if pid_running "$DOCKER_PID" dockerd >/dev/null && docker version >/dev/null 2>&1; then
        log "dockerd: already running (pid $(cat "$DOCKER_PID"))"
        return 0
    fi
    log "dockerd: starting on unix://${DOCKER_SOCK#"$ROOT"/} (host networking only)"
    spawn "$LOG_DIR/dockerd.log" "$DOCKER_PID" dockerd \
        --host "unix://$DOCKER_SOCK" --data-root "$DOCKER_STATE/data" \
        --exec-root "$DOCKER_EXEC" --pidfile "$DOCKER_STATE/dockerd.self.pid" \
        --bridge none --iptables=false --ip-masq=false --ip-forward=false \
        --storage-driver overlay2 --log-level warn
    wait_ready dockerd "$LOG_DIR/dockerd.log" "$DOCKER_PID" docker version
}
dockerd_down() {
    [[ -z "$KEEP" ]] || return 0
    stop_pidfile dockerd "$DOCKER_PID" dockerd 60
}

# ------------------------------------------------------------------ build
build_image() { # build_image SERVICE
    docker build --quiet -f deploy/Dockerfile --target "$1" \
        --network host \
        --build-arg "RUST_IMAGE=${RUST_IMAGE[0]}" --build-arg "RUST_TAG=${RUST_IMAGE[1]}" \
        --build-arg "GO_IMAGE=${GO_IMAGE[0]}" --build-arg "GO_TAG=${GO_IMAGE[1]}" \
        --build-arg "RUNTIME_IMAGE=${RUNTIME_IMAGE[0]}" --build-arg "RUNTIME_TAG=${RUNTIME_IMAGE[1]}" \
        -t "postmesh/$1:$TAG" . >/dev/null
}

# ------------------------------------------------------------------ run + smoke
RUN_ID="img_$(date +%s)_$$"
containers=()
compose_project=""
cleanup() {
    local rc=$?
    if ((${#containers[@]} > 0)); then docker rm -f "${containers[@]}" >/dev/null 2>&1 || true; fi
    if [[ -n "$compose_project" ]]; then
        docker compose -p "$compose_project" -f deploy/compose.yaml -f deploy/compose.local.yaml \
            down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    dockerd_down || true
    if ((${#timings[@]} > 0)); then
        printf '[images] timings:\n'
        printf '  %s\n' "${timings[@]}"
    fi
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 30000))
        if ! port_open "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free port found"
}

# run_service NAME IMAGE ENV...: a hardened container on the host network.
run_service() {
    local name=$1 image=$2
    shift 2
    local envs=()
    for e in "$@"; do envs+=(-e "$e"); done
    docker run -d --name "$RUN_ID-$name" --network host \
        --read-only --tmpfs /tmp --user 65532:65532 --cap-drop ALL \
        --security-opt no-new-privileges "${envs[@]}" "$image" >/dev/null
    containers+=("$RUN_ID-$name")
}

smoke() {
    local cmd_port query_port relay_port metrics db
    cmd_port="$(free_port)" query_port="$(free_port)" relay_port="$(free_port)"
    db="$RUN_ID"
    mysql_cli -e "CREATE DATABASE \`$db\`"
    local common=(
        "REDIS_URL=$TEST_REDIS_URL" "STREAM_NAME=$RUN_ID.events" "NOTIFY_CHANNEL=$RUN_ID.applied"
        "MONGODB_URL=$TEST_MONGODB_URL" "MONGODB_DATABASE=$RUN_ID"
        "READ_STORE_URL=$TEST_MONGODB_URL" "READ_STORE_DATABASE=$RUN_ID" "SHUTDOWN_GRACE_SECS=5"
    )
    run_service command-svc "postmesh/command-svc:$TAG" "${common[@]}" \
        "COMMAND_LISTEN_ADDR=127.0.0.1:$cmd_port" "METRICS_ADDR=127.0.0.1:$(free_port)" \
        "COMMAND_DATABASE_URL=$TEST_MYSQL_URL/$db"
    run_service query-svc "postmesh/query-svc:$TAG" "${common[@]}" \
        "QUERY_LISTEN_ADDR=127.0.0.1:$query_port" "METRICS_ADDR=127.0.0.1:$(free_port)"
    metrics="$(free_port)"
    run_service event-relay "postmesh/event-relay:$TAG" "${common[@]}" \
        "RELAY_HEALTH_ADDR=127.0.0.1:$relay_port" "METRICS_ADDR=127.0.0.1:$metrics" \
        "COMMAND_ENDPOINT=http://127.0.0.1:$cmd_port" "CONSUMER_NAME=$RUN_ID"
    PM_SMOKE_LOGS="docker_logs $RUN_ID" "$ROOT/scripts/smoke.sh" \
        "127.0.0.1:$cmd_port" "127.0.0.1:$query_port" "127.0.0.1:$relay_port" "http://127.0.0.1:$metrics/metrics" ||
        { docker_logs "$RUN_ID"; return 1; }
    stop_containers
    mysql_cli -e "DROP DATABASE \`$db\`" || true
}

mysql_cli() {
    "$(command -v mariadb || command -v mysql)" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PM_MYSQL_PORT" \
        -upostmesh -ppostmesh "$@"
}

docker_logs() {
    local c
    for c in "${containers[@]}"; do
        printf -- '----- docker logs %s -----\n' "$c" >&2
        docker logs --tail 30 "$c" >&2 2>&1 || true
    done
}

# SIGTERM each container (relay first), then each must exit 0 within its grace.
stop_containers() {
    local c code rc=0
    for c in "$RUN_ID-event-relay" "$RUN_ID-query-svc" "$RUN_ID-command-svc"; do
        docker kill --signal TERM "$c" >/dev/null
        code="$(timeout 60 "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" wait "$c")" || code=timeout
        if [[ "$code" == 0 ]]; then
            log "smoke: ${c#"$RUN_ID"-}: SIGTERM, exit status 0"
        else
            warn "smoke: ${c#"$RUN_ID"-}: SIGTERM, exit status $code"
            docker logs --tail 30 "$c" >&2 2>&1 || true
            rc=1
        fi
    done
    return "$rc"
}

# ------------------------------------------------------------------ compose
# The module has exclude directives, so `go install ...@version` refuses it:
# build from a copy of the module source (as install-deps.sh does for Jaeger).
ensure_compose() {
    local src dir
    if [[ ! -x "$COMPOSE_BIN" || "$(cat "$COMPOSE_BIN.version" 2>/dev/null)" != "$COMPOSE_VERSION" ]]; then
        log "compose: building github.com/docker/compose/v2 $COMPOSE_VERSION (minutes, once)"
        src="$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
        [[ -d "$src" ]] || die "go mod download gave no source directory for compose $COMPOSE_VERSION"
        dir="$(mktemp -d)"
        cp -R "$src/." "$dir/"
        chmod -R u+w "$dir"
        mkdir -p "$(dirname "$COMPOSE_BIN")"
        (cd "$dir" && go build -trimpath -buildvcs=false \
            -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
            -o "$COMPOSE_BIN" ./cmd) || { rm -rf "$dir"; return 1; }
        rm -rf "$dir"
        printf '%s\n' "$COMPOSE_VERSION" >"$COMPOSE_BIN.version"
    fi
    # A CLI plugin of the Debian docker CLI, in this run's private DOCKER_CONFIG.
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    ln -sf "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
    docker compose version
}

compose_check() {
    local project="pm${RUN_ID//[^a-z0-9]/}" db="${RUN_ID}_compose" base
    compose() { docker compose -p "$project" -f deploy/compose.yaml -f deploy/compose.local.yaml "$@"; }
    # The file users get, as they get it.
    docker compose -f deploy/compose.yaml config --quiet
    log "compose: deploy/compose.yaml valid (docker compose config)"

    mysql_cli -e "CREATE DATABASE \`$db\`"
    base="$(free_port)"
    base="${base:0:4}"
    export POSTMESH_TAG="$TAG" PM_COMPOSE_RUN="${RUN_ID}_compose"
    export PM_COMPOSE_MYSQL_URL="$TEST_MYSQL_URL/$db" PM_COMPOSE_MONGODB_URL="$TEST_MONGODB_URL"
    export PM_COMPOSE_REDIS_URL="$TEST_REDIS_URL" PM_COMPOSE_METRICS_PORT_BASE="$base"
    PM_COMPOSE_COMMAND_PORT="$(free_port)" PM_COMPOSE_QUERY_PORT="$(free_port)" PM_COMPOSE_RELAY_PORT="$(free_port)"
    export PM_COMPOSE_COMMAND_PORT PM_COMPOSE_QUERY_PORT PM_COMPOSE_RELAY_PORT
    compose config --quiet
    compose_project="$project"
    compose up -d
    local rc=0
    "$ROOT/scripts/smoke.sh" "127.0.0.1:$PM_COMPOSE_COMMAND_PORT" "127.0.0.1:$PM_COMPOSE_QUERY_PORT" \
        "127.0.0.1:$PM_COMPOSE_RELAY_PORT" "http://127.0.0.1:${base}3/metrics" || rc=1
    compose ps -a
    if ((rc == 0)); then
        # `stop` sends SIGTERM; every container must then have exited 0.
        compose stop -t 30
        local c code
        for c in $(compose ps -a -q); do
            code="$(docker inspect -f '{{.Name}} {{.State.ExitCode}}' "$c")"
            log "compose: ${code#/} (exit status after SIGTERM)"
            [[ "${code##* }" == 0 ]] || rc=1
        done
    fi
    ((rc == 0)) || compose logs --tail 30 >&2 || true
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    compose_project=""
    mysql_cli -e "DROP DATABASE \`$db\`" || true
    return "$rc"
}

# ------------------------------------------------------------------ main
need_apt mmdebstrap mmdebstrap
need_apt dockerd docker.io
command -v grpcurl >/dev/null || die "grpcurl not found; run scripts/install-deps.sh --tests"

start=$SECONDS
builder_tar="$(cached_rootfs builder "$(builder_key)" build_builder_rootfs)"
runtime_tar="$(cached_rootfs runtime "$(runtime_key)" build_runtime_rootfs)"
timings+=("$(printf '%-44s %5ss' "base root filesystems (mmdebstrap or cache)" $((SECONDS - start)))")

timed "dockerd up" dockerd_up
base_env=(
    "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "ENV CARGO_HOME=/usr/local/cargo"
)
import_bases() {
    import_image "$builder_tar" "${RUST_IMAGE[0]}:${RUST_IMAGE[1]}" "${base_env[@]}"
    import_image "$builder_tar" "${GO_IMAGE[0]}:${GO_IMAGE[1]}" "${base_env[@]}"
    import_image "$runtime_tar" "${RUNTIME_IMAGE[0]}:${RUNTIME_IMAGE[1]}" "USER 65532:65532" "WORKDIR /home/nonroot"
}
timed "docker import (3 base images)" import_bases

for svc in "${SERVICES[@]}"; do
    log "docker build --target $svc"
    timed "docker build --target $svc" build_image "$svc"
done
for svc in "${SERVICES[@]}"; do
    log "image postmesh/$svc:$TAG: $(docker image inspect -f '{{.Size}}' "postmesh/$svc:$TAG" |
        awk '{ printf "%.1f MB", $1 / 1e6 }')"
done

"$ROOT/scripts/servers.sh" up mariadb redis ferretdb >/dev/null
timed "run + smoke test" smoke
log "images built and smoke-tested"

timed "compose v2 plugin (build when missing)" ensure_compose
timed "compose config + up + smoke + stop" compose_check
log "compose: the mesh came up, passed the smoke test and stopped cleanly"
