#!/usr/bin/env bash
# The smoke test of a running mesh, wherever it runs (images, compose):
# health SERVING on all three, create a post, read the write back
# (GetPost min_version waits for the read model, which only the relay writes),
# and, given the relay's metrics URL, its relay_events_applied counter moved.
#
# usage: scripts/smoke.sh COMMAND_ADDR QUERY_ADDR RELAY_ADDR [RELAY_METRICS_URL]
#   e.g. scripts/smoke.sh 127.0.0.1:50051 127.0.0.1:50052 127.0.0.1:50053
# PM_SMOKE_TIMEOUT (default 120) bounds the wait for SERVING, in seconds.
set -euo pipefail

PM_SCRIPT=smoke
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 3)) || die "usage: $0 COMMAND_ADDR QUERY_ADDR RELAY_ADDR [RELAY_METRICS_URL]"
command_addr=$1 query_addr=$2 relay_addr=$3 metrics_url=${4:-}
timeout_secs="${PM_SMOKE_TIMEOUT:-120}"

serving() {
    local out
    out="$(grpcurl -plaintext -max-time 2 "$1" grpc.health.v1.Health/Check 2>/dev/null)" || return 1
    [[ "$out" == *'"status": "SERVING"'* ]]
}

for entry in "command-svc $command_addr" "query-svc $query_addr" "event-relay $relay_addr"; do
    read -r name addr <<<"$entry"
    deadline=$((SECONDS + timeout_secs))
    until serving "$addr"; do
        ((SECONDS < deadline)) || die "$name on $addr not SERVING after ${timeout_secs}s"
        sleep 0.5
    done
    log "$name on $addr: health SERVING"
done

title="smoke $(date +%s)-$$"
created="$(grpcurl -plaintext -max-time 10 \
    -d "{\"title\": \"$title\", \"content\": \"from scripts/smoke.sh\", \"author_name\": \"smoke\"}" \
    "$command_addr" posts.v1.PostCommand/CreatePost)" || die "CreatePost failed: $created"
post_id="$(sed -n 's/.*"postId": "\([0-9]*\)".*/\1/p' <<<"$created")"
[[ -n "$post_id" ]] || die "CreatePost answered without a postId: $created"
log "CreatePost: post $post_id at version 1"

read_back="$(grpcurl -plaintext -max-time 15 -d "{\"post_id\": $post_id, \"min_version\": 1}" \
    "$query_addr" posts.v1.PostQuery/GetPost)" || die "GetPost min_version 1 failed: $read_back"
[[ "$read_back" == *"\"title\": \"$title\""* ]] || die "GetPost returned another post: $read_back"
log "GetPost min_version 1: read the write back (the relay applied it)"

if [[ -n "$metrics_url" ]]; then
    applied="$(python3 - "$metrics_url" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines()
          if l.startswith("relay_events_applied") and not l.startswith("#")))
PY
)" || die "could not scrape $metrics_url"
    awk -v n="$applied" 'BEGIN { exit !(n >= 1) }' || die "relay_events_applied is $applied at $metrics_url"
    log "event-relay metrics: relay_events_applied $applied"
fi
log "smoke test passed"
