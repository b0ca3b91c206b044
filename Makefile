# Roundhouse. `make up` starts the lab, `make check` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

WORKERS ?= 5
# Workers of the labelled group (compose service worker-gpu, WORKER_LABELS
# gpu=nvidia). `make up` starts none unless told; `make scale` leaves the
# group as it is unless told.
GPU_WORKERS ?=
# Compose v2 plugin if there is one, else the v1 docker-compose binary.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# The other spelling, when this machine has both: `make integration` runs the
# compose tests under it too, so neither rots.
COMPOSE_OTHER := $(if $(filter docker-compose,$(COMPOSE)),$(shell docker compose version >/dev/null 2>&1 && echo "docker compose"),$(shell command -v docker-compose >/dev/null && echo docker-compose))
export COMPOSE_PROJECT_NAME ?= roundhouse
export ROUNDHOUSE_HTTP_PORT ?= 9092
API ?= http://127.0.0.1:$(ROUNDHOUSE_HTTP_PORT)
# TLS=1: run the lab with mutual TLS between workers and master (make certs).
# `make up TLS=1` writes TLS_COMPOSE_FILE to .env as COMPOSE_FILE, which both
# compose versions read from .env: every later compose command (make scale,
# make down, make logs, docker/lab.sh, a plain `docker compose ps`) then uses
# the TLS overlay too, and new workers get their certificates. `make up`
# without TLS=1 (or with TLS=0) takes the line out again.
TLS ?=
TLS_ON := $(filter-out 0 no false,$(TLS))
TLS_COMPOSE_FILE := compose.yaml:docker/compose.tls.yaml
COMPOSE_FILES := $(if $(TLS_ON),-f compose.yaml -f docker/compose.tls.yaml)

# The lab's secrets live in .env (git-ignored, mode 0600), which `make env`
# and `make up` write with random tokens; compose reads it by itself. Tools
# on the host (make demo, make up's wait, curl in the README) take the API
# token from MASTER_API_TOKEN: the shell's if set, as for compose, else the
# one in .env, read when a recipe runs, so after `make env` wrote it.
ifeq ($(origin MASTER_API_TOKEN),undefined)
MASTER_API_TOKEN = $(shell sed -n 's/^MASTER_API_TOKEN=//p' .env 2>/dev/null)
endif
export MASTER_API_TOKEN

# staticcheck through go run, pinned: the module cache keeps it after the first run.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BUF := go run github.com/bufbuild/buf/cmd/buf@v1.75.0
MODULES := ./proto/... ./master/... ./worker/... ./integration/...
# Unit tests: everything but the container tests in ./integration itself.
UNIT := ./proto/... ./master/... ./worker/... ./integration/client/... ./integration/cmd/...

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: up
up: images env $(if $(TLS_ON),certs) ## build the images and start the lab: master + $(WORKERS) workers (GPU_WORKERS=n: and n labelled gpu=nvidia; TLS=1: with mTLS)
	@sed -i '/^COMPOSE_FILE=$(subst /,\/,$(TLS_COMPOSE_FILE))$$/d' .env
	$(if $(TLS_ON),@echo "COMPOSE_FILE=$(TLS_COMPOSE_FILE)" >> .env && echo "env: wrote COMPOSE_FILE=$(TLS_COMPOSE_FILE) to .env: compose commands use the TLS overlay until the next make up without TLS=1")
	$(COMPOSE) $(COMPOSE_FILES) up -d --scale worker=$(WORKERS) --scale worker-gpu=$(or $(GPU_WORKERS),0)
	@go run ./integration/cmd/demo -api $(API) -wait-workers $$(( $(WORKERS) + $(or $(GPU_WORKERS),0) )) -tasks 0
	@echo "lab is up: $(API)  (make demo API=$(API), make logs, make down)"
	@echo "the API token is in .env: export \$$(grep MASTER_API_TOKEN .env) for curl; make demo reads it"

.PHONY: env
env: ## write random MASTER_API_TOKEN and MASTER_WORKER_TOKEN to .env unless it has them
	@touch .env && chmod 600 .env
	@for k in MASTER_API_TOKEN MASTER_WORKER_TOKEN; do \
	  grep -q "^$$k=" .env && continue; \
	  echo "$$k=$$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >> .env && echo "env: wrote a random $$k to .env"; \
	done

# The containers (uid 65532) read the master and worker keys through a bind
# mount, hence 0644; the CA key never enters a container and stays private.
.PHONY: certs
certs: ## make a lab CA and master/worker certificates in certs/ for TLS=1 (keeps existing ones)
	@if [ -f certs/ca.pem ]; then echo "certs: certs/ exists; remove it for new certificates"; \
	else go run ./integration/cmd/certs -out certs -key-mode 0644 && chmod 600 certs/ca-key.pem; fi

# compose refuses to read compose.yaml with the tokens unset; down and logs
# start nothing, so they work without .env too.
ANY_TOKENS := MASTER_API_TOKEN=$${MASTER_API_TOKEN-} MASTER_WORKER_TOKEN=$${MASTER_WORKER_TOKEN-}

.PHONY: down
down: ## stop the lab and remove its containers
	$(ANY_TOKENS) $(COMPOSE) $(COMPOSE_FILES) down --remove-orphans

.PHONY: logs
logs: ## follow the lab's logs
	$(ANY_TOKENS) $(COMPOSE) $(COMPOSE_FILES) logs -f

# Fault injection for the exercises in docs/labs.md; docker/lab.sh does the
# work, and integration/labs_test.go runs the same script.
LAB := COMPOSE="$(COMPOSE)" API="$(API)" bash docker/lab.sh
N ?=
COUNT ?= 200

