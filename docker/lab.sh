#!/usr/bin/env bash
# lab.sh breaks and inspects a running Roundhouse lab (started by `make up`):
# the fault injections of docs/labs.md. The make targets (make kill-worker,
# make pause-worker, ...) and the container test integration/labs_test.go
# both run it, so the guide and its test exercise the same commands.
#
#   docker/lab.sh <command> [args]      (docker/lab.sh help lists them)
#
# It needs only bash, docker and curl. Containers are found by their compose
# labels, so it works with Compose v1 and v2 names and any project name.
#
# Environment:
#   COMPOSE               compose command (default: `docker compose` if present, else docker-compose)
#   COMPOSE_PROJECT_NAME  the lab's compose project (else the .env's, as for
#                         compose, else roundhouse)
#   COMPOSE_FILE          the compose files, read by compose itself: from the
#                         environment, else from .env, where `make up TLS=1`
#                         writes compose.yaml:docker/compose.tls.yaml so that
#                         `scale` starts workers with their TLS certificates
#   ROUNDHOUSE_HTTP_PORT  the master's published REST port (else the .env's, else 9092)
#   API                   the master's REST base URL (default http://127.0.0.1:$ROUNDHOUSE_HTTP_PORT)
#   MASTER_API_TOKEN      bearer token for the API, when the master wants one
#                         (if unset, read from the .env that `make up` writes)
set -euo pipefail
# A failure inside $(...) fails the assignment that holds it.
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# dotenv KEY: the value .env gives KEY, read as compose reads it: the last
# line that sets it, with or without `export ` and quotes.
dotenv() {
	[[ -f $ROOT/.env ]] || return 0
	sed -n "s/^\(export \)\{0,1\}$1=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\} *$/\2/p" "$ROOT/.env" | tail -n 1
}
# The environment's, else .env's, as compose (and the Makefile) take them.
PROJECT=${COMPOSE_PROJECT_NAME:-$(dotenv COMPOSE_PROJECT_NAME)}
PROJECT=${PROJECT:-roundhouse}
PORT=${ROUNDHOUSE_HTTP_PORT:-$(dotenv ROUNDHOUSE_HTTP_PORT)}
PORT=${PORT:-9092}
API=${API:-http://127.0.0.1:$PORT}
if [[ -z ${COMPOSE:-} ]]; then
	if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
# Only when unset: an empty MASTER_API_TOKEN means "no token" on purpose.
if [[ -z ${MASTER_API_TOKEN+set} ]]; then
	MASTER_API_TOKEN=$(dotenv MASTER_API_TOKEN)
fi

die() {
	echo "lab: $*" >&2
	exit 1
}

usage() {
	cat <<EOF
usage: docker/lab.sh <command> [args]   (project "$PROJECT", API $API)

  status                   workers in rotation order with their labels, worker containers, task counts
  scale N [G]              run N plain workers, and G labelled ones (compose service worker-gpu)
                           if G is given (new ones join the end of the rotation;
                           removed ones get SIGTERM and drain first)
  kill-worker [N]          SIGKILL worker container N (default: one running a task)
  pause-worker [N]         freeze worker N with docker pause (default: one running a task)
  unpause-worker [N]       thaw worker N (default: every paused worker)
  partition-worker [N]     disconnect worker N from the lab's network (default: one running a task)
  heal-worker [N]          reconnect worker N (default: every disconnected worker)
  restart-master           restart the master container and wait until it answers
  stop-master              stop the master container (workers keep retrying)
  start-master             start it again and wait until it answers
  long-task [SECONDS]      submit "sleep SECONDS" (default 30), print its ID and worker once running
  flood [COUNT] [SECONDS]  submit COUNT tasks (default 200) of "sleep SECONDS" (default 0.2),
                           8 at a time, then wait for all and count how they ended

N is the number compose gave the container: 3 in roundhouse-worker-3 / roundhouse_worker_3;
gpu-2 names worker 2 of the labelled group (roundhouse-worker-gpu-2 / roundhouse_worker-gpu_2).
EOF
}

# compose runs compose in the repository root without -f, so compose picks
# the files itself: COMPOSE_FILE from the environment or .env, else compose.yaml.
compose() {
	# $COMPOSE is a command and its first arguments ("docker compose"): split on purpose.
	# shellcheck disable=SC2086
	(cd "$ROOT" && $COMPOSE -p "$PROJECT" "$@")
}

# --- the REST API -----------------------------------------------------------

BODY="" # the last answer's body, set by api
CODE="" # its HTTP status, 000 when there was no answer
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# api METHOD PATH [JSON]: one request; sets BODY and CODE. Fails with a clear
# message when nothing answers or the token is missing or wrong.
api() {
	local method=$1 path=$2 data=${3:-}
	# Files of this process's own: flood calls api from parallel subshells.
	local body=$TMP/body.$BASHPID err=$TMP/err.$BASHPID
	rm -f "$body"
	CODE=$(curl -sS -o "$body" -w '%{http_code}' --max-time 75 -X "$method" \
		${MASTER_API_TOKEN:+-H "Authorization: Bearer $MASTER_API_TOKEN"} \
		${data:+-H "Content-Type: application/json" --data "$data"} \
		"$API$path" 2>"$err") || CODE=000
	BODY=""
	[[ ! -f $body ]] || BODY=$(flatten <"$body")
	case $CODE in
	000) die "no master answers at $API ($(head -c 200 "$err")). Is the lab up? Start it with \`make up\` (project $PROJECT, port $PORT)." ;;
	401) die "the master wants a token: set MASTER_API_TOKEN (\`make up\` writes it to .env). It said: $BODY" ;;
	esac
}

