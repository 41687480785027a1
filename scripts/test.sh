#!/usr/bin/env bash
# Runs every test: dependencies, servers, a build of the binaries the
# end-to-end tests spawn, the whole cargo test suite, buf lint/format on the
# protos, the OpenAPI drift check, the deploy checks, and the images and the
# compose file built and run with a Docker engine of its own. Prints
# a summary; exits non-zero if anything failed.
#
# usage: scripts/test.sh [extra args for cargo test, e.g. -- --nocapture]
# The servers are left running afterwards (scripts/servers.sh down stops them).
set -euo pipefail

PM_SCRIPT="test"
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

results=()
failures=0

# step NAME CMD...: run CMD, record its outcome and duration.
step() {
    local name=$1 start rc=0
    shift
    printf '\n[test] ===== %s =====\n' "$name"
    start=$SECONDS
    "$@" || rc=$?
    if ((rc == 0)); then
        results+=("$(printf 'ok      %-28s %4ss' "$name" $((SECONDS - start)))")
    else
        results+=("$(printf 'FAILED  %-28s %4ss  (exit %s)' "$name" $((SECONDS - start)) "$rc")")
        failures=$((failures + 1))
    fi
    return "$rc"
}

summary() {
    printf '\n[test] ===== summary =====\n'
    printf '  %s\n' "${results[@]}"
    if ((failures > 0)); then
        printf '[test] %d step(s) failed\n' "$failures"
    else
        printf '[test] all steps passed\n'
    fi
    # Every cargo test binary's counts, added up, as the closing line.
    if [[ -f "$ROOT/.run/cargo-test.log" ]]; then
        awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo: %d passed, %d failed\n", p, f }' \
            "$ROOT/.run/cargo-test.log"
    fi
}
trap summary EXIT

mkdir -p "$ROOT/.run"
rm -f "$ROOT/.run/cargo-test.log"


# Without these the rest cannot run: stop at the first failure.
step "install dependencies" "$ROOT/scripts/install-deps.sh" --tests || exit 1
step "servers up" "$ROOT/scripts/servers.sh" up || exit 1
# The end-to-end tests spawn the real binaries from target/debug.
step "cargo build --bins" cargo build --workspace --bins || exit 1

# Independent checks: run them all, so one failure does not hide another.
# The output is kept so the summary can add up every test binary's counts.
cargo_tests() {
    set -o pipefail
    cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$ROOT/.run/cargo-test.log"
}
step "cargo test" cargo_tests "$@" || true
step "buf lint/format/breaking" "$ROOT/scripts/buf-check.sh" || true
step "openapi drift" "$ROOT/scripts/gen-openapi.sh" --check || true
# Interop last: it brings the mesh up on the default ports (and down again).
step "interop (grpcurl, Python, Go, TypeScript)" "$ROOT/scripts/interop.sh" || true
if [[ -x "$ROOT/scripts/check-deploy.sh" ]]; then
    step "check-deploy" "$ROOT/scripts/check-deploy.sh" || true
else
    results+=("$(printf 'skipped %-28s (scripts/check-deploy.sh not present)' check-deploy)")
fi
# The images from deploy/Dockerfile and the compose file, run for real with a
# Docker engine of its own (local base images; minutes cold, cached in .run/).
step "images + compose (docker)" "$ROOT/scripts/check-images.sh" || true

((failures == 0))
