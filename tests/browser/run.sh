#!/usr/bin/env bash
# Runs the dashboard browser test: starts the service on a free port with a
# temporary SQLite database, seeds it, loads the dashboard in headless
# Chromium, and stops the service. Skips with a notice when Chromium or npm
# is missing. Usage: tests/browser/run.sh [path to the kpi-service binary]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
binary="$(realpath "${1:-$top/target/debug/kpi-service}")"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ] || ! command -v npm >/dev/null; then
    echo "NOTICE: browser test skipped: $chromium or npm is missing (apt-get install -y chromium)"
    exit 0
fi

(cd "$here" && npm ci --no-audit --no-fund --silent)

workdir="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
master_key="browser-test-master-key-0123456789abcdef"
password="browser-test-password"
# exec makes the subshell's process the service itself, so that the trap
# below stops the service and not only the subshell.
(
    cd "$workdir"
    exec env -i PATH="$PATH" PORT="$port" CENTER_API_KEY="$master_key" DASHBOARD_PASSWORD="$password" \
        DATABASE_URL="sqlite://$workdir/kpi.db" "$binary" >"$workdir/service.log" 2>&1
) &
service=$!
trap 'kill "$service" 2>/dev/null || true; wait "$service" 2>/dev/null || true; rm -rf "$workdir"' EXIT

up=no
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        up=yes
        break
    fi
    sleep 0.2
done
if [ "$up" != yes ]; then
    echo "the service did not start; its log:" >&2
    cat "$workdir/service.log" >&2
    exit 1
fi

KPI_BASE_URL="http://127.0.0.1:$port" KPI_MASTER_KEY="$master_key" KPI_DASHBOARD_PASSWORD="$password" \
    CHROMIUM="$chromium" node "$here/dashboard.mjs"
