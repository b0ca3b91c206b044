package main

import (
	"regexp"
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
