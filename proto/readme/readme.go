// Package readme reads the repository's README.md for the tests that hold it
// to the code: a section by its heading, and the rows of its tables. The
// README promises every endpoint, variable, event and metric; the tests
// enumerate those from the code and look each one up here.
package readme

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Read returns README.md of the repository, found from the working
// directory (a package's directory under go test) upwards.
func Read() (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "README.md"))
	return string(b), err
}

// Dir returns the repository's root, the nearest directory from the
// working directory upwards that holds a README.md.
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "README.md"))
		if err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", err
		}
		dir = parent
	}
}

// SectionOf is Section of the repository's README, failing t when the
// README cannot be read or has no such section.
func SectionOf(t testing.TB, heading string) string {
	t.Helper()
	doc, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	section := Section(doc, heading)
	if section == "" {
		t.Fatalf("README has no section %q", heading)
	}
	return section
}

// Section is the text under the heading that starts with heading (such as
// "## Configuration"), up to the next heading of its level or above; ""
// when there is none. Lines inside code fences are never headings.
func Section(doc, heading string) string {
	level := strings.IndexFunc(heading, func(r rune) bool { return r != '#' })
	var out []string
	in, fence := false, false
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if !fence && strings.HasPrefix(line, "#") {
			l := strings.IndexFunc(line, func(r rune) bool { return r != '#' })
			switch {
			case in && l <= level:
				return strings.Join(out, "")
			case !in && l == level && strings.HasPrefix(line, heading):
				in = true
				continue
			}
		}
		if in {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// Row is one body row of a Markdown table.
type Row struct {
	Names []string // the `code` spans of the first cell
	Cells []string // every cell, trimmed
	Line  string
}

// Has reports whether the row's first cell names name.
func (r Row) Has(name string) bool {
	for _, n := range r.Names {
		if n == name {
			return true
		}
	}
	return false
}

var (
	codeSpan = regexp.MustCompile("`([^`]+)`")
	cellSep  = regexp.MustCompile(`[^\\]\|`)
)

// Rows returns the body rows of every table in text, header and separator
// rows left out.
func Rows(text string) []Row {
	var rows []Row
	var prev string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		was := prev
		prev = line
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| ---") {
			continue
		}
		if !strings.HasPrefix(was, "|") { // a header row
			continue
		}
		inner := strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
		var cells []string
		for {
			loc := cellSep.FindStringIndex(inner)
			if loc == nil {
				cells = append(cells, strings.TrimSpace(inner))
				break
			}
			cells = append(cells, strings.TrimSpace(inner[:loc[0]+1]))
			inner = inner[loc[1]:]
		}
		r := Row{Cells: cells, Line: line}
		for _, m := range codeSpan.FindAllStringSubmatch(cells[0], -1) {
			r.Names = append(r.Names, m[1])
		}
		rows = append(rows, r)
	}
	return rows
}

// Find returns the rows whose first cell names name.
func Find(rows []Row, name string) []Row {
	var out []Row
	for _, r := range rows {
		if r.Has(name) {
			out = append(out, r)
		}
	}
	return out
}

// bounded finds in a config.go the variables its loadConfig holds to a range.
var bounded = regexp.MustCompile(`check\("([A-Z_]+)", .*"(%[sd] )?(is outside|must be)`)

// CheckConfiguration holds README's Configuration table of the master's
// variables (which "master") or of the worker's ("worker", after the
// "Worker:" line) to typ, the program's config struct, with CheckEnvTable;
// the test runs in the program's directory, where its config.go is.
func CheckConfiguration(t testing.TB, which string, typ reflect.Type, derived ...string) {
	t.Helper()
	master, worker, ok := strings.Cut(SectionOf(t, "## Configuration"), "\nWorker:\n")
	if !ok {
		t.Fatal(`README's Configuration has no "Worker:" table after the master's`)
	}
	table := master
	if which == "worker" {
		table = worker
	}
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	CheckEnvTable(t, typ, string(src), Rows(table), derived...)
}

