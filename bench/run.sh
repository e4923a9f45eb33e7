#!/usr/bin/env bash
# Benchmarks the service on PostgreSQL and on SQLite, runs the same SQL with
# pgbench, and prints one table. BENCHMARKS.md describes what it measures.
# Every setting below is an environment variable.
#
# BENCH_REVISION=<commit> benchmarks the service as of that commit, exported
# with `git archive` and built in target/bench/build, so the working tree is
# left alone. The load client and the pgbench scripts always come from the
# working tree.
#
# Needs: cargo, a PostgreSQL server whose user may create databases (trust
# or a password in the URL), and psql, pgbench and jq on the PATH. It
# creates and drops only databases whose names start with kpi_bench.
# Raw figures go to target/bench/<UTC time>/results.jsonl, and
# target/bench/latest points at the newest run.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10}             # measured seconds per scenario
warmup=${BENCH_WARMUP:-2}                  # seconds of load before each measurement
connections=${BENCH_CONNECTIONS:-"1 8 64"}
backends=${BENCH_BACKENDS:-"postgres sqlite"}
scenarios=${BENCH_SCENARIOS:-"events events-ids submit submit-enhanced dashboard health"}
starts=${BENCH_STARTS:-3}                  # start-up measurements per backend and database state
centers=${BENCH_CENTERS:-8}
event_days=${BENCH_EVENT_DAYS:-30}
batch_days=${BENCH_BATCH_DAYS:-365}
pg_server=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
database=${BENCH_DB:-kpi_bench}
run_pgbench=${BENCH_PGBENCH:-1}            # 0 skips the pgbench part
revision=${BENCH_REVISION:-}               # empty: the working tree as it is

fail() {
    echo "bench/run.sh: $*" >&2
    exit 1
}

for name in duration warmup starts centers event_days batch_days; do
    [[ ${!name} =~ ^[0-9]+$ ]] || fail "BENCH_${name^^} must be a whole number, got '${!name}'"
done
[[ $duration -ge 1 && $starts -ge 1 && $centers -ge 1 && $centers -le 99 ]] ||
    fail "BENCH_DURATION and BENCH_STARTS must be at least 1, BENCH_CENTERS from 1 to 99"
[[ $database =~ ^kpi_bench[a-z0-9_]*$ ]] ||
    fail "BENCH_DB must start with kpi_bench and contain only a-z, 0-9 and _, got '$database'"
for tool in cargo psql pgbench jq; do
    command -v "$tool" >/dev/null || fail "$tool is not installed or not on the PATH"
done
psql "$pg_server/postgres" -qtAc 'SELECT 1' >/dev/null ||
    fail "cannot connect to PostgreSQL at $pg_server (set BENCH_PG_SERVER)"

echo "Building the service and the load client in release mode"
cargo build --release --bin kpi-service --example loadgen
# The working tree's binary also migrates the pgbench database, because the
# pgbench scripts follow the working tree's schema.
tree_bin=$PWD/target/release/kpi-service
service_bin=$tree_bin
loadgen=$PWD/target/release/examples/loadgen

out=target/bench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out/pgbench"
ln -sfn "$(basename "$out")" target/bench/latest
results=$out/results.jsonl
work=$(mktemp -d /tmp/kpi-bench.XXXXXX)
service_pid=

if [[ -n $revision ]]; then
    commit=$(git rev-parse --short "$revision^{commit}") ||
        fail "BENCH_REVISION '$revision' is not a commit of this repository"
    echo "Building the service as of commit $commit in target/bench/build"
    git archive --format=tar --prefix=source/ "$commit" | tar -x -C "$work"
    cargo build --release --bin kpi-service --manifest-path "$work/source/Cargo.toml" \
        --target-dir "$PWD/target/bench/build"
    service_bin=$PWD/target/bench/build/release/kpi-service
    rm -rf "$work/source"
else
    commit=$(git rev-parse --short HEAD)
    if [[ -n $(git status --porcelain) ]]; then
        commit="$commit with uncommitted changes"
    fi
fi

# ---------------------------------------------------------------------------
# The run's context: commit, machine and settings.

