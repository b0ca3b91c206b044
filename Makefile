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
# The lab's compose project. `make env` writes the same default to .env, so
# that a plain `docker compose` (or `docker-compose`) in a checkout of any
# name runs this lab too, not one named after the directory. The project
# and the API's port are the shell's if set, else .env's (read as the token
# below), else the defaults: exported, they override .env for compose, so
# they must be what a plain compose would take from .env.
DEFAULT_PROJECT := roundhouse
export COMPOSE_PROJECT_NAME ?= $(or $(call dotenv,COMPOSE_PROJECT_NAME),$(DEFAULT_PROJECT))
export ROUNDHOUSE_HTTP_PORT ?= $(or $(call dotenv,ROUNDHOUSE_HTTP_PORT),9092)
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
# REMOTE=1 (with TLS=1 only): also publish the master's gRPC port for
# workers on other machines (docker/compose.remote.yaml; README, Remote
# workers). Written to .env like TLS, so it stays until a make up without it.
REMOTE ?=
REMOTE_ON := $(filter-out 0 no false,$(REMOTE))
ifneq ($(REMOTE_ON),)
ifeq ($(TLS_ON),)
$(error REMOTE=1 publishes the master's gRPC port to other machines and needs TLS=1: without TLS the worker token and every task and result would cross the network in plaintext. Run: make up TLS=1 REMOTE=1)
endif
endif
LAB_COMPOSE_FILE := $(TLS_COMPOSE_FILE)$(if $(REMOTE_ON),:docker/compose.remote.yaml)
COMPOSE_FILES := $(if $(TLS_ON),-f compose.yaml -f docker/compose.tls.yaml $(if $(REMOTE_ON),-f docker/compose.remote.yaml))

# The lab's secrets live in .env (git-ignored, mode 0600), which `make env`
# and `make up` write with random tokens; compose reads it by itself. Tools
# on the host (make demo, make up's wait, curl in the README) take the API
# token from MASTER_API_TOKEN: the shell's if set, as for compose, else the
# one in .env, read when a recipe runs, so after `make env` wrote it, and
# read as compose reads it (as docker/lab.sh does too): the last line that
# sets it, with or without `export ` and quotes.
dotenv_sed = s/^\(export \)\{0,1\}$(1)=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\} *$$/\2/p
dotenv = $(shell sed -n "$(call dotenv_sed,$(1))" .env 2>/dev/null | tail -n 1)
ifeq ($(origin MASTER_API_TOKEN),undefined)
MASTER_API_TOKEN = $(call dotenv,MASTER_API_TOKEN)
endif
export MASTER_API_TOKEN

# staticcheck through go run, pinned: the module cache keeps it after the first run.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BUF := go run github.com/bufbuild/buf/cmd/buf@v1.75.0
MODULES := ./proto/... ./master/... ./worker/... ./integration/...
# Unit tests: everything but the container tests in ./integration itself.
UNIT := ./proto/... ./master/... ./worker/... ./integration/client/... ./integration/cmd/... ./integration/internal/localcluster/...

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: up
up: images env $(if $(TLS_ON),certs) ## build the images and start the lab: master + WORKERS workers (default 5; GPU_WORKERS=n: and n labelled gpu=nvidia; TLS=1: with mTLS; TLS=1 REMOTE=1: gRPC port published for remote workers)
	@sed -i -E '/^COMPOSE_FILE=$(subst /,\/,$(TLS_COMPOSE_FILE))(:docker\/compose\.remote\.yaml)?$$/d' .env
	$(if $(TLS_ON),@echo "COMPOSE_FILE=$(LAB_COMPOSE_FILE)" >> .env && echo "env: wrote COMPOSE_FILE=$(LAB_COMPOSE_FILE) to .env: compose commands use the TLS overlay$(if $(REMOTE_ON), and publish the gRPC port) until the next make up without TLS=1$(if $(REMOTE_ON), or REMOTE=1)")
	$(COMPOSE) $(COMPOSE_FILES) up -d --scale worker=$(WORKERS) --scale worker-gpu=$(or $(GPU_WORKERS),0)
	@go run ./integration/cmd/demo -api $(API) -wait-workers $$(( $(WORKERS) + $(or $(GPU_WORKERS),0) )) -tasks 0
	$(if $(REMOTE_ON),@echo "gRPC published at $$($(COMPOSE) $(COMPOSE_FILES) port master 50051) (mutual TLS only); on another machine run make worker-join MASTER=<this host>:$${ROUNDHOUSE_GRPC_PORT:-50051} (README, Remote workers)")
	@echo "lab is up: $(API)  (make demo API=$(API), make logs, make down)"
	@echo "the API token is in .env: export \$$(grep MASTER_API_TOKEN .env) for curl; make demo reads it"

