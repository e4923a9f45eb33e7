#!/usr/bin/env bash
# Measures what DATABASE_TRANSACTION_POOLER costs, with the load client of
# bench/run.sh, in three set-ups on one PostgreSQL server:
#
#   direct        the service straight to PostgreSQL, as by default
#   unnamed       straight to PostgreSQL with DATABASE_TRANSACTION_POOLER=true,
#                 the cost of unnamed statements and read transactions alone
#   pgbouncer     through a PgBouncer in transaction mode, with the setting
#
# Settings, as environment variables: BENCH_DURATION (10 s), BENCH_WARMUP
# (2 s), BENCH_CONNECTIONS (8), BENCH_SCENARIOS ("events submit dashboard"),
# BENCH_PG_SERVER (postgres://postgres@127.0.0.1:5432) and PGBOUNCER
# (/usr/sbin/pgbouncer). Needs cargo, psql, jq and PgBouncer; under root,
# PgBouncer runs as nobody. It creates and drops only the database
# kpi_bench_pooler. Raw figures go to target/bench/pooler-<UTC time>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
connections=${BENCH_CONNECTIONS:-8}
scenarios=${BENCH_SCENARIOS:-"events submit dashboard"}
pg_server=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
pgbouncer=${PGBOUNCER:-/usr/sbin/pgbouncer}
database=kpi_bench_pooler

fail() {
    echo "bench/pooler.sh: $*" >&2
    exit 1
}

for tool in cargo psql jq; do
    command -v "$tool" >/dev/null || fail "$tool is not installed or not on the PATH"
done
[[ -x $pgbouncer ]] || fail "PgBouncer not found at $pgbouncer (apt-get install -y pgbouncer)"

cargo build --release --bin kpi-service --example loadgen
service_bin=$PWD/target/release/kpi-service
loadgen=$PWD/target/release/examples/loadgen
mkdir -p target/bench
results=$PWD/target/bench/pooler-$(date -u +%Y%m%dT%H%M%SZ).jsonl
work=$(mktemp -d /tmp/kpi-bench-pooler.XXXXXX)
chmod 755 "$work"
service_pid=
bouncer_pid=

CENTER_API_KEY=$(head -c 32 /dev/urandom | base64)
DASHBOARD_PASSWORD=$(head -c 18 /dev/urandom | base64)
export CENTER_API_KEY DASHBOARD_PASSWORD DASHBOARD_USERNAME=admin
export ENVIRONMENT=development LOG_LEVEL=warn HOST=127.0.0.1 DATABASE_POOL_SIZE=10
export RATE_LIMIT_SUBMIT=1000000/second RATE_LIMIT_EVENTS=1000000/second
export RATE_LIMIT_DASHBOARD=1000000/second RATE_LIMIT_HEALTH=1000000/second
export RATE_LIMIT_CENTER_SUBMIT=1000000/second RATE_LIMIT_CENTER_EVENTS=1000000/second
unset REDIS_URL METRICS_PORT LOG_DIR SENTRY_DSN
PORT=$("$loadgen" free-port)
export PORT
bouncer_port=$("$loadgen" free-port)
direct_url="$pg_server/$database"

cleanup() {
    [[ -n $service_pid ]] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
    [[ -n $bouncer_pid ]] && kill "$bouncer_pid" 2>/dev/null && wait "$bouncer_pid" 2>/dev/null
    psql "$pg_server/postgres" -qtAc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# PgBouncer in transaction mode with as many server connections as the
# service's pool, so that only the pooler's hop and mode differ.
user=$(sed -E 's|^[a-z]+://([^@:/]+).*|\1|' <<<"$pg_server")
host_port=$(sed -E 's|^[a-z]+://[^@]*@([^/]+).*|\1|' <<<"$pg_server")
cat >"$work/pgbouncer.ini" <<EOF
[databases]
* = host=${host_port%:*} port=${host_port##*:} user=$user
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 10
max_client_conn = 200
EOF
chmod 644 "$work/pgbouncer.ini"
if [[ $(id -u) == 0 ]]; then
    runuser -u nobody -- "$pgbouncer" "$work/pgbouncer.ini" >"$work/pgbouncer.log" 2>&1 &
else
    "$pgbouncer" "$work/pgbouncer.ini" >"$work/pgbouncer.log" 2>&1 &
fi
bouncer_pid=$!
pooled_url="postgres://$user@127.0.0.1:$bouncer_port/$database"

# Starts the service for set-up $1 on a fresh database and waits until ready.
start_service() {
    psql "$pg_server/postgres" -qtAc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
    psql "$pg_server/postgres" -qtAc "CREATE DATABASE $database" >/dev/null
    case $1 in
    direct) env DATABASE_URL="$direct_url" "$service_bin" serve >"$work/service.log" 2>&1 & ;;
    unnamed) env DATABASE_URL="$direct_url" DATABASE_DIRECT_URL="$direct_url" \
        DATABASE_TRANSACTION_POOLER=true "$service_bin" serve >"$work/service.log" 2>&1 & ;;
    pgbouncer) env DATABASE_URL="$pooled_url" DATABASE_DIRECT_URL="$direct_url" \
        DATABASE_TRANSACTION_POOLER=true "$service_bin" serve >"$work/service.log" 2>&1 & ;;
    esac
    service_pid=$!
    for _ in $(seq 1 300); do
        "$loadgen" fetch --url "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$work/service.log" >&2
    fail "the service did not become ready for set-up $1"
}

stop_service() {
    kill "$service_pid"
    wait "$service_pid" || true
    service_pid=
}

for setup in direct unnamed pgbouncer; do
    start_service "$setup"
    for scenario in $scenarios; do
        "$loadgen" run --url "http://127.0.0.1:$PORT" --scenario "$scenario" \
            --connections "$connections" --duration "$duration" --warmup "$warmup" \
            --backend "$setup" --service-pid "$service_pid" --out "$results" >/dev/null
    done
    stop_service
done

echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "$connections connections, $duration s after $warmup s of warm-up; raw figures in $results"
jq -r '[.backend, .scenario, (.rps | floor), (.p50_ms * 100 | round / 100),
        (.p99_ms * 100 | round / 100), .error_count] | @tsv' "$results" |
    column -t -N "set-up,scenario,req/s,p50 ms,p99 ms,errors"