// CheckEnvTable holds rows, a README table of variables, to the env tags
// of typ (a config struct): a row per variable, its envDefault as its
// default ("empty" for none, but for the variables in derived, whose
// default the program works out), and no row for a variable not read; and
// the rows of the variables that src (its config.go) bounds to a range
// must give it.
func CheckEnvTable(t testing.TB, typ reflect.Type, src string, rows []Row, derived ...string) {
	t.Helper()
	read := map[string]bool{}
	for _, m := range bounded.FindAllStringSubmatch(src, -1) {
		for _, r := range Find(rows, m[1]) {
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
		found := Find(rows, name)
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
		got := Rows("|h|\n" + "| " + r.Cells[1] + " |")[0].Names // the default cell's code spans
		switch {
		case !set && !strings.HasPrefix(r.Cells[1], "empty") && !slices.Contains(derived, name):
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

// composeDefault finds ${NAME:-default} in the lab's compose files and
// scripts.
var composeDefault = regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}`)

// CheckLabDefaults holds the fallbacks the lab's files (compose.yaml,
// docker/*.yaml, docker/*.sh) give the variables of typ, a config struct,
// to its envDefault: README's Configuration table gives a variable one
// default, and a lab started without it set must run with that one.
func CheckLabDefaults(t testing.TB, typ reflect.Type) {
	t.Helper()
	root, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if def, ok := f.Tag.Lookup("envDefault"); ok && name != "" {
			defaults[name] = def
		}
	}
	files := []string{filepath.Join(root, "compose.yaml")}
	for _, pattern := range []string{"docker/*.yaml", "docker/*.sh"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	checked := 0
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range composeDefault.FindAllStringSubmatch(string(b), -1) {
			def, ok := defaults[m[1]]
			if !ok {
				continue
			}
			checked++
			if m[2] != def {
				rel, _ := filepath.Rel(root, file)
				t.Errorf("%s falls back to %s=%s, README and the code give %s", rel, m[1], m[2], def)
			}
		}
	}
	if checked == 0 {
		t.Errorf("no variable of %s has a fallback in compose.yaml or docker/: is the pattern still right?", typ)
	}
}

// MetricRows returns the rows of a table of metrics by the names their
// first cells give, labels left out (`tasks_total{status}` is tasks_total).
func MetricRows(table string) map[string]Row {
	rows := map[string]Row{}
	for _, r := range Rows(table) {
		for _, n := range r.Names {
			name, _, _ := strings.Cut(n, "{")
			rows[name] = r
		}
	}
	return rows
}

// Metric is a metric family a program serves: its name, its type as
// Prometheus's text format spells it (counter, gauge, histogram...) and
// its labels' names.
type Metric struct {
	Name, Type string
	Labels     []string
}

// CheckMetrics fails t for each metric of served that rows (MetricRows)
// lacks, or names without its labels, or gives another type; who names
// the program in the messages. The runtime's go_ and process_ families
// are one row each, go_* and process_*, whose labels and types are not
// checked. It returns the names served as rows give them, for the caller's
// check of rows the program does not serve.
func CheckMetrics(t testing.TB, who string, rows map[string]Row, served []Metric) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, m := range served {
		name := m.Name
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			name = name[:strings.Index(name, "_")+1] + "*"
		}
		names[name] = true
		r, ok := rows[name]
		if !ok {
			t.Errorf("README's table of the %s's metrics has no row for %s", who, name)
			continue
		}
		if name != m.Name {
			continue
		}
		want := name
		if len(m.Labels) > 0 {
			want += "{" + strings.Join(m.Labels, ",") + "}"
		}
		if !slices.Contains(r.Names, want) {
			t.Errorf("README names %v, the %s serves %s", r.Names, who, want)
		}
		if len(r.Cells) < 2 || r.Cells[1] != m.Type {
			t.Errorf("README: %s is a %s, the table says %q", name, m.Type, r.Cells)
		}
	}
	return names
}
