package main

import (
	"net"
	"net/http"
	"testing"
)

// The healthcheck must ask the address the master listens on: a master told
// to serve on one address of the host (MASTER_HTTP_ADDR with a host) is
// healthy, yet `master healthcheck` asked 127.0.0.1.
func TestHealthcheckUsesTheConfiguredHost(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.2:0") // Linux routes all of 127/8 to lo
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })

	if err := healthcheck(lis.Addr().String()); err != nil {
		t.Fatalf("healthcheck(%q) = %v; want healthy", lis.Addr(), err)
	}
}
