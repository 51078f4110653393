#!/usr/bin/env bash
# The kind cluster under Linkerd, one step per subcommand (the Makefile's
# kind-up runs them in order, so `make -n kind-up` prints the plan):
#   check     docker, kind, kubectl and linkerd present, at the pinned versions
#   create    the kind cluster `ticketmesh` (only if absent)
#   build     docker build of each binary (ticketmesh/<binary>:dev)
#   images    build, then `kind load` into the node
#   gateway-api  Gateway API CRDs (standard channel)
#   linkerd   Linkerd CRDs and control plane (proxy tracing on), then viz
#   deploy    the trace collector first, then k8s/overlays/kind (the services
#             and the observability stack) and mesh/; restarts what got a new image
#   wait      rollouts, then `linkerd check --proxy`
#   urls      where everything is, and what to run next
#   down | status | logs [APP] | grpcurl list|health | dashboard
#   l4-demo on|off  the gateway's gRPC calls past its proxy (one pod per connection), and back
#   rollout-check   restart the four services one after another under the simulator's load; fail on any answer it did not expect
# Every command names the context kind-ticketmesh: no other cluster is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=/dev/null  # KEY=value lines: versions pinned for the install
. mesh/versions.env
CLUSTER=ticketmesh
CONTEXT=kind-$CLUSTER
NS=ticketmesh
MON_NS=ticketmesh-monitoring
MONITORING=(mon-otel-collector mon-jaeger mon-prometheus mon-alertmanager mon-blackbox mon-loki mon-alloy mon-grafana)
BINARIES=(app-gateway app-event app-notifier app-storage app-simulator)
TAG=${TAG:-dev}
STATE=.tmp/kind
mkdir -p "$STATE"

k() { kubectl --context "$CONTEXT" "$@"; }
l() { linkerd --context "$CONTEXT" "$@"; }
step() { printf '\n== %s\n' "$*"; }

# version_ge A B: A >= B, for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# at_least TOOL HAVE MIN WHY URL: adds to `problems` when TOOL is missing
# (HAVE empty) or older than MIN.
at_least() {
  local tool=$1 have=$2 min=$3 why=$4 url=$5
  if [ -z "$have" ]; then
    problems+=("$tool is not installed (>= $min): $url")
  elif ! version_ge "$have" "$min"; then
    problems+=("$tool $have is older than $min ($why): $url")
  fi
}

check() {
  step "checking docker, kind, kubectl, linkerd"
  problems=()
  if ! command -v docker >/dev/null; then
    problems+=("docker is not installed: https://docs.docker.com/get-docker/")
  elif ! docker info >/dev/null 2>&1; then
    problems+=("docker is installed but its daemon does not answer: start Docker Desktop (or the docker service)")
  fi
  local kind_version="" kubectl_version=""
  if command -v kind >/dev/null; then
    kind_version=$(kind version | grep -o 'v[0-9][0-9.]*' | head -n1 | tr -d v)
  fi
  if command -v kubectl >/dev/null; then
    kubectl_version=$(kubectl version --client -o json | grep -o '"gitVersion": *"v[0-9.]*' | grep -o '[0-9][0-9.]*')
  fi
  at_least kind "$kind_version" "$KIND_MIN_VERSION" "which the pinned node image needs" \
    https://kind.sigs.k8s.io/docs/user/quick-start/#installation
  at_least kubectl "$kubectl_version" "$KUBECTL_MIN_VERSION" "the cluster runs 1.35" \
    https://kubernetes.io/docs/tasks/tools/
  local install="curl --proto '=https' --tlsv1.2 -sSfL https://run.linkerd.io/install-edge | LINKERD2_VERSION=$LINKERD_VERSION sh"
  if ! command -v linkerd >/dev/null; then
    problems+=("linkerd is not installed: $install  (https://linkerd.io/2/getting-started/)")
  else
    local v
    v=$(linkerd version --client --short 2>/dev/null || true)
    [ "$v" = "$LINKERD_VERSION" ] ||
      problems+=("linkerd CLI is '$v', this project pins $LINKERD_VERSION (the CLI installs its own version): $install")
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    printf '  missing: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  echo "  docker, kind, kubectl and linkerd $LINKERD_VERSION are ready"
}

