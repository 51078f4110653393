#!/usr/bin/env bash
# End-to-end check of the built binaries as separate processes on real
# PostgreSQL and Redis: a signed webhook with curl + openssl, the read back,
# grpcurl with no .proto files (reflection), and a clean exit on SIGTERM.
# Needs: curl, openssl, psql, grpcurl (make tools installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_ADMIN=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
GRPCURL=${GRPCURL:-$(command -v grpcurl || echo .venv-tools/bin/grpcurl)}
bin=target/debug
db=tm_e2e_$$
work=$(mktemp -d)
passed=0
failed=0
pids=()

check() { # description, then a command that must succeed
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $what"
  else
    failed=$((failed + 1)); echo "FAIL $what"; sed 's/^/     /' "$work/out" | head -n 20
  fi
}

cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then kill -KILL "${pids[@]}" 2>/dev/null || true; fi
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --bins --quiet
psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
base=${PG_ADMIN%/*}

export LOG_FORMAT=json WEBHOOK_SECRET=e2e-secret-0123456789abcdef01234
# The local topology, every port moved into 2xxxx (8080 → 28080, 50051 →
# 20051, 9001 → 29001) so this runs beside `make run`.
source scripts/topology.sh
for key in "${!port[@]}"; do
  if [ "${port[$key]}" != - ]; then port[$key]=$((port[$key] % 10000 + 20000)); fi
done
gw=http://127.0.0.1:${port[app-gateway.http]}
start() { # name, then its environment beyond the topology's
  local name=$1 env; shift
  mapfile -t env < <(topology_env "$name")
  env "${env[@]}" "$@" "$bin/$name" >"$work/${name#app-}.log" 2>&1 &
  pids+=($!)
}
# From the topology's last line up: what each calls is already listening.
for ((i = ${#services[@]} - 1; i >= 0; i--)); do
  case ${services[i]} in
    # Debug builds on a busy machine: more room than the defaults' 100 ms and 250 ms.
    app-storage) start app-storage DATABASE_URL="$base/$db" REDIS_URL="$REDIS" CACHE_PREFIX="$db" CACHE_TIMEOUT=250ms ;;
    app-gateway) start app-gateway READ_TIMEOUT=1s ;;
    *) start "${services[i]}" ;;
  esac
done

for _ in $(seq 1 100); do
  curl -sf "$gw/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
check "gateway ready (event and storage SERVING)" curl -sf "$gw/ready"

number=PETZIE2E$$
check "signed webhook accepted" bash -c "WEBHOOK_SECRET=e2e-secret-0123456789abcdef01234 scripts/send-webhook.sh $number $gw | grep -q '\"duplicate\":false'"
check "replay answered as duplicate" bash -c "WEBHOOK_SECRET=e2e-secret-0123456789abcdef01234 scripts/send-webhook.sh $number $gw | grep -q '\"duplicate\":true'"
check "ticket read back with its exact price" bash -c "curl -sf $gw/api/tickets/$number | grep -q '\"amount\":\"42.50\"'"
check "wrong secret rejected with 401" bash -c "WEBHOOK_SECRET=wrong scripts/send-webhook.sh X $gw | grep -q invalid_signature"
check "outbox relayed through the notifier (in-process bus)" bash -c "for _ in \$(seq 1 50); do [ \"\$(psql '$base/$db' -tAc 'SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL')\" = 0 ] && exit 0; sleep 0.2; done; exit 1"
check "stored exactly once in PostgreSQL" bash -c "[ \"\$(psql '$base/$db' -tAc \"SELECT COUNT(*) FROM events WHERE ticket_number = '$number'\")\" = 1 ]"

for served in app-event:EventService app-notifier:NotifierService app-storage:StorageService; do
  grpc=${port[${served%%:*}.grpc]} service=ticketmesh.v1.${served#*:}
  check "grpcurl list on :$grpc lists $service and no other ticketmesh service (reflection v1alpha)" \
    bash -c "'$GRPCURL' -plaintext 127.0.0.1:$grpc list > '$work/list' && grep -q '^$service\$' '$work/list' && [ \"\$(grep -c '^ticketmesh' '$work/list')\" = 1 ]"
  check "grpcurl describe on :$grpc" bash -c "'$GRPCURL' -plaintext 127.0.0.1:$grpc describe ticketmesh.v1.TicketEvent | grep -q delivery_id"
  check "grpcurl health check on :$grpc" bash -c "'$GRPCURL' -plaintext 127.0.0.1:$grpc grpc.health.v1.Health/Check | grep -q SERVING"
done
check "storage health names its service" bash -c "'$GRPCURL' -plaintext -d '{\"service\":\"ticketmesh.v1.StorageService\"}' 127.0.0.1:${port[app-storage.grpc]} grpc.health.v1.Health/Check | grep -q '\"SERVING\"'"
check "grpcurl GetTicket through reflection" bash -c "'$GRPCURL' -plaintext -d '{\"number\":\"$number\"}' 127.0.0.1:${port[app-storage.grpc]} ticketmesh.v1.StorageService/GetTicket | grep -q '\"CHF\"'"
check "hello answers with SNS disabled" bash -c "curl -sf $gw/ | grep -q '\"status\":\"disabled\"'"
check "admin /metrics serves Prometheus text" bash -c "curl -sf http://127.0.0.1:${port[app-storage.admin]}/metrics | grep -q '^storage_commit_batch_size_count'"
check "gateway /metrics counts the webhooks" bash -c "curl -sf $gw/metrics | grep -q 'webhook_requests_total{status=\"duplicate\"} 1'"
check "logs are JSON lines" bash -c "head -n1 '$work/gateway.log' | grep -q '^{\"timestamp\"'"
check "a request's log line carries its trace id" bash -c "grep '\"delivery stored\"' '$work/event.log' | grep '\"trace_id\":\"[0-9a-f]\{32\}\"' | grep -q '\"span_id\":\"[0-9a-f]\{16\}\"'"
check "a short webhook secret is refused at start, naming ALLOW_DEMO_SECRET" bash -c "! env WEBHOOK_SECRET=secret HTTP_ADDR=127.0.0.1:28099 timeout 10 '$bin/app-gateway' >'$work/short.log' 2>&1 && grep -q 'shorter than 32 bytes.*ALLOW_DEMO_SECRET' '$work/short.log'"
for b in app-gateway app-event app-storage app-notifier; do
  check "$b --help documents every flag with its env var" bash -c "'$bin/$b' --help | grep -q '\[env: '"
done

# SIGTERM: each process stops accepting, finishes, and exits 0.
# pids are in start order (the topology's last line first): stop callers first.
for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
  kill -TERM "${pids[$i]}"
  code=0
  wait "${pids[$i]}" || code=$?
  check "${services[${#pids[@]} - 1 - i]} exits 0 on SIGTERM" test "$code" = 0
done
pids=()

echo
echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
