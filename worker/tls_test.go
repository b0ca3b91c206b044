package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/roundhouse-lab/roundhouse/proto/certtest"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/worker/internal/agent"
)

// welcomer is a master that welcomes every worker and sends nothing else.
type welcomer struct {
	pb.UnimplementedNodeServiceServer
	joined chan string // worker IDs
}

func (w *welcomer) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	w.joined <- req.GetWorkerId()
	if err := stream.Send(&pb.Assignment{Kind: &pb.Assignment_Welcome{Welcome: &pb.Welcome{}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (w *welcomer) Heartbeat(context.Context, *pb.HeartbeatRequest) (*pb.HeartbeatAck, error) {
	return &pb.HeartbeatAck{Known: true}, nil
}

// serveMTLS serves a welcomer that requires client certificates from ca.
func serveMTLS(t *testing.T, ca *certtest.CA) (string, *welcomer) {
	t.Helper()
	certPath, keyPath := ca.Issue(t, "master", true)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})))
	w := &welcomer{joined: make(chan string, 10)}
	pb.RegisterNodeServiceServer(gs, w)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String(), w
}

// The worker's TLS settings, from the environment to a registered agent.
func TestAgentOverMutualTLS(t *testing.T) {
	ca := certtest.NewCA(t, "lab CA")
	addr, w := serveMTLS(t, ca)
	_, port, _ := net.SplitHostPort(addr)
	cert, key := ca.Issue(t, "worker", false)
	cfg, err := loadConfig(map[string]string{
		"WORKER_MASTER_ADDR": "localhost:" + port, "WORKER_ID": "w1",
		"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key,
	})
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := clientTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tc.ServerName != "localhost" || tc.MinVersion != tls.VersionTLS12 || len(tc.Certificates) != 1 {
		t.Fatalf("clientTLS = server name %q, min version %x, %d certificates", tc.ServerName, tc.MinVersion, len(tc.Certificates))
	}
	a := agent.New(agent.Config{MasterAddr: cfg.MasterAddr, WorkerID: "w1", Slots: 1, MaxOutput: 10, ReconnectMax: 200 * time.Millisecond, TLS: tc},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case id := <-w.joined:
		if id != "w1" {
			t.Fatalf("joined as %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never registered over mutual TLS")
	}
}

func TestClientTLSConfigErrors(t *testing.T) {
	ca := certtest.NewCA(t, "lab CA")
	cert, key := ca.Issue(t, "worker", false)
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"cert without CA", map[string]string{"WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key}, "WORKER_TLS_CA: required"},
		{"server name without CA", map[string]string{"WORKER_TLS_SERVER_NAME": "master"}, "WORKER_TLS_CA: required"},
		{"cert without key", map[string]string{"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": cert}, "WORKER_TLS_CERT and WORKER_TLS_KEY"},
		{"missing CA file", map[string]string{"WORKER_TLS_CA": ca.Path("nope.pem")}, "WORKER_TLS_CA"},
		{"CA file not PEM", map[string]string{"WORKER_TLS_CA": key}, "WORKER_TLS_CA"},
		{"key does not match", map[string]string{"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": ca.Path("ca.pem"), "WORKER_TLS_KEY": key}, "WORKER_TLS_CERT, WORKER_TLS_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	c, err := loadConfig(map[string]string{"WORKER_MASTER_ADDR": "master:50051", "WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_SERVER_NAME": "master.lab"})
	if err != nil {
		t.Fatal(err)
	}
	if tc, _, err := clientTLS(c); err != nil || tc.ServerName != "master.lab" || len(tc.Certificates) != 0 {
		t.Fatalf("clientTLS with a server name = %+v, %v", tc, err)
	}
}

// A worker that trusts another CA than the master's says which settings to
// check, and never registers.
func TestAgentRefusesMasterFromAnotherCA(t *testing.T) {
	ca, other := certtest.NewCA(t, "lab CA"), certtest.NewCA(t, "another CA")
	addr, w := serveMTLS(t, ca)
	cert, key := other.Issue(t, "worker", false)
	cfg, err := loadConfig(map[string]string{"WORKER_MASTER_ADDR": addr, "WORKER_ID": "w1", "WORKER_TLS_SERVER_NAME": "localhost",
		"WORKER_TLS_CA": other.Path("ca.pem"), "WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key})
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := clientTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged syncLog
	a := agent.New(agent.Config{MasterAddr: addr, WorkerID: "w1", Slots: 1, MaxOutput: 10, ReconnectMax: 200 * time.Millisecond, TLS: tc},
		slog.New(slog.NewTextHandler(&logged, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logged.String(), "TLS handshake with the master failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no clear log line about the failed handshake:\n%s", logged.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if a.Registered() || len(w.joined) != 0 {
		t.Fatal("registered with a master it cannot verify")
	}
}

// syncLog is a log destination safe for the agent's goroutines.
type syncLog struct {
	mu sync.Mutex // protects b
	b  strings.Builder
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A plaintext worker against a TLS master gets a hint at the fix.
func TestPlaintextAgentAgainstTLSMasterIsHinted(t *testing.T) {
	addr, w := serveMTLS(t, certtest.NewCA(t, "lab CA"))
	var logged syncLog
	a := agent.New(agent.Config{MasterAddr: addr, WorkerID: "w1", Slots: 1, MaxOutput: 10, ReconnectMax: 200 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logged, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logged.String(), "if it uses TLS (MASTER_TLS_CERT), set WORKER_TLS_CA") {
		if time.Now().After(deadline) {
			t.Fatalf("no hint about TLS:\n%s", logged.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if len(w.joined) != 0 {
		t.Fatal("a plaintext worker registered with a TLS master")
	}
}

// A certificate outside its validity period does not stop the worker (its
// clock may be the wrong one), but the start-up log says which, and that
// handshakes will fail; one that ends within 7 days is warned of.
func TestStartupLogsCertificatesOutsideTheirValidity(t *testing.T) {
	day := 24 * time.Hour
	ca := certtest.NewCAValid(t, "lab CA", time.Now().Add(-60*day), time.Now().Add(-2*day))
	cert, key := ca.IssueValid(t, "worker", false, time.Now().Add(2*day), time.Now().Add(365*day))
	l := startupLog(t, map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1",
		"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key})
	for _, want := range []string{
		`level=ERROR msg="WORKER_TLS_CA: certificate expired (by this machine's clock): every TLS handshake with a certificate it signed will fail; replace it" file=` + ca.Path("ca.pem") + ` subject="CN=lab CA"`,
		`level=ERROR msg="WORKER_TLS_CERT: certificate not valid yet (by this machine's clock): every TLS handshake will fail until its not_before; check this machine's clock, or replace it" file=` + cert + ` subject="CN=worker"`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("start-up log lacks %s:\n%s", want, l)
		}
	}

	// Ending within 7 days: a warning.
	ca = certtest.NewCAValid(t, "lab CA", time.Now().Add(-day), time.Now().Add(365*day))
	cert, key = ca.IssueValid(t, "worker", false, time.Now().Add(-day), time.Now().Add(5*day))
	l = startupLog(t, map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1",
		"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key})
	if want := `level=WARN msg="WORKER_TLS_CERT: certificate expires within 7 days: every TLS handshake will fail after its not_after; replace it before then" file=` + cert; !strings.Contains(l, want) {
		t.Errorf("start-up log lacks %s:\n%s", want, l)
	}
	if strings.Contains(l, `msg="WORKER_TLS_CA`) {
		t.Errorf("start-up log warns of a valid CA:\n%s", l)
	}

	// Both well within their validity: not a word.
	cert, key = ca.IssueValid(t, "worker", false, time.Now().Add(-day), time.Now().Add(90*day))
	l = startupLog(t, map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1",
		"WORKER_TLS_CA": ca.Path("ca.pem"), "WORKER_TLS_CERT": cert, "WORKER_TLS_KEY": key})
	if strings.Contains(l, `msg="WORKER_TLS_`) {
		t.Errorf("start-up log with valid certificates warns of one:\n%s", l)
	}
}
