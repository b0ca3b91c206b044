# Roundhouse. `make up` starts the lab, `make check` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

WORKERS ?= 5
# Compose v2 plugin if there is one, else the v1 docker-compose binary.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
export COMPOSE_PROJECT_NAME ?= roundhouse
export ROUNDHOUSE_HTTP_PORT ?= 9092
API ?= http://127.0.0.1:$(ROUNDHOUSE_HTTP_PORT)

BUF := go run github.com/bufbuild/buf/cmd/buf@v1.75.0
MODULES := ./proto/... ./master/... ./worker/... ./integration/...
# Unit tests: everything but the container tests in ./integration itself.
UNIT := ./proto/... ./master/... ./worker/... ./integration/client/... ./integration/cmd/...

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: up
up: images ## build the images and start the lab: master + $(WORKERS) workers
	$(COMPOSE) up -d --scale worker=$(WORKERS)
	@go run ./integration/cmd/demo -api $(API) -wait-workers $(WORKERS) -tasks 0
	@echo "lab is up: $(API)  (make demo API=$(API), make logs, make down)"

.PHONY: down
down: ## stop the lab and remove its containers
	$(COMPOSE) down --remove-orphans

.PHONY: logs
logs: ## follow the lab's logs
	$(COMPOSE) logs -f

.PHONY: images
images: ## build roundhouse/master and roundhouse/worker (offline substitutes if no registry)
	bash docker/images.sh

.PHONY: proto
proto: ## regenerate proto/roundhousepb from proto/roundhouse.proto
	cd proto && $(BUF) generate

.PHONY: proto-check
proto-check: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- proto/roundhousepb && test -z "$$(git status --porcelain -- proto/roundhousepb)" \
	  || { echo "proto/roundhousepb is stale: run 'make proto' and commit the result"; exit 1; }

.PHONY: vet
vet: ## go vet and gofmt
	go vet $(MODULES)
	@out=$$(gofmt -l proto master worker integration); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

.PHONY: test
test: ## unit tests (no Docker needed), and every Go micro-benchmark once so none rots
	go test -race -count=1 $(UNIT)
	go test -count=1 -run '^$$' -bench . -benchtime 1x $(UNIT)

.PHONY: integration
integration: images ## container tests: master + workers with testcontainers, and compose.yaml
	TESTCONTAINERS_RYUK_DISABLED=true COMPOSE="$(COMPOSE)" go test -count=1 -timeout 30m -v ./integration/ 2>&1 | tee integration.out | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

.PHONY: bench
bench: ## measure the master beside this machine's limits, write bench/results/latest.json (BENCH_FLAGS=-quick, -no-1m, -containers)
	go run ./integration/cmd/bench $(BENCH_FLAGS)

.PHONY: check
check: vet proto-check test integration ## every check and test, as CI runs them

.PHONY: build
build: ## build bin/master and bin/worker for this host
	CGO_ENABLED=0 go build -o bin/master ./master
	CGO_ENABLED=0 go build -o bin/worker ./worker

.PHONY: dev
dev: build ## run a master and WORKERS workers as local processes (Ctrl-C stops all)
	@trap 'kill 0' INT TERM EXIT; \
	MASTER_HTTP_ADDR=127.0.0.1:$(ROUNDHOUSE_HTTP_PORT) MASTER_GRPC_ADDR=127.0.0.1:50051 bin/master & \
	for i in $$(seq 1 $(WORKERS)); do WORKER_ID=w$$i WORKER_MASTER_ADDR=127.0.0.1:50051 bin/worker & done; \
	wait

.PHONY: demo
demo: build ## start a local cluster, run a batch of tasks, show which worker ran which (API=... to use a running lab)
	go run ./integration/cmd/demo $(if $(filter command line,$(origin API)),-api $(API),-master bin/master -worker bin/worker -workers 3)

.PHONY: clean
clean: ## remove build outputs and the offline substitute images
	rm -rf bin docker/.build integration.out
	-docker image rm roundhouse/master:dev roundhouse/worker:dev roundhouse/shell:busybox-static 2>/dev/null
