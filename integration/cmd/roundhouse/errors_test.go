package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrors: each mistake a user makes gets one clear sentence and the
// documented exit code, against a real master.
func TestErrors(t *testing.T) {
	cl := startCluster(t, 1)
	down := "http://" + freeAddr(t) // nothing listens there any more
	tests := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr []string
	}{
		{"wrong token", []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN=wrong"}, []string{"workers"}, exitError,
			[]string{"roundhouse: the master refused the API token: set MASTER_API_TOKEN"}},
		{"no token", []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN="}, []string{"ls"}, exitError,
			[]string{"wants an API token and none was given: set MASTER_API_TOKEN"}},
		{"--token beats the environment", []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN=wrong"}, []string{"--token", testToken, "get", "nope"}, exitError,
			[]string{"roundhouse: no task nope on the master at " + cl.api}},
		{"master down", []string{"ROUNDHOUSE_API=" + down, "MASTER_API_TOKEN=" + testToken}, []string{"ls"}, exitError,
			[]string{"roundhouse: cannot reach the master at " + down + ": is it running? (make up)"}},
		{"master down, run", []string{"MASTER_API_TOKEN=" + testToken}, []string{"--api", down, "run", "--", "true"}, exitError,
			[]string{"cannot reach the master at " + down + ": is it running?"}},
		{"unknown task", cl.env(), []string{"get", "0195b5d2-0000-7000-8000-000000000000"}, exitError,
			[]string{"roundhouse: no task 0195b5d2-0000-7000-8000-000000000000 on the master"}},
		{"unknown task, cancel", cl.env(), []string{"cancel", "missing"}, exitError, []string{"no task missing"}},
		{"unknown task, logs -f", cl.env(), []string{"logs", "-f", "missing"}, exitError, []string{"no task missing"}},
		{"bad flag", cl.env(), []string{"ls", "--bogus"}, exitUsage,
			[]string{"flag provided but not defined: -bogus", "usage: roundhouse ls [flags]", "-status"}},
		{"bad flag value", cl.env(), []string{"ls", "--limit", "many"}, exitUsage, []string{`invalid value "many" for flag -limit`}},
		// 0 was left out of the request, so the master's default (100)
		// listed 100 tasks with exit 0; the flag left out means that.
		{"--limit 0", cl.env(), []string{"ls", "--limit", "0"}, exitUsage, []string{"--limit 0 is not from 1 to 1000", "usage: roundhouse ls"}},
		{"negative --limit", cl.env(), []string{"ls", "--limit", "-5"}, exitUsage, []string{"--limit -5 is not from 1 to 1000"}},
		{"--limit too big", cl.env(), []string{"ls", "--all", "--limit", "1001"}, exitUsage, []string{"--limit 1001 is not from 1 to 1000"}},
		{"bad status, the master's word", cl.env(), []string{"ls", "--status", "done"}, exitError, []string{`unknown status "done"`}},
		{"unknown command", cl.env(), []string{"frobnicate"}, exitUsage, []string{`unknown command "frobnicate"`, "commands:"}},
		{"no command", cl.env(), nil, exitUsage, []string{"usage: roundhouse"}},
		{"missing ID", cl.env(), []string{"get"}, exitUsage, []string{"roundhouse get: missing argument", "usage: roundhouse get ID"}},
		{"two IDs", cl.env(), []string{"wait", "a", "b"}, exitUsage, []string{`roundhouse wait: unexpected argument "b"`}},
		{"no command line", cl.env(), []string{"run", "--"}, exitUsage, []string{"no command given", "usage: roundhouse run"}},
		{"bad --run-at", cl.env(), []string{"submit", "--run-at", "tomorrow", "true"}, exitUsage, []string{`--run-at "tomorrow" is not an RFC 3339 time`}},
		{"bad --requires", cl.env(), []string{"submit", "--requires", "gpu", "true"}, exitUsage, []string{"want key=value"}},
		{"bad --api", cl.env(), []string{"--api", "localhost:9092", "ls"}, exitUsage, []string{"is not an http:// or https:// URL"}},
		{"bad --since", cl.env(), []string{"events", "--since", "yesterday"}, exitUsage, []string{`--since "yesterday" is not an event's seq`, "usage: roundhouse events"}},
		{"the master refuses a field", cl.env(), []string{"submit", "--priority", "9", "true"}, exitError,
			[]string{"roundhouse: the master answered 400 Bad Request: invalid request: field \"priority\" must be from 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, tt.env, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d", r.code, tt.code)
			}
			for _, w := range tt.stderr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if r.stdout != "" || t.Failed() {
				t.Errorf("%v", r)
			}
		})
	}
}

// TestTokenFromDotEnv: without MASTER_API_TOKEN in the environment the CLI
// reads it from ./.env, as the Makefile does; set in the environment, even
// empty, it wins over the file.
func TestTokenFromDotEnv(t *testing.T) {
	cl := startCluster(t, 1)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("MASTER_WORKER_TOKEN=x\nMASTER_API_TOKEN="+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if r := cli(t, []string{"ROUNDHOUSE_API=" + cl.api}, "workers"); r.code != 0 || !strings.Contains(r.stdout, "w1") {
		t.Fatalf("token from .env: %v", r)
	}
	if r := cli(t, []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN="}, "workers"); r.code != exitError || !strings.Contains(r.stderr, "wants an API token") {
		t.Fatalf("MASTER_API_TOKEN set empty: want no token sent: %v", r)
	}
	if r := cli(t, []string{"ROUNDHOUSE_API=" + cl.api}, "help"); r.code != 0 || strings.Contains(r.stdout+r.stderr, testToken) {
		t.Fatalf("help shows the token: %v", r)
	}
	if r := cli(t, []string{"ROUNDHOUSE_API=" + cl.api}, "ls", "-h"); r.code != 0 || strings.Contains(r.stdout+r.stderr, testToken) {
		t.Fatalf("ls -h shows the token: %v", r)
	}
}