# flatten: JSON on stdin on one line, without the whitespace between tokens
# (the master indents its answers for people). Newlines inside strings are
# escaped in JSON, so every raw newline is layout.
flatten() {
	tr -d '\n' | sed -e 's/^ *//' -e 's/\([,{[]\) */\1/g' -e 's/" *: */":/g' -e 's/ *\([]}]\)/\1/g'
	echo
}

# field NAME: the value of the first string, number or literal field NAME
# in the flattened JSON on stdin (a task's own fields come before its
# history's).
field() {
	sed -n "s/\"$1\":\"\{0,1\}\([^\",}]*\).*/\n\1/;T;s/.*\n//p"
}

# workers_lines: GET /workers, one worker object per line, in rotation order.
workers_lines() {
	api GET /workers
	[[ $CODE == 200 ]] || die "GET /workers: $CODE $BODY"
	# A worker object's only nested object is its labels, and "},{" occurs
	# only between workers: split there, one per line.
	printf '%s' "$BODY" | sed -n 's/.*"workers":\[\(.*\)\].*/\1/p' | sed 's/},{/}\n{/g' | grep '"id"' || true
}

# labels_of: the labels of the worker object on stdin as k=v,k=v; - for none.
labels_of() {
	local l
	l=$(sed -n 's/.*"labels":{\([^}]*\)}.*/\1/p' | sed -e 's/":"/=/g' -e 's/"//g')
	echo "${l:--}"
}

# count_tasks STATUS: how many tasks have that status (pages through GET /tasks).
count_tasks() {
	local n=0 cursor="" page
	while :; do
		api GET "/tasks?status=$1&limit=1000${cursor:+&cursor=$cursor}"
		[[ $CODE == 200 ]] || die "GET /tasks: $CODE $BODY"
		# "id":" occurs once per task: worker_id has a _ before it, and a
		# quote inside a command is escaped.
		page=$(printf '%s' "$BODY" | { grep -o '"id":"' || true; } | wc -l)
		n=$((n + page))
		cursor=$(printf '%s' "$BODY" | sed -n 's/.*"next_cursor":"\([^"]*\)".*/\1/p')
		[[ -n $cursor ]] || break
	done
	echo "$n"
}

# wait_healthy SECONDS: poll /healthz until the master answers.
wait_healthy() {
	local deadline=$((SECONDS + $1))
	until curl -fsS --max-time 2 -o /dev/null "$API/healthz" 2>/dev/null; do
		((SECONDS < deadline)) || die "the master did not answer $API/healthz within $1s (see: make logs)"
		sleep 0.5
	done
}

# --- containers -------------------------------------------------------------