create() {
  step "kind cluster $CLUSTER"
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "  exists (kind-config.yaml changes need make kind-down first)"
  else
    kind create cluster --config kind-config.yaml --wait 120s
  fi
}

build() {
  step "images (${BINARIES[*]}, tag $TAG)"
  : >"$STATE/changed"
  local i=0
  for bin in "${BINARIES[@]}"; do
    i=$((i + 1))
    echo "  [$i/${#BINARIES[@]}] docker build $bin (the first build compiles everything: several minutes)"
    # Compared by their layers' content digests, not the image ID: with
    # Docker's containerd image store the ID is the index digest, which the
    # provenance attestation changes on every build even when nothing else did.
    local before after
    before=$(docker image inspect --format '{{json .RootFS.Layers}}' "ticketmesh/$bin:$TAG" 2>/dev/null || true)
    docker build --build-arg "BIN=$bin" -t "ticketmesh/$bin:$TAG" .
    after=$(docker image inspect --format '{{json .RootFS.Layers}}' "ticketmesh/$bin:$TAG")
    [ "$before" = "$after" ] || echo "$bin" >>"$STATE/changed"
  done
}

images() {
  build
  step "loading the images into the kind node"
  for bin in "${BINARIES[@]}"; do kind load docker-image --name "$CLUSTER" "ticketmesh/$bin:$TAG" >/dev/null; done
  echo "  loaded; rebuilt: $(tr '\n' ' ' <"$STATE/changed")"
}

gateway_api() {
  step "Gateway API CRDs $GATEWAY_API_VERSION (standard channel)"
  local have
  have=$(k get crd grpcroutes.gateway.networking.k8s.io \
    -o jsonpath='{.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version}' 2>/dev/null || true)
  if [ "$have" = "$GATEWAY_API_VERSION" ]; then
    echo "  installed"
  else
    k apply --server-side -f \
      "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
  fi
}

install_linkerd() {
  step "Linkerd $LINKERD_VERSION (CRDs, control plane with proxy tracing)"
  if k get namespace linkerd >/dev/null 2>&1; then
    # Installed: upgrade to the pinned version and values (a no-op when they
    # have not changed), so a changed versions.env or values file applies.
    echo "  installed; applying the pinned version and values (linkerd upgrade)"
    l upgrade --crds | k apply -f -
    l upgrade --values mesh/linkerd/control-plane.yaml | k apply -f -
  else
    l check --pre
    l install --crds | k apply -f -
    l install --values mesh/linkerd/control-plane.yaml | k apply -f -
  fi
  l check --wait 5m
  step "Linkerd viz"
  # `viz install` renders the pinned CLI's version: applied again, it upgrades.
  l viz install | k apply -f -
  l viz check --wait 5m
}

deploy() {
  # A proxy sends its spans to the collector from the moment its pod starts:
  # the collector (meshed, in its own namespace) is up before anything else.
  step "the trace collector (k8s/monitoring/mon-otel-collector)"
  k apply -f k8s/monitoring/namespace.yaml
  k apply -k k8s/overlays/kind --selector app.kubernetes.io/name=mon-otel-collector
  k -n "$MON_NS" rollout status deployment/mon-otel-collector --timeout 300s
  step "ticketmesh and its observability stack (k8s/overlays/kind), the mesh policy (mesh/)"
  k apply -k k8s/overlays/kind
  k apply -k mesh
  # mesh/linkerd-proxy.yaml lets both Prometheus servers read the proxies'
  # metrics. A cluster made before it has `linkerd viz allow-scrapes`'s Server
  # on the same port, which would shadow it: remove that one.
  k -n "$NS" delete --ignore-not-found server.policy.linkerd.io/proxy-admin \
    authorizationpolicy.policy.linkerd.io/prometheus-scrape authorizationpolicy.policy.linkerd.io/proxy-probes
  if [ -s "$STATE/changed" ]; then
    while read -r bin; do k -n "$NS" rollout restart "deployment/$bin"; done <"$STATE/changed"
    : >"$STATE/changed"
  fi
}

