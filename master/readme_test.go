package main

import (
	"reflect"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEConfiguration: every variable of config is a row of the
// README's master table with envDefault as its default (or "empty" for
// none), and the table names no variable the master does not read.
func TestREADMEConfiguration(t *testing.T) {
	readme.CheckConfiguration(t, "master", reflect.TypeFor[config]())
}

// TestLabDefaults: compose.yaml and docker/ give the master's variables the
// defaults README's table gives them (MASTER_WORKER_TIMEOUT, LOG_LEVEL...).
func TestLabDefaults(t *testing.T) {
	readme.CheckLabDefaults(t, reflect.TypeFor[config]())
}