.PHONY: env
env: ## write random MASTER_API_TOKEN and MASTER_WORKER_TOKEN, and COMPOSE_PROJECT_NAME=roundhouse, to .env unless it has them
	@touch .env && chmod 600 .env
	@# Lines are appended below (and by make up TLS=1): end a last line
	@# without a newline first, or the next key would be glued onto it.
	@[ -z "$$(tail -c 1 .env)" ] || echo >> .env
	@# A line with `export ` sets it too, for compose and for the recipes here.
	@for k in MASTER_API_TOKEN MASTER_WORKER_TOKEN; do \
	  grep -Eq "^(export )?$$k=" .env && continue; \
	  echo "$$k=$$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >> .env && echo "env: wrote a random $$k to .env"; \
	done
	@grep -Eq '^(export )?COMPOSE_PROJECT_NAME=' .env || { echo "COMPOSE_PROJECT_NAME=$(DEFAULT_PROJECT)" >> .env && \
	  echo "env: wrote COMPOSE_PROJECT_NAME=$(DEFAULT_PROJECT) to .env: compose commands here run the lab make up starts"; }

# The containers (uid 65532) read the master and worker keys through a bind
# mount, hence 0644; the CA key never enters a container and stays private.
# MASTER_HOSTS: more names and addresses for the master certificate, those
# remote workers dial (lab.example,192.168.1.10); given for an existing
# certs/, it reissues the master certificate alone from the same CA.
# ROUNDHOUSE_CERTS: another directory, as for docker/compose.tls.yaml.
.PHONY: certs
MASTER_HOSTS ?=
CERTS_DIR := $(or $(ROUNDHOUSE_CERTS),certs)
CERTS_TOOL := go run ./integration/cmd/certs -out "$(CERTS_DIR)" -key-mode 0644 $(if $(MASTER_HOSTS),-hosts "$(MASTER_HOSTS)")
certs: ## make a lab CA and master/worker certificates in certs/ for TLS=1 (keeps existing ones; MASTER_HOSTS=lab.example,10.0.0.5: names for remote workers)
	@if [ -f "$(CERTS_DIR)/ca.pem" ]; then \
	  $(if $(MASTER_HOSTS),$(CERTS_TOOL) -master-only,echo "certs: $(CERTS_DIR)/ exists; remove it for new certificates (MASTER_HOSTS=... adds names to its master certificate)"); \
	else $(CERTS_TOOL) && chmod 600 "$(CERTS_DIR)/ca-key.pem"; fi

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

# Remote workers (README, Remote workers): docker/remote-worker.sh runs the
# worker image on this machine against a lab's published gRPC port, with
# the certificates in ROUNDHOUSE_CERTS (default certs/) and the worker token
# from WORKER_TOKEN_FILE, else MASTER_WORKER_TOKEN (environment or .env).
MASTER ?=
.PHONY: worker-join worker-leave
worker-join: ## join a worker on this machine to a lab elsewhere, over mTLS: make worker-join MASTER=host:50051 [WORKER_ID=...]
	@bash docker/remote-worker.sh join "$(MASTER)"