wait_ready() {
  step "waiting for the rollout"
  local workloads=(statefulset/infra-postgres deployment/infra-redis deployment/infra-rabbitmq
    deployment/infra-localstack)
  for bin in "${BINARIES[@]}"; do workloads+=("deployment/$bin"); done
  for w in "${workloads[@]}"; do
    printf '  %-32s ' "$w"
    k -n "$NS" rollout status "$w" --timeout 300s >/dev/null && echo ready
  done
  for m in "${MONITORING[@]}"; do
    printf '  %-32s ' "deployment/$m"
    k -n "$MON_NS" rollout status "deployment/$m" --timeout 300s >/dev/null && echo ready
  done
  l check --proxy --namespace "$NS"
  l check --proxy --namespace "$MON_NS"
}

urls() {
  cat <<EOF

ticketmesh runs under Linkerd on kind (context $CONTEXT).
  gateway      http://localhost:30080   (curl http://localhost:30080/ ; make webhook URL=http://localhost:30080)
  Grafana      http://localhost:30300   (metrics, traces and logs; anyone may view; admin / ticketmesh-demo)
  Prometheus   http://localhost:30090   (targets, rules, alerts)
  Alertmanager http://localhost:30093
  Jaeger       http://localhost:30686   (traces: the services' spans and one per meshed hop)
  viz          make dashboard           (topology, golden metrics, mTLS per edge)
  status       make status              (pods, linkerd viz stat, edges with their mTLS identities)
  logs         make logs [APP=app-event]
  gRPC         make grpcurl-list CLUSTER=kind ; make grpcurl-health CLUSTER=kind
  remove       make kind-down
EOF
}

down() {
  step "deleting the kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
}

status() {
  k -n "$NS" get pods -o wide
  echo
  k -n "$MON_NS" get pods
  echo
  l viz stat deploy -n "$NS"
  echo
  l viz edges deploy -n "$NS"
  echo
  l viz stat-outbound deploy/app-gateway -n "$NS"
}

logs() {
  local app=${1:-}
  if [ -n "$app" ]; then
    k -n "$NS" logs "deployment/$app" -c "$app" --tail 100 -f
  else
    k -n "$NS" logs -l app.kubernetes.io/part-of=ticketmesh --prefix --tail 20 --max-log-requests 10
  fi
}

# grpcurl through `kubectl port-forward` (which enters the pod on loopback, so
# it is not subject to the mesh policy: reflection works from the host).
grpcurl_cluster() {
  local what=$1 grpcurl=${GRPCURL:-grpcurl}
  for entry in app-event:ticketmesh.v1.EventService app-notifier:ticketmesh.v1.NotifierService \
    app-storage:ticketmesh.v1.StorageService; do
    local app=${entry%%:*} service=${entry#*:} port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    k -n "$NS" port-forward "deployment/$app" "$port:50051" >/dev/null 2>&1 &
    local forward=$!
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    echo "== $app"
    if [ "$what" = list ]; then
      "$grpcurl" -plaintext "127.0.0.1:$port" list || true
    else
      "$grpcurl" -plaintext -d "{\"service\":\"$service\"}" "127.0.0.1:$port" grpc.health.v1.Health/Check || true
    fi
    kill "$forward" 2>/dev/null || true
    wait "$forward" 2>/dev/null || true
  done
}

# The demo of gRPC without per-request balancing (README, "Two replicas").
# On: first let the gateway's plaintext calls in (mesh/demos/l4-balancing),
# then roll the gateway out with its outbound gRPC past the proxy
# (k8s/overlays/kind-l4-balancing), at one pod, so that one connection per
# service is all there is to look at. Off: the kind overlay again (two pods,
# the proxy for everything), and only once the old pods are gone the demo's
# policy.
l4_demo() {
  case $1 in
    on)
      step "the gateway's gRPC calls past its proxy, let in from the pod network (DEMO ONLY: no mTLS on them)"
      k apply -k mesh/demos/l4-balancing
      k apply -k k8s/overlays/kind-l4-balancing
      k -n "$NS" scale deployment/app-gateway --replicas 1
      k -n "$NS" rollout status deployment/app-gateway --timeout 300s
      cat <<EOF

The gateway now holds one plain HTTP/2 connection per service, and kube-proxy
sent each to one pod. Look at the two app-event pods (and app-storage's reads):
  linkerd --context $CONTEXT viz stat pods -n $NS | grep -E 'NAME|app-event'
  # one app-event pod serves every call from the gateway, the other none
  linkerd --context $CONTEXT viz edges deploy -n $NS
  # no app-gateway -> app-event edge: those calls carry no mesh identity
Back to the mesh: make l4-demo-off
EOF
      ;;
    off)
      step "the gateway back behind its proxy (k8s/overlays/kind), then the demo's policy removed"
      k apply -k k8s/overlays/kind
      k -n "$NS" rollout status deployment/app-gateway --timeout 300s
      k delete -k mesh/demos/l4-balancing --ignore-not-found
      ;;
    *) echo "l4-demo on|off" >&2; exit 2 ;;
  esac
}

