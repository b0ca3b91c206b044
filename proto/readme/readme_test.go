package readme

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestLabVariablesDocumented: every variable the lab's compose files read
// (${NAME...}) and every one the Makefile lets the caller set (NAME ?=) is
// named in README, so a knob added to the lab is not one only its author
// knows. (The programs' own variables are held to the Configuration tables
// by the master's and the worker's TestREADMEConfiguration.)
func TestLabVariablesDocumented(t *testing.T) {
	root, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"compose.yaml", "Makefile"}
	yamls, err := filepath.Glob(filepath.Join(root, "docker", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, y := range yamls {
		rel, _ := filepath.Rel(root, y)
		files = append(files, rel)
	}
	yamlVar := regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)`)
	makeVar := regexp.MustCompile(`(?m)^(?:export )?([A-Z][A-Z0-9_]*) \?=`)
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		re := yamlVar
		if f == "Makefile" {
			re = makeVar
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			n++
			if !regexp.MustCompile(`\b` + m[1] + `\b`).MatchString(doc) {
				t.Errorf("%s reads %s, which README does not name", f, m[1])
			}
		}
	}
	if n == 0 {
		t.Error("found no variable in compose.yaml, docker/*.yaml or the Makefile: is the pattern still right?")
	}
}
