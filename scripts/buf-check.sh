#!/usr/bin/env bash
# The proto contract checks: `buf lint`, `buf format --diff`, and `buf breaking`
# against the previous commit, so a wire- or JSON-incompatible change to
# proto/ (the WIRE_JSON rules in proto/buf.yaml) fails CI.
#
# usage: scripts/buf-check.sh [--against GIT-REF]
#
# The baseline of `buf breaking` is, by default:
#   - HEAD, when proto/ has changes not yet committed (a developer editing it), else
#   - HEAD~1, the previous commit on main (CI checks a fresh clone: its HEAD is
#     the commit being submitted).
# --against (or BUF_BREAKING_AGAINST) names another baseline, e.g. a release tag.
# A baseline without proto/buf.yaml (or a clone without that commit) skips the
# breaking check with a note; lint and format still run.
#
# buf comes from scripts/install-deps.sh (v1.65.0 in $(go env GOPATH)/bin).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"

log() { printf '[buf-check] %s\n' "$*"; }

against="${BUF_BREAKING_AGAINST:-}"
case "${1:-}" in
    "") ;;
    --against)
        against="${2:?--against needs a git ref}"
        ;;
    -h | --help)
        sed -n '2,16p' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 [--against GIT-REF]" >&2
        exit 2
        ;;
esac

command -v buf >/dev/null || {
    echo "[buf-check] error: buf not found; run scripts/install-deps.sh" >&2
    exit 1
}

failures=0
run() {
    local name=$1
    shift
    if "$@"; then
        log "ok: $name"
    else
        log "FAILED: $name"
        failures=$((failures + 1))
    fi
}

run "buf lint" buf lint proto
run "buf format --diff" buf format proto --diff --exit-code

if [[ -z "$against" ]]; then
    if [[ -n "$(git status --porcelain -- proto 2>/dev/null)" ]]; then
        against=HEAD
    else
        against=HEAD~1
    fi
fi

baseline="$(mktemp -d)"
trap 'rm -rf "$baseline"' EXIT
if ! commit="$(git rev-parse --verify --quiet "$against^{commit}")"; then
    log "skipped: buf breaking (no commit '$against' in this clone)"
elif ! git cat-file -e "$commit:proto/buf.yaml" 2>/dev/null; then
    log "skipped: buf breaking ($against has no proto/buf.yaml)"
else
    git archive "$commit" proto | tar -x -C "$baseline"
    run "buf breaking against $against ($(git rev-parse --short "$commit"))" \
        buf breaking proto --against "$baseline/proto"
fi

((failures == 0))
