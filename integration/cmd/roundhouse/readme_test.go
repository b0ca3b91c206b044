package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMECommands: every command is a row of the README's Command-line
// client table, every flag a command's -h lists is named in its row (the
// global --api, --token and --json in the prose above), and the table has
// no row for a command that does not exist.
func TestREADMECommands(t *testing.T) {
	section := readme.SectionOf(t, "## Command-line client")
	rows := readme.Rows(section)
	flag := regexp.MustCompile(`(?m)^  (-[a-z-]+)`)
	known := map[string]bool{}
	for _, c := range commands {
		known[c.name] = true
		var row *readme.Row
		for i, r := range rows {
			if len(r.Names) > 0 && strings.Fields(r.Names[0])[0] == c.name {
				row = &rows[i]
			}
		}
		if row == nil {
			t.Errorf("README's Command-line client table has no row for %s", c.name)
			continue
		}
		r := cli(t, nil, c.name, "-h")
		if r.code != 0 {
			t.Fatalf("%s -h: %v", c.name, r)
		}
		for _, m := range flag.FindAllStringSubmatch(r.stderr, -1) {
			name := strings.TrimLeft(m[1], "-")
			switch name {
			case "api", "token", "json":
				if !strings.Contains(section, "`--"+name) {
					t.Errorf("README's Command-line client does not name the global flag --%s", name)
				}
				continue
			}
			// The usage's synopsis names each flag, unless it says [flags].
			if !strings.Contains(c.args, "[flags]") && !regexp.MustCompile(`\[-`+name+`[ \]]`).MatchString(c.args) {
				t.Errorf("the usage's synopsis of %s, %q, does not name its flag -%s", c.name, c.args, name)
			}
			if c.name == "run" && strings.Contains(row.Line, "the flags of `submit`") && name != "v" {
				continue
			}
			if !regexp.MustCompile("[`\\[ ]--?" + name + "[` \\]]").MatchString(row.Line) {
				t.Errorf("README's row of %s does not name its flag -%s: %s", c.name, name, row.Line)
			}
		}
	}
	for _, r := range rows {
		if name := strings.Fields(r.Names[0])[0]; !known[name] {
			t.Errorf("README's Command-line client table documents %s, which is no command: %s", name, r.Line)
		}
	}
}

// TestREADMEExitCodesAndEnvironment: every exit code main.go declares
// (the exit... constants) is in the README's Command-line client section,
// and every variable the client reads (a.getenv) is named there or in
// Configuration's line about the client.
func TestREADMEExitCodesAndEnvironment(t *testing.T) {
	section := readme.SectionOf(t, "## Command-line client")
	config := readme.SectionOf(t, "## Configuration")
	_, client, ok := strings.Cut(config, "The command-line client `roundhouse` reads")
	if !ok {
		t.Fatal("README's Configuration does not say what the command-line client reads")
	}
	fset := token.NewFileSet()
	var codes, vars int
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if !strings.HasPrefix(name.Name, "exit") || i >= len(n.Values) {
						continue
					}
					lit, ok := n.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.INT {
						continue
					}
					codes++
					if !strings.Contains(section, "`"+lit.Value+"`") {
						t.Errorf("README's Command-line client does not give exit code %s (%s)", lit.Value, name.Name)
					}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "getenv" || len(n.Args) != 1 {
					return true
				}
				if lit, ok := n.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					vars++
					v, _ := strconv.Unquote(lit.Value)
					if !strings.Contains(section, "$"+v) && !strings.Contains(section, "`"+v) || !strings.Contains(client, "`"+v+"`") {
						t.Errorf("README's Command-line client and Configuration's line about it do not both name %s, which the client reads", v)
					}
				}
			}
			return true
		})
	}
	if codes < 8 || vars < 3 {
		t.Errorf("found %d exit codes and %d variables in the client's source, want at least 8 and 3: is the test still reading it right?", codes, vars)
	}
}
