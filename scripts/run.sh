#!/usr/bin/env bash
# make run: build and start the four services locally, wait until the gateway
# is ready, print where everything is, follow the logs; Ctrl-C stops them all.
# Embedded defaults (SQLite file, no cache, in-process bus, SNS off) unless
# DATABASE_URL / REDIS_URL / AMQP_URL / SNS_ENDPOINT_URL are set.
# REPLICAS=2 adds a second chain: another app-gateway, app-event and
# app-storage, on the ports moved by +100 (8180, 50151, 9100…), calling each
# other, sharing the database (PostgreSQL only) and the one app-notifier.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
logs=data/logs
replicas=${REPLICAS:-1}
case $replicas in
  1 | 2) ;;
  *) echo "REPLICAS=$replicas: 1 (the default) or 2 (a second chain)" >&2; exit 2 ;;
esac
if [ "$replicas" = 2 ]; then
  case ${DATABASE_URL:-} in
    postgres://* | postgresql://*) ;;
    *)
      echo "REPLICAS=2 needs DATABASE_URL=postgres://…: the two app-storage processes share the database," >&2
      echo "and two processes cannot share the embedded SQLite file safely. For example:" >&2
      echo "  createdb -h 127.0.0.1 -U postgres ticketmesh" >&2
      echo "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/ticketmesh make run REPLICAS=2" >&2
      exit 2
      ;;
  esac
