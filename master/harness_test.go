package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testMaster is a whole master, wired by serve as main wires it, on
// loopback listeners and a temporary database.
type testMaster struct {
	cfg      config
	grpcAddr string
	httpURL  string
	log      *syncBuffer
	stop     func() // stops serve and waits for it; the test's end calls it too
}

// syncBuffer collects the master's log; the servers' goroutines write to it.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMaster runs serve with env (on top of a temporary MASTER_DB_PATH)
// until the test ends, logging to m.log, and returns once /readyz answers
// 200. It fails the test if serve returns an error.
func startMaster(t *testing.T, env map[string]string) *testMaster {
	t.Helper()
	buf := &syncBuffer{}
	m := startMasterLogging(t, env, slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	m.log = buf
	return m
}

// startMasterLogging is startMaster with the logger log; m.log is nil.
func startMasterLogging(t *testing.T, env map[string]string, log *slog.Logger) *testMaster {
	t.Helper()
	e := map[string]string{"MASTER_DB_PATH": filepath.Join(t.TempDir(), "rh.db"), "LOG_LEVEL": "debug"}
	for k, v := range env {
		e[k] = v
	}
	cfg, err := loadConfig(e)
	if err != nil {
		t.Fatal(err)
	}
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &testMaster{cfg: cfg, grpcAddr: grpcLis.Addr().String(), httpURL: "http://" + httpLis.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, log, grpcLis, httpLis) }()
	m.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(func() {
		m.stop()
		if t.Failed() && m.log != nil {
			t.Logf("master log:\n%s", m.log.String())
		}
	})
	// A timeout per probe, so that a master that never answers fails the
	// test at the deadline rather than hanging it.
	probe := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := probe.Get(m.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// request sends one HTTP request to the master, with the bearer token tok
// unless it is empty, and returns the status, headers and body.
func (m *testMaster) request(t *testing.T, method, path, tok string, body io.Reader, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, m.httpURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = strings.SplitN(path, "?", 2)[0] // the path exactly as written
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header[k] = []string{v}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
