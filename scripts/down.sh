#!/usr/bin/env bash
# Stops the services scripts/up.sh started (pidfiles in .run/), then the
# servers scripts/servers.sh started. Processes it did not start are left alone.
#
# usage: scripts/down.sh [--keep-servers]
#   --keep-servers  stop only the services (up.sh uses this to restart them)
set -euo pipefail

PM_SCRIPT=down
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep_servers=""
case "${1:-}" in
    "") ;;
    --keep-servers) keep_servers=1 ;;
    *)
        echo "usage: $0 [--keep-servers]" >&2
        exit 2
        ;;
esac

# Reverse start order: the relay stops consuming before the services it feeds go.
for name in event-relay query-svc command-svc; do
    # The pattern is the binary's name, as it appears in the process's command line.
    stop_pidfile "$name" "$RUN_DIR/$name.pid" "$name" 30
done

if [[ -z "$keep_servers" ]]; then
    "$ROOT/scripts/servers.sh" down
fi