# containers SERVICE [N] [docker ps filters...]: IDs of the project's containers.
containers() {
	local service=$1 n=${2:-}
	shift $(($# < 2 ? $# : 2))
	docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
		--filter "label=com.docker.compose.service=$service" \
		${n:+--filter "label=com.docker.compose.container-number=$n"} "$@"
}

# The compose services whose containers are workers: the plain group, then
# the labelled one.
WORKER_SERVICES=(worker worker-gpu)

# worker_containers [docker ps filters...]: IDs of the project's workers, both groups.
worker_containers() {
	local s
	for s in "${WORKER_SERVICES[@]}"; do containers "$s" "" "$@"; done
}

name_of() { docker inspect -f '{{.Name}}' "$1" | sed 's#^/##'; }
networks_of() { docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$1"; }
number_of() { docker inspect -f '{{index .Config.Labels "com.docker.compose.container-number"}}' "$1"; }
# ref_of: how N names a worker container: 3 for worker 3, gpu-2 for worker-gpu 2.
ref_of() {
	local svc_n
	# Callers test ref_of with || (a worker that is no container of the
	# lab), where set -e is off: fail here explicitly, never print "".
	svc_n=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{index .Config.Labels "com.docker.compose.container-number"}}' "$1") || return
	case ${svc_n% *} in
	worker-gpu) echo "gpu-${svc_n#* }" ;;
	*) echo "${svc_n#* }" ;;
	esac
}

master_container() {
	local c
	c=$(containers master | head -n 1)
	[[ -n $c ]] || die "no master container in compose project \"$PROJECT\": start the lab with \`make up\` (or set COMPOSE_PROJECT_NAME)"
	echo "$c"
}

# network: the lab's network, the one the master is on.
network() {
	docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{"\n"}}{{end}}' "$(master_container)" | grep -m 1 . ||
		die "the master container is on no network"
}

# worker N: the container ID of worker N (gpu-N: of the labelled group); it must exist.
worker() {
	local c
	if [[ $1 =~ ^[0-9]+$ ]]; then
		c=$(containers worker "$1")
	elif [[ $1 =~ ^gpu-([0-9]+)$ ]]; then
		c=$(containers worker-gpu "${BASH_REMATCH[1]}")
	else
		die "N must be a worker's container number (3, or gpu-2 in the labelled group), got \"$1\""
	fi
	[[ -n $c ]] || die "no worker $1 in compose project \"$PROJECT\" (have: $(worker_numbers))"
	echo "$c"
}

# sorted_workers: the project's worker containers, plain ones first, each group by number.
sorted_workers() {
	local s c
	for s in "${WORKER_SERVICES[@]}"; do
		for c in $(containers "$s"); do echo "$(number_of "$c") $c"; done | sort -n | cut -d' ' -f2
	done
}

worker_numbers() {
	local c out=""
	for c in $(sorted_workers); do out+="${out:+ }$(ref_of "$c")"; done
	echo "${out:-none}"
}

# busy_worker: the number of a worker the master lists as running a task,
# else of the first worker in the rotation.
busy_worker() {
	local lines id
	curl -fsS --max-time 2 -o /dev/null "$API/healthz" 2>/dev/null ||
		die "the master does not answer at $API, so it cannot say which worker is busy: name one (N=2)"
	lines=$(workers_lines)
	[[ -n $lines ]] || die "the master lists no workers: nothing to break (make status)"
	id=$({ grep -m 1 '"running":[1-9]' || true; } <<<"$lines" | field id)
	[[ -n $id ]] || id=$(head -n 1 <<<"$lines" | field id)
	ref_of "$id" 2>/dev/null || die "worker $id is not a container of project \"$PROJECT\""
}

# target N|"": worker N, or busy_worker when N is empty. Prints "ID NAME N".
target() {
	local n=${1:-}
	[[ -n $n ]] || n=$(busy_worker)
	local c
	c=$(worker "$n")
	echo "$c $(name_of "$c") $n"
}

# --- commands ---------------------------------------------------------------

cmd_status() {
	local mc up=yes lines=""
	mc=$(master_container)
	echo "master container: $(name_of "$mc") $(docker inspect -f '{{.State.Status}}' "$mc")"
	curl -fsS --max-time 2 -o /dev/null "$API/healthz" 2>/dev/null || up=""
	if [[ -z $up ]]; then
		echo "the master does not answer at $API (make start-master, or make up)"
	else
		lines=$(workers_lines)
		echo "workers the master lists, in rotation order ($API/workers):"
		[[ -n $lines ]] || echo "  none"
	fi
	if [[ -n $lines ]]; then
		printf '  %-28s %-9s %5s %7s %9s  %s\n' ID STATE SLOTS RUNNING COMPLETED LABELS
		while IFS= read -r w; do
			local next=""
			grep -q '"next":true' <<<"$w" && next="  <- next"
			printf '  %-28s %-9s %5s %7s %9s  %s%s\n' "$(field id <<<"$w")" "$(field state <<<"$w")" \
				"$(field slots <<<"$w")" "$(field running <<<"$w")" "$(field completed <<<"$w")" "$(labels_of <<<"$w")" "$next"
		done <<<"$lines"
	fi
	local net c nets
	net=$(network)
	echo "worker containers (project $PROJECT, network $net):"
	printf '  %-5s %-28s %-8s %-14s %s\n' N NAME DOCKER NETWORK MASTER
	for c in $(sorted_workers); do
		local name on="connected" listed="in rotation"
		name=$(name_of "$c")
		nets=$(networks_of "$c")
		[[ " $nets " == *" $net "* ]] || on="CUT OFF"
		grep -q "\"id\":\"$name\"" <<<"$lines" || listed="not listed"
		printf '  %-5s %-28s %-8s %-14s %s\n' "$(ref_of "$c")" "$name" "$(docker inspect -f '{{.State.Status}}' "$c")" "$on" "$listed"
	done
	[[ -n $up ]] || return 0
	local s counts=""
	for s in scheduled queued running succeeded failed timed_out canceled; do
		counts+="$s $(count_tasks "$s")  "
	done
	echo "tasks: $counts"
}