.PHONY: status scale kill-worker pause-worker unpause-worker partition-worker heal-worker \
	restart-master stop-master start-master long-task flood
status: ## workers in rotation order, worker containers, task counts
	@$(LAB) status
scale: ## run WORKERS workers (and GPU_WORKERS labelled ones): make scale WORKERS=3 GPU_WORKERS=2
	@$(LAB) scale $(WORKERS) $(GPU_WORKERS)
kill-worker: ## SIGKILL worker N (default: one running a task): make kill-worker N=2
	@$(LAB) kill-worker $(N)
pause-worker: ## freeze worker N with docker pause (default: one running a task)
	@$(LAB) pause-worker $(N)
unpause-worker: ## thaw worker N (default: every paused worker)
	@$(LAB) unpause-worker $(N)
partition-worker: ## cut worker N off the lab's network (default: one running a task)
	@$(LAB) partition-worker $(N)
heal-worker: ## reconnect worker N (default: every cut-off worker)
	@$(LAB) heal-worker $(N)
restart-master: ## restart the master container; tasks survive on its volume
	@$(LAB) restart-master
stop-master: ## stop the master container (workers keep retrying)
	@$(LAB) stop-master
start-master: ## start the stopped master container
	@$(LAB) start-master
long-task: ## submit `sleep SECS` (default 30) and show its worker: make long-task SECS=60
	@$(LAB) long-task $(SECS)
flood: ## submit COUNT tasks (default 200) fast, then count how they ended
	@$(LAB) flood $(COUNT)

.PHONY: images
images: ## build roundhouse/master and roundhouse/worker: binaries from the host's Go, or CLEAN=1 from the Dockerfiles (offline substitutes if no registry)
	CLEAN=$(CLEAN) bash docker/images.sh

.PHONY: proto
proto: ## regenerate proto/roundhousepb from proto/roundhouse.proto
	cd proto && $(BUF) generate

.PHONY: proto-check
proto-check: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- proto/roundhousepb && test -z "$$(git status --porcelain -- proto/roundhousepb)" \
	  || { echo "proto/roundhousepb is stale: run 'make proto' and commit the result"; exit 1; }

.PHONY: vet
vet: ## go vet, staticcheck and gofmt
	go vet $(MODULES)
	go run $(STATICCHECK) $(MODULES)
	@out=$$(gofmt -l proto master worker integration); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

.PHONY: test
test: ## unit tests (no Docker needed), and every Go micro-benchmark once so none rots
	go test -race -count=1 $(UNIT)
	go test -count=1 -run '^$$' -bench . -benchtime 1x $(UNIT)

.PHONY: integration
integration: images ## container tests: master + workers with testcontainers, and compose.yaml
	TESTCONTAINERS_RYUK_DISABLED=true COMPOSE="$(COMPOSE)" go test -count=1 -timeout 30m -v ./integration/ 2>&1 | tee integration.out | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} = 0
	$(if $(COMPOSE_OTHER),TESTCONTAINERS_RYUK_DISABLED=true COMPOSE="$(COMPOSE_OTHER)" go test -count=1 -timeout 15m -v -run '^TestCompose' ./integration/ 2>&1 | tee -a integration.out | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} = 0)

.PHONY: bench
bench: ## measure the master beside this machine's limits, write bench/results/latest.json (BENCH_FLAGS=-quick, -no-1m, -containers)
	go run ./integration/cmd/bench $(BENCH_FLAGS)

.PHONY: check
check: vet proto-check test integration ## every check and test, as CI runs them

.PHONY: build
build: ## build bin/master and bin/worker for this host
	CGO_ENABLED=0 go build -o bin/master ./master
	CGO_ENABLED=0 go build -o bin/worker ./worker

.PHONY: cli
cli: ## build the command-line client bin/roundhouse (roundhouse help; see README, Command-line client)
	CGO_ENABLED=0 go build -o bin/roundhouse ./integration/cmd/roundhouse

.PHONY: dev
dev: build ## run a master and WORKERS workers as local processes (Ctrl-C stops all)
	@trap 'kill 0' INT TERM EXIT; \
	MASTER_HTTP_ADDR=127.0.0.1:$(ROUNDHOUSE_HTTP_PORT) MASTER_GRPC_ADDR=127.0.0.1:50051 \
	  MASTER_TLS_CERT= MASTER_TLS_KEY= MASTER_TLS_CLIENT_CA= bin/master & \
	for i in $$(seq 1 $(WORKERS)); do WORKER_ID=w$$i WORKER_MASTER_ADDR=127.0.0.1:50051 \
	  WORKER_TOKEN=$${MASTER_WORKER_TOKEN-} WORKER_TLS_CA= WORKER_TLS_CERT= WORKER_TLS_KEY= WORKER_TLS_SERVER_NAME= \
	  WORKER_HEALTH_ADDR= WORKER_METRICS_ADDR= bin/worker & done; \
	wait

.PHONY: demo
demo: build ## start a local cluster, run a batch of tasks, show which worker ran which (API=... to use a running lab)
	go run ./integration/cmd/demo $(if $(filter command line,$(origin API)),-api $(API),-master bin/master -worker bin/worker -workers 3)

.PHONY: clean
clean: ## remove build outputs and the offline substitute images
	-bash docker/images.sh prune
	rm -rf bin docker/.build integration.out
	-docker image rm roundhouse/master:dev roundhouse/worker:dev roundhouse/shell:busybox-static 2>/dev/null