# The simulator's counters from its latest progress line: "sent failed
# unexpected" (unexpected: an answer its delivery's intent did not expect,
# such as a 503 to a fresh delivery; its forged ones expect their 401).
simulator_counts() {
  k -n "$NS" logs deployment/app-simulator -c app-simulator --tail 20 |
    sed -nE 's/.*sent ([0-9]+) .* failed ([0-9]+) .* unexpected ([0-9]+) .*/\1 \2 \3/p' | tail -n1
}

# Demo 3 (README, "Two replicas"): a rolling restart of every service, one
# after another, under app-simulator's steady load, with the simulator's own
# counters as the proof: it must have sent deliveries meanwhile, and none may
# have failed or got an answer it did not expect.
rollout_check() {
  local before after settle=10 sent0 failed0 unexpected0 sent1 failed1 unexpected1
  before=$(simulator_counts)
  [ -n "$before" ] || { echo "no progress line from app-simulator yet (it prints one every 5 s); try again" >&2; exit 1; }
  read -r sent0 failed0 unexpected0 <<<"$before"
  for app in app-storage app-event app-notifier app-gateway; do
    step "rolling restart of $app"
    k -n "$NS" rollout restart "deployment/$app"
    k -n "$NS" rollout status "deployment/$app" --timeout 300s
  done
  echo "waiting ${settle} s for the last deliveries and the simulator's next progress line"
  sleep "$settle"
  after=$(simulator_counts)
  read -r sent1 failed1 unexpected1 <<<"$after"
  if [ -z "$after" ] || [ "$sent1" -lt "$sent0" ]; then
    echo "FAIL: app-simulator restarted during the check (its counters went from '$before' to '$after')" >&2
    exit 1
  fi
  local sent=$((sent1 - sent0)) failed=$((failed1 - failed0)) unexpected=$((unexpected1 - unexpected0))
  echo "during the rollout: sent $sent, failed $failed, unexpected answers $unexpected"
  if [ "$sent" -eq 0 ] || [ "$failed" -ne 0 ] || [ "$unexpected" -ne 0 ]; then
    echo "FAIL: a rolling restart must lose no delivery (and the simulator must have sent some)" >&2
    exit 1
  fi
  echo "ok: no delivery failed or got an unexpected answer while all four services restarted"
}

case ${1:-} in
  check) check ;;
  build) build ;;
  create) create ;;
  images) images ;;
  gateway-api) gateway_api ;;
  linkerd) install_linkerd ;;
  deploy) deploy ;;
  wait) wait_ready ;;
  urls) urls ;;
  down) down ;;
  status) status ;;
  logs) logs "${2:-}" ;;
  grpcurl) grpcurl_cluster "${2:?list or health}" ;;
  dashboard) l viz dashboard ;;
  l4-demo) l4_demo "${2:-}" ;;
  rollout-check) rollout_check ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