cmd_scale() {
	local n=${1:-} g=${2:-}
	[[ $n =~ ^[0-9]+$ && $g =~ ^[0-9]*$ ]] || die "usage: scale N [G] (how many plain workers to run, and labelled ones)"
	master_container >/dev/null
	# Scaling never touches the master nor replaces a running worker, even if
	# the environment differs from when the lab was started; a killed worker
	# is started again. Without G the labelled group is left as it is.
	if [[ -z $g ]]; then
		compose up -d --no-recreate --no-deps --no-build --scale "worker=$n" worker
		echo "scaled to $n workers; the master lists them as they register (make status)"
	else
		compose up -d --no-recreate --no-deps --no-build --scale "worker=$n" --scale "worker-gpu=$g" worker worker-gpu
		echo "scaled to $n plain workers and $g labelled ones (worker-gpu); the master lists them as they register (make status)"
	fi
}

cmd_kill_worker() {
	local t c name n
	t=$(target "${1:-}")
	read -r c name n <<<"$t"
	docker kill "$c" >/dev/null
	echo "killed worker $n ($name) with SIGKILL: its connection closed, so the master drops it at once"
	echo "and re-queues its running task after half of MASTER_WORKER_TIMEOUT (5s by default), unless it comes back"
	echo "to claim it. Bring it back: make scale WORKERS=<as before> (and GPU_WORKERS=<as before> for a gpu-N)"
}

cmd_pause_worker() {
	local t c name n
	t=$(target "${1:-}")
	read -r c name n <<<"$t"
	docker pause "$c" >/dev/null
	echo "paused worker $n ($name): it sends no heartbeats; the master drops it within MASTER_WORKER_TIMEOUT"
	echo "(10s by default) and re-queues its task. Thaw it: make unpause-worker N=$n"
}

cmd_unpause_worker() {
	local cs
	if [[ -n ${1:-} ]]; then cs=$(worker "$1"); else cs=$(worker_containers --filter status=paused); fi
	[[ -n $cs ]] || die "no paused worker in project \"$PROJECT\""
	local c
	for c in $cs; do
		docker unpause "$c" >/dev/null
		echo "unpaused worker $(ref_of "$c") ($(name_of "$c")): it reconnects and rejoins at the end of the rotation"
	done
}

cmd_partition_worker() {
	local t c name n
	t=$(target "${1:-}")
	read -r c name n <<<"$t"
	local net
	net=$(network)
	docker network disconnect "$net" "$c"
	echo "cut worker $n ($name) off $net: the master hears nothing more and drops it within"
	echo "MASTER_WORKER_TIMEOUT (10s by default), re-queueing its task. Reconnect it: make heal-worker N=$n"
}

cmd_heal_worker() {
	local net cs c healed=0
	net=$(network)
	if [[ -n ${1:-} ]]; then cs=$(worker "$1"); else cs=$(worker_containers); fi
	for c in $cs; do
		if [[ " $(networks_of "$c") " == *" $net "* ]]; then
			[[ -z ${1:-} ]] || die "worker $1 is not cut off from $net"
			continue
		fi
		docker network connect --alias "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$c")" "$net" "$c"
		echo "reconnected worker $(ref_of "$c") ($(name_of "$c")) to $net: it rejoins within WORKER_RECONNECT_MAX (5s) or so"
		healed=$((healed + 1))
	done
	((healed > 0)) || die "no worker is cut off from $net"
}

cmd_restart_master() {
	master_container >/dev/null
	local had
	had=$(workers_lines | grep -c '"id"' || true)
	compose restart master
	wait_healthy 60
	echo "master is back at $API: tasks are where they were (the database is on a volume)"
	wait_workers "$had"
}

