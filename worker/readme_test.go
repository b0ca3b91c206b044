package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEConfiguration: every variable of config is a row of the
// README's worker table with envDefault as its default (or "empty" for
// none, "derived" for WORKER_ID), and the table names no variable the
// worker does not read.
func TestREADMEConfiguration(t *testing.T) {
	doc, err := readme.Read()
	if err != nil {
		t.Fatal(err)
	}
	section := readme.Section(doc, "## Configuration")
	_, worker, ok := strings.Cut(section, "\nWorker:\n")
	if !ok {
		t.Fatal(`README's Configuration has no "Worker:" table`)
	}
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	checkEnvTable(t, reflect.TypeFor[config](), string(src), readme.Rows(worker))
}

// bounded finds in config.go the variables loadConfig holds to a range.
var bounded = regexp.MustCompile(`check\("([A-Z_]+)", .*"(%[sd] )?(is outside|must be)`)

// checkEnvTable holds rows, a README table of variables, to the env tags
// of typ, and the rows of the variables that src (config.go) bounds to
// their ranges, which the README must give.
func checkEnvTable(t *testing.T, typ reflect.Type, src string, rows []readme.Row) {
	t.Helper()
	read := map[string]bool{}
	for _, m := range bounded.FindAllStringSubmatch(src, -1) {
		for _, r := range readme.Find(rows, m[1]) {
			if len(r.Cells) > 2 && !regexp.MustCompile(` to |at most|at least|outside`).MatchString(r.Cells[2]) {
				t.Errorf("README: %s is held to a range at start, which its row does not give: %s", m[1], r.Line)
			}
		}
	}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name == "" || name == "-" {
			continue
		}
		read[name] = true
		found := readme.Find(rows, name)
		if len(found) != 1 {
			t.Errorf("README: %s is in %d rows of the table, want 1", name, len(found))
			continue
		}
		r := found[0]
		if len(r.Cells) < 3 {
			t.Errorf("README: row of %s has %d cells, want Variable | Default | Meaning: %s", name, len(r.Cells), r.Line)
			continue
		}
		def, set := f.Tag.Lookup("envDefault")
		got := readme.Rows("|h|\n" + "| " + r.Cells[1] + " |")[0].Names // the default cell's code spans
		switch {
		case !set && !strings.HasPrefix(r.Cells[1], "empty") && name != "WORKER_ID" && name != "WORKER_TLS_SERVER_NAME":
			t.Errorf("README: %s has no default in the code, but the table says %q", name, r.Cells[1])
		case set && len(r.Names) == len(got) && len(got) > 1: // `A`, `B` | `a`, `b`
			for i, n := range r.Names {
				if n == name && got[i] != def {
					t.Errorf("README: default of %s is %q, the code's is %q", name, got[i], def)
				}
			}
		case set && (len(got) == 0 || got[0] != def):
			t.Errorf("README: default of %s is %q, the code's is `%s`", name, r.Cells[1], def)
		}
	}
	for _, r := range rows {
		for _, n := range r.Names {
			if !read[n] {
				t.Errorf("README documents %s, which is not read: %s", n, r.Line)
			}
		}
	}
}
