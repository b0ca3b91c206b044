package dispatch

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEEvents: every event type the dispatcher emits is a row of the
// README's events table, and the row names every field the dispatcher sets
// on an event of that type (read from this package's source: the
// events.Event literals, and the fields assigned to one afterwards); the
// table has no row for a type that is never emitted.
func TestREADMEEvents(t *testing.T) {
	section := readme.SectionOf(t, "## Dashboard, events and metrics")
	_, table, ok := strings.Cut(section, "**Events.**")
	table, _, _ = strings.Cut(table, "**Metrics.**")
	if !ok {
		t.Fatal("README's Dashboard, events and metrics has no **Events.** table")
	}
	rows := readme.Rows(table)

	emitted := emittedFields(t)
	if len(emitted) < 5 {
		t.Fatalf("found %d event types in the source, want every one: %v", len(emitted), emitted)
	}
	for typ, fields := range emitted {
		found := readme.Find(rows, typ)
		if len(found) != 1 {
			t.Errorf("README: event %s is in %d rows of the events table, want 1", typ, len(found))
			continue
		}
		for f := range fields {
			if !strings.Contains(found[0].Cells[1], "`"+f+"`") && !strings.Contains(found[0].Cells[1], "`"+f+":") {
				t.Errorf("README: event %s carries %s, which its row does not name: %s", typ, f, found[0].Line)
			}
		}
	}
	for _, r := range rows {
		for _, n := range r.Names {
			if _, ok := emitted[n]; !ok {
				t.Errorf("README documents event %s, which is never emitted: %s", n, r.Line)
			}
		}
	}
}

// emittedFields reads this package's source for the events it emits: the
// JSON name of every field set, by event type ("task.queued").
func emittedFields(t *testing.T) map[string]map[string]bool {
	t.Helper()
	jsonName := map[string]string{}
	for f := range reflect.TypeFor[events.Event]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		jsonName[f.Name] = name
	}
	constName := map[string]string{ // Go name -> the type's string
		"WorkerJoined": string(events.WorkerJoined), "WorkerDraining": string(events.WorkerDraining),
		"WorkerTimedOut": string(events.WorkerTimedOut), "WorkerLeft": string(events.WorkerLeft),
		"TaskQueued": string(events.TaskQueued), "TaskScheduled": string(events.TaskScheduled),
		"TaskAssigned": string(events.TaskAssigned), "TaskFinished": string(events.TaskFinished),
		"TaskRequeued": string(events.TaskRequeued), "TaskCanceled": string(events.TaskCanceled),
		"TaskRetried": string(events.TaskRetried),
	}
	typeOf := func(e ast.Expr) string {
		if s, ok := e.(*ast.SelectorExpr); ok {
			if x, ok := s.X.(*ast.Ident); ok && x.Name == "events" {
				return constName[s.Sel.Name]
			}
		}
		return ""
	}
	out := map[string]map[string]bool{}
	add := func(typ string, fields []string) {
		if typ == "" {
			return
		}
		if out[typ] == nil {
			out[typ] = map[string]bool{}
		}
		for _, f := range fields {
			if n := jsonName[f]; n != "" && n != "seq" && n != "time" && n != "type" {
				out[typ][n] = true
			}
		}
	}
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			vars := map[string][]string{} // ev := events.Event{...}: its fields
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CompositeLit:
					if s, ok := n.Type.(*ast.SelectorExpr); !ok || s.Sel.Name != "Event" {
						return true
					}
					var typ string
					var fields []string
					for _, e := range n.Elts {
						kv, ok := e.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						k := kv.Key.(*ast.Ident).Name
						fields = append(fields, k)
						if k == "Type" {
							typ = typeOf(kv.Value)
						}
					}
					add(typ, fields)
				case *ast.AssignStmt:
					if len(n.Lhs) == 1 && len(n.Rhs) == 1 {
						if id, ok := n.Lhs[0].(*ast.Ident); ok {
							if lit, ok := n.Rhs[0].(*ast.CompositeLit); ok {
								for _, e := range lit.Elts {
									if kv, ok := e.(*ast.KeyValueExpr); ok {
										vars[id.Name] = append(vars[id.Name], kv.Key.(*ast.Ident).Name)
									}
								}
							}
						}
					}
					// ev.Type, ev.Reason = events.TaskScheduled, "delayed"
					var typ, v string
					var fields []string
					for i, l := range n.Lhs {
						s, ok := l.(*ast.SelectorExpr)
						if !ok {
							continue
						}
						x, ok := s.X.(*ast.Ident)
						if !ok || vars[x.Name] == nil {
							continue
						}
						v = x.Name
						fields = append(fields, s.Sel.Name)
						if s.Sel.Name == "Type" && i < len(n.Rhs) {
							typ = typeOf(n.Rhs[i])
						}
					}
					if typ != "" {
						add(typ, append(fields, vars[v]...))
					}
				}
				return true
			})
		}
	}
	return out
}