git status --short >"$out/git-status.txt"
git diff HEAD --stat >>"$out/git-status.txt"
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
memory_kib=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)
postgres_version=$(psql "$pg_server/postgres" -qtAc 'SHOW server_version')
jq -nc \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg commit "$commit" \
    --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg nproc "$(nproc)" \
    --arg cpu "$cpu_model" \
    --arg memory_kib "$memory_kib" \
    --arg kernel "$(uname -r)" \
    --arg postgres "$postgres_version" \
    --arg rustc "$(rustc --version)" \
    --arg pgbench "$(pgbench --version)" \
    --argjson duration "$duration" --argjson warmup "$warmup" \
    --arg connections "$connections" --argjson centers "$centers" \
    --argjson event_days "$event_days" --argjson batch_days "$batch_days" \
    '{kind: "run", date: $date, commit: $commit, loadavg: $loadavg, nproc: $nproc, cpu: $cpu,
      memory_kib: $memory_kib, kernel: $kernel, postgres: $postgres, rustc: $rustc,
      pgbench: $pgbench, duration_s: $duration, warmup_s: $warmup,
      connections: $connections, centers: $centers, event_days: $event_days,
      batch_days: $batch_days}' >"$results"
jq -r '"commit:   \(.commit)\ndate:     \(.date)\nmachine:  \(.nproc) CPUs, \(.cpu), \(.memory_kib) KiB memory, kernel \(.kernel)\nsoftware: PostgreSQL \(.postgres), \(.rustc), \(.pgbench)"' \
    "$results" | tee "$out/machine.txt"

# ---------------------------------------------------------------------------
# The service's settings. The master key may write for any center. Every
# configurable rate limit is raised so that no limit caps the load.

CENTER_API_KEY=$(head -c 32 /dev/urandom | base64)
DASHBOARD_USERNAME=admin
DASHBOARD_PASSWORD=$(head -c 18 /dev/urandom | base64)
export CENTER_API_KEY DASHBOARD_USERNAME DASHBOARD_PASSWORD
export ENVIRONMENT=development LOG_LEVEL=warn HOST=127.0.0.1
export RATE_LIMIT_SUBMIT=1000000/second RATE_LIMIT_EVENTS=1000000/second
export RATE_LIMIT_DASHBOARD=1000000/second RATE_LIMIT_HEALTH=1000000/second
export RATE_LIMIT_CENTER_SUBMIT=1000000/second RATE_LIMIT_CENTER_EVENTS=1000000/second
# Revisions before RATE_LIMIT_HEALTH existed limit /health to 60 a minute per
# address, so their health scenario measures mostly 429 responses.
unset METRICS_PORT LOG_DIR SENTRY_DSN REDIS_URL DATABASE_DIRECT_URL
PORT=$("$loadgen" free-port)
export PORT
base_url=http://127.0.0.1:$PORT

psql_admin() {
    psql "$pg_server/postgres" -qtAc "$1" >/dev/null
}

stop_service() {
    [[ -n $service_pid ]] || return 0
    kill -TERM "$service_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$service_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$service_pid" 2>/dev/null; then
        echo "the service (pid $service_pid) did not stop within 30 s of SIGTERM, so it gets SIGKILL" >&2
        kill -KILL "$service_pid" 2>/dev/null || true
    fi
    service_pid=
}

cleanup() {
    stop_service
    psql_admin "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
    psql_admin "DROP DATABASE IF EXISTS ${database}_pgbench WITH (FORCE)" || true
    rm -rf "$work"
}
trap cleanup EXIT

# Points DATABASE_URL at a new, empty database of the backend.
fresh_database() {
    case $1 in
    postgres)
        psql_admin "DROP DATABASE IF EXISTS $database WITH (FORCE)"
        psql_admin "CREATE DATABASE $database"
        export DATABASE_URL=$pg_server/$database
        ;;
    sqlite)
        rm -f "$work"/kpi.db*
        export DATABASE_URL=sqlite://$work/kpi.db
        ;;
    *) fail "unknown backend '$1'; BENCH_BACKENDS takes postgres and sqlite" ;;
    esac
}

database_size_kib() {
    case $1 in
    postgres) psql "$pg_server/postgres" -qtAc "SELECT pg_database_size('$database') / 1024" ;;
    sqlite) du -ck "$work"/kpi.db* | tail -n 1 | cut -f1 ;;
    esac
}

start_count=0

