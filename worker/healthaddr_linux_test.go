package main

import (
	"net"
	"net/http"
	"testing"
)

// The healthcheck must ask the address the worker listens on: a worker
// told to serve /healthz on one address of the host (WORKER_HEALTH_ADDR
// with a host) is healthy, yet `worker healthcheck` asked 127.0.0.1.
func TestHealthcheckUsesTheConfiguredHost(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.2:0") // Linux routes all of 127/8 to lo
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: healthHandler(func() bool { return true }, func() bool { return true }, "w1")}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })

	if err := healthcheck(lis.Addr().String(), "/healthz"); err != nil {
		t.Fatalf("healthcheck(%q) = %v; want healthy, the worker is registered and serving there", lis.Addr(), err)
	}
}