worker-leave: ## stop and remove the worker worker-join started: make worker-leave [WORKER_ID=...]
	@bash docker/remote-worker.sh leave

# Docker Swarm: docker/stack.yaml as stack SWARM_STACK. The tokens become
# swarm secrets, read from files under .swarm/ (git-ignored, mode 0700) that
# swarm-up writes from the shell's variables or .env; .swarm/created-swarm
# records that swarm-up initialised the swarm (and whether it created the
# docker_gwbridge network with it), so swarm-down leaves it (and removes that).
SWARM_STACK ?= roundhouse
# The node the master is pinned to (its database volume is local): this one.
ROUNDHOUSE_MASTER_NODE ?= $(shell docker info -f '{{.Name}}' 2>/dev/null)
# docker swarm init --advertise-addr, for a machine with several addresses.
SWARM_ADVERTISE_ADDR ?=

.PHONY: swarm-up
swarm-up: images env ## deploy the lab on Docker Swarm as stack SWARM_STACK (default roundhouse): master + WORKERS workers (default 5; a single-node swarm if none)
	@# Another master on the port (make up's, make dev's) keeps the stack's
	@# from publishing it, and the wait below would count its workers.
	@docker service inspect $(SWARM_STACK)_master >/dev/null 2>&1 || ! curl -fsS --max-time 2 -o /dev/null $(API)/healthz 2>/dev/null || \
	  { echo "swarm: a master already answers at $(API), not stack $(SWARM_STACK)'s: stop it (make down for the compose lab), or deploy on another port, ROUNDHOUSE_HTTP_PORT=..."; exit 1; }
	@case "$$(docker info -f '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}')" in \
	  "active true") ;; \
	  "inactive false") mkdir -p .swarm && docker network inspect docker_gwbridge >/dev/null 2>&1 && : > .swarm/created-swarm \
	    || echo docker_gwbridge > .swarm/created-swarm; \
	    docker swarm init $(if $(SWARM_ADVERTISE_ADDR),--advertise-addr $(SWARM_ADVERTISE_ADDR)) >/dev/null \
	    || { rm .swarm/created-swarm; exit 1; }; echo "swarm: initialised a single-node swarm; make swarm-down leaves it" ;; \
	  *) echo "swarm: this engine is in a swarm but not a manager: run make swarm-up on a manager"; exit 1 ;; \
	esac
	@mkdir -p .swarm && chmod 700 .swarm && umask 077 && \
	for k in MASTER_API_TOKEN MASTER_WORKER_TOKEN; do \
	  v=$$(printenv $$k || sed -n "$(call dotenv_sed,$$k)" .env | tail -n 1); \
	  test -n "$$v" || { echo "swarm: $$k is empty: swarm needs both tokens (make env writes them to .env)"; exit 1; }; \
	  printf '%s' "$$v" > .swarm/$$(echo $$k | tr A-Z a-z); \
	done
	ROUNDHOUSE_SECRETS="$(CURDIR)/.swarm" ROUNDHOUSE_MASTER_NODE=$(ROUNDHOUSE_MASTER_NODE) WORKERS=$(WORKERS) GPU_WORKERS=$(or $(GPU_WORKERS),0) \
	  docker stack deploy -c docker/stack.yaml --resolve-image never --detach=true $(SWARM_STACK)
	@go run ./integration/cmd/demo -api $(API) -wait-workers $$(( $(WORKERS) + $(or $(GPU_WORKERS),0) )) -tasks 0
	@echo "lab is up on swarm: $(API)  (docker service ls, docker service scale $(SWARM_STACK)_worker=N, make swarm-down)"

