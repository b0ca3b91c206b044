package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEConfiguration: every variable of config is a row of the
// README's worker table with envDefault as its default (or "empty" for
// none, "derived" for WORKER_ID), and the table names no variable the
// worker does not read.
func TestREADMEConfiguration(t *testing.T) {
	section := readme.SectionOf(t, "## Configuration")
	_, worker, ok := strings.Cut(section, "\nWorker:\n")
	if !ok {
		t.Fatal(`README's Configuration has no "Worker:" table`)
	}
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	readme.CheckEnvTable(t, reflect.TypeFor[config](), string(src), readme.Rows(worker), "WORKER_ID", "WORKER_TLS_SERVER_NAME")
}