# Starts the service and measures the time until it is ready. With `keep`,
# the service keeps running and service_pid is set. Without it, the service
# is stopped once it is ready.
start_service() {
    local backend=$1 state=$2 keep=${3:-}
    start_count=$((start_count + 1))
    local options=(--ready-url "$base_url/health/ready" --dir "$work"
        --log "$out/service-$backend-$start_count.log"
        --backend "$backend" --database "$state" --out "$results")
    if [[ $keep == keep ]]; then
        options+=(--keep --pid-file "$work/service.pid")
    fi
    "$loadgen" startup "${options[@]}" -- "$service_bin" serve
    if [[ $keep == keep ]]; then
        service_pid=$(cat "$work/service.pid")
    fi
}

# ---------------------------------------------------------------------------
# pgbench: the statements of one event or batch, directly on PostgreSQL, on a
# database that the service's migrations created. The disk's commit rate
# varies from second to second on shared machines, so each script runs right
# after the service scenario it is compared with.

pgdb=${database}_pgbench
pgbench_url=$pg_server/$pgdb
declare -A pgbench_warmed=()

# Creates the pgbench database and writes the scripts to $out/pgbench. The
# variants are derived from the two scripts in bench/pgbench, so that they
# cannot drift apart.
prepare_pgbench() {
    psql_admin "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)"
    psql_admin "CREATE DATABASE $pgdb"
    (cd "$work" && DATABASE_URL=$pgbench_url "$tree_bin" migrate) 2>"$out/pgbench/migrate.log"
    psql "$pgbench_url" -qtAc "INSERT INTO centers (code, name, is_active, registered_at)
        SELECT 'BENCH' || lpad(i::text, 2, '0'), 'Benchmark clinic ' || i, 1, now()
        FROM generate_series(1, $centers) AS i" >/dev/null
    psql "$pgbench_url" -qtAc "CREATE TABLE commit_probe (id integer PRIMARY KEY, n integer);
        INSERT INTO commit_probe VALUES (1, 0)" >/dev/null
    local scripts=$out/pgbench
    cp bench/pgbench/event.sql "$scripts/event.sql"
    {
        echo "-- Derived by bench/run.sh from event.sql, without the last_sync_at update."
        grep -v 'UPDATE centers SET last_sync_at' bench/pgbench/event.sql
    } >"$scripts/event-no-sync.sql"
    {
        echo "-- Derived by bench/run.sh from event.sql, with receipt.sql after BEGIN."
        sed '/^BEGIN;$/r bench/pgbench/receipt.sql' bench/pgbench/event.sql
    } >"$scripts/event-receipt.sql"
    cp bench/pgbench/batch-enhanced.sql "$scripts/batch-enhanced.sql"
    {
        echo "-- Derived by bench/run.sh from batch-enhanced.sql: POST /kpi/submit."
        grep -vE 'module_metrics|payment_method_metrics|performance_metrics|system_usage_metrics' \
            bench/pgbench/batch-enhanced.sql
    } >"$scripts/batch.sql"
    # The disk's commit rate: one single-row update per transaction.
    printf 'BEGIN;\nUPDATE commit_probe SET n = n + 1 WHERE id = 1;\nCOMMIT;\n' \
        >"$scripts/commit-probe.sql"
}