.PHONY: swarm-down
swarm-down: ## remove the swarm stack (its master-data volume stays); leave the swarm if swarm-up made it
	-docker stack rm $(SWARM_STACK)
	@# docker stack rm returns before the stack is gone: its containers stop
	@# after their grace period, and only then does its network go. A
	@# swarm-up (stack deploy) or swarm leave before that fails on the
	@# network still being there.
	@for i in $$(seq 120); do \
	  left="$$(docker ps -aq --filter label=com.docker.stack.namespace=$(SWARM_STACK))$$(docker network ls -q --filter label=com.docker.stack.namespace=$(SWARM_STACK))"; \
	  test -z "$$left" && break; sleep 0.5; done; \
	test -z "$$left" || echo "swarm: stack $(SWARM_STACK)'s containers or network still there after 60 s (docker ps -a, docker network ls)"
	@rm -f .swarm/master_api_token .swarm/master_worker_token
	@if [ -f .swarm/created-swarm ]; then docker swarm leave --force && \
	  { grep -q docker_gwbridge .swarm/created-swarm && docker network rm docker_gwbridge >/dev/null || true; } && rm .swarm/created-swarm; fi
	@echo "stack $(SWARM_STACK) removed; its tasks and results stay on volume $(SWARM_STACK)_master-data (docker volume rm it to wipe them)"

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
	@# The worker also builds where its runner falls back to os/exec (a Mac, for make dev).
	GOOS=darwin go vet ./worker/...
	@out=$$(gofmt -l proto master worker integration); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

.PHONY: test
test: ## unit tests (no Docker needed), and every Go micro-benchmark once so none rots
	go test -race -count=1 $(UNIT)
	go test -race -count=1 -tags runner_portable ./worker/internal/runner
	go test -count=1 -run '^$$' -bench . -benchtime 1x $(UNIT)

.PHONY: integration
integration: images ## container tests: master + workers with testcontainers, and compose.yaml
	TESTCONTAINERS_RYUK_DISABLED=true COMPOSE="$(COMPOSE)" go test -count=1 -timeout 30m -v ./integration/ 2>&1 | tee integration.out | grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} = 0
	$(if $(COMPOSE_OTHER),TESTCONTAINERS_RYUK_DISABLED=true COMPOSE="$(COMPOSE_OTHER)" go test -count=1 -timeout 15m -v -run '^TestCompose' ./integration/ 2>&1 | tee -a integration.out | grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} = 0)

# The system Roundhouse replaces, measured beside it by make bench when its
# build is there (README, Performance): it needs ports 9092 and 50051 free.
# PEER= leaves it out; CI has no such file, so nothing there depends on it.
PEER ?= $(wildcard ../shared/peers/seed-server)

.PHONY: bench
bench: ## measure the master beside this machine's limits and the old system (PEER), write bench/results/latest.json (BENCH_FLAGS=-quick, -no-1m, -containers)
	go run ./integration/cmd/bench $(if $(PEER),-peer $(PEER)) $(BENCH_FLAGS)

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
dev: build ## run a master and WORKERS workers (default 5) as local processes, API on 127.0.0.1:ROUNDHOUSE_HTTP_PORT (default 9092; Ctrl-C stops all)
	@# Built, not go run: go run exits 1 after a Ctrl-C, which make would report as a failure.
	go build -o bin/demo ./integration/cmd/demo
	bin/demo -serve -master bin/master -worker bin/worker -workers $(WORKERS) \
	  -http 127.0.0.1:$(ROUNDHOUSE_HTTP_PORT) -grpc 127.0.0.1:50051 -db roundhouse.db

.PHONY: demo
demo: build ## start a local cluster, run a batch of tasks, show which worker ran which (API=... to use a running lab)
	go run ./integration/cmd/demo $(if $(filter command line,$(origin API)),-api $(API),-master bin/master -worker bin/worker -workers 3)

.PHONY: clean
clean: ## remove build outputs and the offline substitute images
	-bash docker/images.sh prune
	rm -rf bin docker/.build integration.out
	-docker image rm roundhouse/master:dev roundhouse/worker:dev roundhouse/shell:busybox-static 2>/dev/null
