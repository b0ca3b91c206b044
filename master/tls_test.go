package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/roundhouse-lab/roundhouse/proto/certtest"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// register opens a worker stream with the given credentials and returns
// the error of its first message (nil: welcomed).
func register(t *testing.T, addr string, creds credentials.TransportCredentials, token, id string) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	stream, err := pb.NewNodeServiceClient(cc).AssignTask(ctx, &pb.RegisterRequest{WorkerId: id, InstanceId: id + "-i", Slots: 1})
	if err != nil {
		return err
	}
	m, err := stream.Recv()
	if err == nil && m.GetWelcome() == nil {
		t.Fatalf("first message %v, want a welcome", m)
	}
	return err
}

func clientCreds(t *testing.T, ca *certtest.CA, certPath, keyPath string) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if certPath != "" {
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return credentials.NewTLS(cfg)
}

func TestMutualTLS(t *testing.T) {
	ca := certtest.NewCA(t, "lab CA")
	other := certtest.NewCA(t, "another CA")
	srvCert, srvKey := ca.Issue(t, "master", true)
	goodCert, goodKey := ca.Issue(t, "worker", false)
	badCert, badKey := other.Issue(t, "impostor", false)
	m := startMaster(t, map[string]string{
		"MASTER_TLS_CERT": srvCert, "MASTER_TLS_KEY": srvKey, "MASTER_TLS_CLIENT_CA": ca.Path("ca.pem"),
	})

	tests := []struct {
		name    string
		creds   credentials.TransportCredentials
		wantErr string // "" to be welcomed; else a part of the error, which for a refusal
		// by the master depends on when TLS 1.3 notices it, so any refusal goes
	}{
		{"certificate from the lab CA", clientCreds(t, ca, goodCert, goodKey), ""},
		{"certificate from another CA", clientCreds(t, ca, badCert, badKey), "Unavailable"},
		{"no client certificate", clientCreds(t, ca, "", ""), "Unavailable"},
		{"plaintext", insecure.NewCredentials(), "Unavailable"},
		{"master not trusted by the worker", clientCreds(t, other, badCert, badKey), "certificate signed by unknown authority"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := register(t, m.grpcAddr, tt.creds, "", "w"+string(rune('a'+i)))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a refusal mentioning %q", err, tt.wantErr)
			}
		})
	}
	// Only the worker with the lab's certificate ever joined.
	if strings.Count(m.log.String(), "worker joined") != 1 {
		t.Errorf("want exactly one worker joined:\n%s", m.log.String())
	}
}

// TLS without MASTER_TLS_CLIENT_CA: encryption and the master's identity,
// no client certificates; the worker token still applies.
func TestTLSWithWorkerToken(t *testing.T) {
	ca := certtest.NewCA(t, "lab CA")
	srvCert, srvKey := ca.Issue(t, "master", true)
	const tok = "worker-token-0123456789abcdef"
	m := startMaster(t, map[string]string{"MASTER_TLS_CERT": srvCert, "MASTER_TLS_KEY": srvKey, "MASTER_WORKER_TOKEN": tok})
	if err := register(t, m.grpcAddr, clientCreds(t, ca, "", ""), tok, "w1"); err != nil {
		t.Fatalf("TLS with the token: %v", err)
	}
	if err := register(t, m.grpcAddr, clientCreds(t, ca, "", ""), "", "w2"); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("TLS without the token: %v, want Unauthenticated", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := certtest.NewCA(t, "lab CA")
	cert, key := ca.Issue(t, "master", true)
	notPEM := ca.Path("junk.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"cert without key", map[string]string{"MASTER_TLS_CERT": cert}, "MASTER_TLS_CERT and MASTER_TLS_KEY"},
		{"key without cert", map[string]string{"MASTER_TLS_KEY": key}, "MASTER_TLS_CERT and MASTER_TLS_KEY"},
		{"client CA without cert", map[string]string{"MASTER_TLS_CLIENT_CA": ca.Path("ca.pem")}, "MASTER_TLS_CERT and MASTER_TLS_KEY"},
		{"missing cert file", map[string]string{"MASTER_TLS_CERT": ca.Path("nope.pem"), "MASTER_TLS_KEY": key}, "MASTER_TLS_CERT, MASTER_TLS_KEY"},
		{"key of another cert", map[string]string{"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": ca.Path("nope-key.pem")}, "MASTER_TLS_KEY"},
		{"client CA missing", map[string]string{"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": key, "MASTER_TLS_CLIENT_CA": ca.Path("nope.pem")}, "MASTER_TLS_CLIENT_CA"},
		{"client CA not PEM", map[string]string{"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": key, "MASTER_TLS_CLIENT_CA": notPEM}, "MASTER_TLS_CLIENT_CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
	c, err := loadConfig(map[string]string{"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": key})
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := serverTLS(c)
	if err != nil || tc.MinVersion != tls.VersionTLS12 || tc.ClientAuth != tls.NoClientCert {
		t.Fatalf("serverTLS = %+v, %v", tc, err)
	}
}

// A certificate outside its validity period does not stop the master (its
// clock may be the wrong one), but the start-up log says which, and that
// handshakes will fail; one that ends within 7 days is warned of.
func TestStartupLogsCertificatesOutsideTheirValidity(t *testing.T) {
	day := 24 * time.Hour
	ca := certtest.NewCAValid(t, "lab CA", time.Now().Add(-day), time.Now().Add(3*day))
	cert, key := ca.IssueValid(t, "master", true, time.Now().Add(-30*day), time.Now().Add(-day))
	cfg, err := loadConfig(map[string]string{
		"MASTER_GRPC_ADDR": "127.0.0.1:0", "MASTER_HTTP_ADDR": "127.0.0.1:0",
		"MASTER_DB_PATH":  filepath.Join(t.TempDir(), "rh.db"),
		"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": key, "MASTER_TLS_CLIENT_CA": ca.Path("ca.pem"),
	})
	if err != nil {
		t.Fatalf("an expired certificate must not stop the master: %v", err)
	}
	var logged syncBuffer
	runUntilReady(t, cfg, &logged)
	l := logged.String()
	for _, want := range []string{
		`level=ERROR msg="MASTER_TLS_CERT: certificate expired (by this machine's clock): every TLS handshake will fail; replace it" file=` + cert + ` subject="CN=master"`,
		`level=WARN msg="MASTER_TLS_CLIENT_CA: certificate expires within 7 days: every TLS handshake with a certificate it signed will fail after its not_after; replace it before then" file=` + ca.Path("ca.pem") + ` subject="CN=lab CA"`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("start-up log lacks %s:\n%s", want, l)
		}
	}

	// Certificates well within their validity: not a word.
	good := certtest.NewCAValid(t, "lab CA", time.Now().Add(-day), time.Now().Add(365*day))
	cert, key = good.IssueValid(t, "master", true, time.Now().Add(-day), time.Now().Add(90*day))
	cfg, err = loadConfig(map[string]string{
		"MASTER_GRPC_ADDR": "127.0.0.1:0", "MASTER_HTTP_ADDR": "127.0.0.1:0",
		"MASTER_DB_PATH":  filepath.Join(t.TempDir(), "rh.db"),
		"MASTER_TLS_CERT": cert, "MASTER_TLS_KEY": key, "MASTER_TLS_CLIENT_CA": good.Path("ca.pem"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var logged2 syncBuffer
	runUntilReady(t, cfg, &logged2)
	if l := logged2.String(); strings.Contains(l, `msg="MASTER_TLS_`) {
		t.Errorf("start-up log with valid certificates warns of one:\n%s", l)
	}
}
