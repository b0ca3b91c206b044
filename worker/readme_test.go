package main

import (
	"reflect"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEConfiguration: every variable of config is a row of the
// README's worker table with envDefault as its default (or "empty" for
// none; WORKER_ID and WORKER_TLS_SERVER_NAME are worked out), and the
// table names no variable the worker does not read.
func TestREADMEConfiguration(t *testing.T) {
	readme.CheckConfiguration(t, "worker", reflect.TypeFor[config](), "WORKER_ID", "WORKER_TLS_SERVER_NAME")
}

// TestLabDefaults: compose.yaml and docker/ give the worker's variables the
// defaults README's table gives them (WORKER_SLOTS, WORKER_DRAIN_TIMEOUT...).
func TestLabDefaults(t *testing.T) {
	readme.CheckLabDefaults(t, reflect.TypeFor[config]())
}
