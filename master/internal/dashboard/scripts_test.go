package dashboard

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestScripts runs the checks of the page's scripts in testdata/jscheck:
// each loads the real web/*.js files into node with a small DOM of its own
// (dom.js), drives them, and exits 1 with what went wrong. node is needed:
// .ci/run installs Debian's nodejs when it is missing.
func TestScripts(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed, and the dashboard's scripts are checked in it: apt-get install nodejs")
	}
	checks, err := filepath.Glob(filepath.Join("testdata", "jscheck", "*.js"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range checks {
		if filepath.Base(f) == "dom.js" { // the DOM the checks load, not a check
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(node, f).CombinedOutput()
			if err != nil {
				t.Fatalf("node %s: %v\n%s", f, err, out)
			}
		})
	}
	if n == 0 {
		t.Fatal("no checks found in testdata/jscheck")
	}
}