fi
mkdir -p "$logs"
rm -f "$logs"/*-2.log # a previous second chain's

if [ -z "${WEBHOOK_SECRET:-}" ]; then
  export WEBHOOK_SECRET=secret ALLOW_DEMO_SECRET=true
  echo "!! WEBHOOK_SECRET is not set: using the demo value 'secret' (what PETZI's simulator signs with),"
  echo "!! with ALLOW_DEMO_SECRET=true. Anyone can sign webhooks with it: keep this gateway on your machine."
fi
export LOG_FORMAT=${LOG_FORMAT:-json}

echo "building ($profile)…"
if [ "$profile" = release ]; then cargo build --release --bins; else cargo build --bins; fi
bin=target/$profile

# The ports and who calls whom: services, port[binary.kind], calls[binary], topology_env.
source scripts/topology.sh
gateway=127.0.0.1:${port[app-gateway.http]}

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping…"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop INT TERM EXIT

start() { # name, then its environment beyond the topology's (listen addresses, URLs of what it calls)
  local name=$1 env; shift
  mapfile -t env < <(topology_env "$name")
  env "${env[@]}" "$@" "$bin/$name" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

# The second chain (REPLICAS=2): a copy of each of these, on its ports + 100,
# calling the copies of the others; what is not copied (the notifier) is shared.
chain2=(app-gateway app-event app-storage)
declare -A copied=()
if [ "$replicas" = 2 ]; then for name in "${chain2[@]}"; do copied[$name]=1; done; fi
port2() { # binary kind: the port the second chain reaches it on
  if [ -n "${copied[$1]:-}" ]; then echo $((port[$1.$2] + 100)); else echo "${port[$1.$2]}"; fi
}
replica_env() { # binary: as topology_env, for its copy in the second chain
  local name=$1 kind call
  for kind in http grpc admin; do
    if [ "${port[$name.$kind]}" != - ]; then echo "${kind^^}_ADDR=127.0.0.1:$(port2 "$name" "$kind")"; fi
  done
  local IFS=, # the calls are comma-separated
  for call in ${calls[$name]}; do echo "${call%%=*}=http://127.0.0.1:$(port2 "${call#*=}" grpc)"; done
}
start_copy() { # name, then its environment beyond the topology's; logs to <name>-2.log
  local name=$1 env; shift
  mapfile -t env < <(replica_env "$name")
  env "${env[@]}" "$@" "$bin/$name" >"$logs/$name-2.log" 2>&1 &
  pids+=($!)
}
sns_subscribe=()
sns_certs=()
if [ -n "${SNS_ENDPOINT_URL:-}" ]; then
  sns_subscribe=(SNS_SUBSCRIBE_URL="${SNS_SUBSCRIBE_URL:-http://$gateway/sns}")
  # The gateway fetches the certificates that sign SNS messages from the SNS endpoint too.
  sns_certs=(SNS_CERT_ORIGINS="${SNS_CERT_ORIGINS:-${SNS_ENDPOINT_URL%/}}")
fi
# From the last line of the topology up: what each calls is already listening.
# With REPLICAS=2, each copy of the second chain right after its original.
for ((i = ${#services[@]} - 1; i >= 0; i--)); do
  name=${services[i]}
  extra=()
  case $name in
    app-notifier) extra=("${sns_subscribe[@]}") ;;
    app-gateway) extra=("${sns_certs[@]}") ;;
  esac
  start "$name" "${extra[@]}"
  if [ -n "${copied[$name]:-}" ]; then start_copy "$name" "${extra[@]}"; fi
done

# Readiness over bash's /dev/tcp, so nothing but bash is needed.
ready() { # port: a gateway's
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  local status
  read -r _ status _ <&3 || status=0
  exec 3<&-
  [ "$status" = 200 ]
}
gateways=("${port[app-gateway.http]}")
if [ "$replicas" = 2 ]; then gateways+=("$(port2 app-gateway http)"); fi
all_ready() {
  local p
  for p in "${gateways[@]}"; do ready "$p" || return 1; done
}
for i in $(seq 1 120); do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a service exited at start; its log:" >&2
      for f in "$logs"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done
      exit 1
    fi
  done
  if all_ready 2>/dev/null; then break; fi
  if [ "$i" = 120 ]; then echo "not ready after 60 s; logs are in $logs/" >&2; exit 1; fi
  sleep 0.5
done

bus=in-process
if [ -n "${AMQP_URL:-}" ]; then bus="RabbitMQ (${AMQP_EXCHANGE:-ticketmesh.events})"; fi
grpc_services=$(for name in "${services[@]}"; do
  if [ "${port[$name.grpc]}" != - ]; then
    printf '  %-15sgrpc 127.0.0.1:%-8s admin http://127.0.0.1:%s/metrics\n' "$name" "${port[$name.grpc]}" "${port[$name.admin]}"
  fi
done)
second_chain=
if [ "$replicas" = 2 ]; then
  gateway2=127.0.0.1:$(port2 app-gateway http)
  second_chain=$(
    echo "second chain (REPLICAS=2: its own gateway, app-event and app-storage; the same database and app-notifier):"
    printf '  %-15shttp://%s   the same routes · admin http://127.0.0.1:%s/faults\n' app-gateway-2 "$gateway2" "$(port2 app-gateway admin)"
    for name in "${chain2[@]}"; do
      if [ "${port[$name.grpc]}" != - ]; then
        printf '  %-15sgrpc 127.0.0.1:%-8s admin http://127.0.0.1:%s/metrics\n' "$name-2" "$(port2 "$name" grpc)" "$(port2 "$name" admin)"
      fi
    done
    echo "  dashboard      http://$gateway2/ui   ·   send to it: scripts/send-webhook.sh <number> http://$gateway2"
  )
fi
cat <<TXT

ticketmesh is up (database: ${DATABASE_URL:-sqlite:data/ticketmesh.db}, cache: ${REDIS_URL:-none}, bus: $bus)
  gateway        http://$gateway   GET / (hello; SNS: ${SNS_ENDPOINT_URL:-disabled}) · POST /webhook · GET /events · /api/tickets · /api/stats · /ready · /metrics
                                         admin http://127.0.0.1:${port[app-gateway.admin]}/faults
$grpc_services
  dashboard      http://$gateway/ui
${second_chain:+$second_chain
}Send a signed webhook:  scripts/send-webhook.sh   ·   traffic: make simulate ARGS="--rate 20 --duration 60s"
Break it:  make break SCENARIO=flaky-reads (or slow-storage, broker-down, forged-webhooks) · make heal · every admin port has /faults
Traces: ${OTEL_EXPORTER_OTLP_ENDPOINT:-not exported (set OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 to send them over OTLP)}
Logs: $logs/  (following them below; Ctrl-C stops everything)

TXT
tail -n 0 -F "$logs"/*.log &
pids+=($!)
wait -n "${pids[@]}" || true