# wait_workers N: wait up to 30s for the master to list N workers again, and say how many came back.
wait_workers() {
	local want=$1 have=0 deadline=$((SECONDS + 30))
	while ((SECONDS < deadline)); do
		have=$(workers_lines | grep -c '"id"' || true)
		((have < want)) || break
		sleep 0.5
	done
	echo "workers reconnected: $have of $want; running tasks stay with the worker that claims them"
}

cmd_stop_master() {
	master_container >/dev/null
	compose stop master
	echo "master stopped: workers keep running their tasks and retry every WORKER_RECONNECT_MAX (5s). make start-master"
}

cmd_start_master() {
	master_container >/dev/null
	compose start master
	wait_healthy 60
	echo "master is back at $API"
	wait_workers "$(worker_containers --filter status=running | grep -c . || true)"
}

cmd_long_task() {
	local secs=${1:-30}
	[[ $secs =~ ^[0-9]+$ ]] || die "usage: long-task [SECONDS] (a whole number)"
	api POST /tasks "{\"cmd\":\"sleep $secs; echo slept ${secs}s\"}"
	[[ $CODE == 202 ]] || die "POST /tasks: $CODE $BODY"
	local id status worker deadline=$((SECONDS + 10))
	id=$(field id <<<"$BODY")
	while :; do
		api GET "/tasks/$id"
		status=$(field status <<<"$BODY")
		if [[ $status != queued ]] || ((SECONDS >= deadline)); then break; fi
		sleep 0.2
	done
	worker=$(field worker_id <<<"$BODY")
	[[ $worker != null ]] || worker=""
	if [[ $status == running ]]; then
		echo "task $id running on $worker (N=$(ref_of "$worker" 2>/dev/null || echo '?')) for ${secs}s"
	else
		echo "task $id is $status${worker:+ on $worker} (every worker busy, or none connected?)"
	fi
}

cmd_flood() {
	local count=${1:-200} secs=${2:-0.2}
	if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 10000)); then
		die "usage: flood [COUNT] [SECONDS]: COUNT from 1 to 10000"
	fi
	[[ $secs =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "usage: flood [COUNT] [SECONDS]: SECONDS like 0.2"
	api GET /healthz
	local stamp i start=$SECONDS
	stamp=$(date +%s)
	: >"$TMP/ids"
	# Eight submissions in flight at a time: fast, but never a fork bomb.
	for ((i = 1; i <= count; i++)); do
		(
			api POST /tasks "{\"cmd\":\"sleep $secs; echo flood-$stamp-$i\"}"
			if [[ $CODE == 202 ]]; then field id <<<"$BODY" >>"$TMP/ids"; else echo "lab: task $i: $CODE $BODY" >&2; fi
		) &
		((i % 8)) || wait
	done
	wait
	local submitted
	submitted=$(wc -l <"$TMP/ids")
	echo "flood: submitted $submitted of $count tasks in $((SECONDS - start))s; waiting for them to finish"
	# GET ?wait= answers when the task is final: in submission order this
	# waits about as long as the queue takes to drain.
	local id status done=0 deadline=$((SECONDS + 600))
	declare -A ended=()
	while read -r id; do
		while :; do
			api GET "/tasks/$id?wait=30s"
			status=$(field status <<<"$BODY")
			[[ $status == scheduled || $status == queued || $status == running ]] || break
			((SECONDS < deadline)) || die "task $id still $status after 10 minutes"
		done
		ended[$status]=$((${ended[$status]:-0} + 1))
		done=$((done + 1))
		((done % 50)) || echo "  $done finished"
	done <"$TMP/ids"
	local summary="" s
	for s in "${!ended[@]}"; do summary+=" $s=${ended[$s]}"; done
	echo "flood: $done of $count finished in $((SECONDS - start))s:$summary"
	[[ $done == "$count" && ${ended[succeeded]:-0} == "$count" ]]
}

cmd=${1:-help}
shift || true
command -v docker >/dev/null || die "docker is not installed"
command -v curl >/dev/null || die "curl is not installed"
case $cmd in
status | scale | kill-worker | pause-worker | unpause-worker | partition-worker | heal-worker | \
	restart-master | stop-master | start-master | long-task | flood)
	"cmd_${cmd//-/_}" "$@"
	;;
help | -h | --help) usage ;;
*)
	usage >&2
	die "unknown command \"$cmd\""
	;;
esac