# Runs one pgbench script at one connection count and records tps and
# latency percentiles from pgbench's per-transaction log. The first run of
# each script is preceded by a warm-up at 8 clients.
run_pgbench_script() {
    local name=$1 count=$2 seconds=${3:-$duration}
    local script=$out/pgbench/$name.sql
    local variables=(-D "centers=$centers" -D "days=$event_days" -D "batch_days=$batch_days")
    if [[ $warmup -gt 0 && -z ${pgbench_warmed[$name]:-} ]]; then
        pgbench -n -M prepared -c 8 -j 2 -T "$warmup" "${variables[@]}" -f "$script" \
            "$pgbench_url" >/dev/null 2>&1
        pgbench_warmed[$name]=1
    fi

    local threads=$((count < 2 ? count : 2))
    local prefix=$work/pgbench-log
    rm -f "$prefix".*
    local output
    output=$(pgbench -n -M prepared -c "$count" -j "$threads" -T "$seconds" \
        "${variables[@]}" --log --log-prefix="$prefix" -f "$script" "$pgbench_url" 2>&1) ||
        fail "pgbench $name at $count clients failed: $output"
    echo "$output" >"$out/pgbench/$name-$count.txt"

    local tps average failed percentiles
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$output")
    average=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$output")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$output")
    # The third field of each log line is the transaction's latency in µs.
    percentiles=$(cat "$prefix".* | awk '{print $3}' | sort -n | awk '
        { latency[NR] = $1 }
        END {
            p50 = int(NR * 0.50 + 0.999999); p99 = int(NR * 0.99 + 0.999999)
            printf "%.3f %.3f", latency[p50] / 1000, latency[p99] / 1000
        }')
    rm -f "$prefix".*

    jq -nc --arg script "$name" --argjson clients "$count" --argjson tps "${tps:-null}" \
        --argjson average "${average:-null}" --argjson failed "${failed:-0}" \
        --argjson p50 "${percentiles% *}" --argjson p99 "${percentiles#* }" \
        --argjson seconds "$seconds" \
        '{kind: "pgbench", script: $script, clients: $clients, duration_s: $seconds, tps: $tps,
          latency_avg_ms: $average, p50_ms: $p50, p99_ms: $p99, failed: $failed}' \
        >>"$results"
    printf 'pgbench   %-16s %5s %10s tps   p50 %s ms, p99 %s ms\n' \
        "$name" "$count" "$tps" "${percentiles% *}" "${percentiles#* }"
}

# Names the pgbench scripts that a service scenario is compared with.
pgbench_scripts_for() {
    case $1 in
    events) echo "event event-no-sync" ;;
    events-ids) echo "event-receipt" ;;
    submit) echo "batch" ;;
    submit-enhanced) echo "batch-enhanced" ;;
    esac
}

with_pgbench=0
if [[ $run_pgbench == 1 ]]; then
    prepare_pgbench
    with_pgbench=1
    run_pgbench_script commit-probe 1 2
fi

# ---------------------------------------------------------------------------
# The service under load, one backend after the other.

echo
echo "Service: $duration s per scenario after $warmup s of warm-up; raw figures in $results"
for backend in $backends; do
    echo
    fresh_database "$backend"
    start_service "$backend" fresh keep
    for scenario in $scenarios; do
        options=(--scenario "$scenario")
        if [[ $scenario == events-ids ]]; then
            options=(--scenario events --event-ids)
        fi
        for count in $connections; do
            "$loadgen" run --url "$base_url" "${options[@]}" --connections "$count" \
                --duration "$duration" --warmup "$warmup" --centers "$centers" \
                --event-days "$event_days" --batch-days "$batch_days" \
                --backend "$backend" --service-pid "$service_pid" --pg-database "$database" \
                --out "$results"
            if [[ $with_pgbench == 1 && $backend == postgres ]]; then
                for name in $(pgbench_scripts_for "$scenario"); do
                    run_pgbench_script "$name" "$count"
                done
            fi
        done
    done
    peak_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$service_pid/status")
    jq -nc --arg backend "$backend" --argjson peak "$peak_kib" \
        --argjson size "$(database_size_kib "$backend")" \
        '{kind: "rss", backend: $backend, vm_hwm_kib: $peak, database_kib: $size}' >>"$results"
    echo "$backend: peak RSS (VmHWM) of the service $peak_kib KiB"
    # The service's own counters, such as the wait for a write transaction.
    "$loadgen" fetch --url "$base_url/metrics" >"$out/metrics-$backend.txt" ||
        echo "cannot read $base_url/metrics, so this run has no metrics-$backend.txt" >&2
    stop_service

    for _ in $(seq 1 "$starts"); do
        start_service "$backend" existing
    done
    for _ in $(seq 2 "$starts"); do
        fresh_database "$backend"
        start_service "$backend" fresh
    done
done

# Without the PostgreSQL backend, pgbench runs on its own.
if [[ $with_pgbench == 1 && " $backends " != *" postgres "* ]]; then
    echo
    for scenario in $scenarios; do
        for name in $(pgbench_scripts_for "$scenario"); do
            for count in $connections; do
                run_pgbench_script "$name" "$count"
            done
        done
    done
fi
if [[ $with_pgbench == 1 ]]; then
    run_pgbench_script commit-probe 1 2
fi

echo
"$loadgen" report "$results" | tee "$out/summary.txt"
echo
echo "Raw figures: $results; summary: $out/summary.txt"
