package certcheck

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/certtest"
)

// now is the clock of every test here: Check takes the time it checks at.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// cert makes a certificate for cn valid from notBefore to notAfter, signed
// by parent (self-signed when parent is nil), and returns it with its key.
func cert(t *testing.T, cn string, ca bool, notBefore, notAfter time.Time, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if ca {
		tmpl.KeyUsage, tmpl.BasicConstraintsValid, tmpl.IsCA = x509.KeyUsageCertSign, true, true
	}
	return certtest.Sign(t, tmpl, parent, parentKey)
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// attr returns the value of w's attribute key as text.
func attr(w Warning, key string) string {
	for _, a := range w.Attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// A certificate presented to the peer (MASTER_TLS_CERT, WORKER_TLS_CERT):
// outside its validity period it is an error, within Soon of its end a
// warning, else nothing.
func TestCheckKeyPair(t *testing.T) {
	tests := []struct {
		name          string
		from, to      time.Time
		level         slog.Level
		msg           string // "" for no warning
		wantNotBefore string
	}{
		{"expired", now.Add(-30 * day), now.Add(-day), slog.LevelError,
			"MASTER_TLS_CERT: certificate expired (by this machine's clock): every TLS handshake will fail; replace it", "2030-05-02T12:00:00Z"},
		{"not yet valid", now.Add(day), now.Add(365 * day), slog.LevelError,
			"MASTER_TLS_CERT: certificate not valid yet (by this machine's clock): every TLS handshake will fail until its not_before; check this machine's clock, or replace it", "2030-06-02T12:00:00Z"},
		{"expires within the horizon", now.Add(-30 * day), now.Add(3 * day), slog.LevelWarn,
			"MASTER_TLS_CERT: certificate expires within 7 days: every TLS handshake will fail after its not_after; replace it before then", "2030-05-02T12:00:00Z"},
		{"expires just past the horizon", now.Add(-30 * day), now.Add(Soon + time.Minute), 0, "", ""},
		{"valid", now.Add(-30 * day), now.Add(365 * day), 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, key := cert(t, "master", false, tt.from, tt.to, nil, nil)
			f := FromKeyPair("MASTER_TLS_CERT", "/certs/master.pem", tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key})
			ws := Check(now, f)
			if tt.msg == "" {
				if len(ws) != 0 {
					t.Fatalf("warnings for a valid certificate: %+v", ws)
				}
				return
			}
			if len(ws) != 1 {
				t.Fatalf("%d warnings, want 1: %+v", len(ws), ws)
			}
			w := ws[0]
			if w.Level != tt.level || w.Msg != tt.msg {
				t.Errorf("got %v %q\nwant %v %q", w.Level, w.Msg, tt.level, tt.msg)
			}
			for k, want := range map[string]string{"file": "/certs/master.pem", "subject": "CN=master", "not_before": tt.wantNotBefore} {
				if got := attr(w, k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if got, want := attr(w, "not_after"), tt.to.UTC().Format(time.RFC3339); got != want {
				t.Errorf("not_after = %q, want %q", got, want)
			}
		})
	}
}

// Every certificate of a CA bundle is checked, each named by its subject,
// and the message says which handshakes fail: those with a certificate
// that CA signed.
func TestCheckCABundle(t *testing.T) {
	valid, _ := cert(t, "current CA", true, now.Add(-day), now.Add(365*day), nil, nil)
	old, _ := cert(t, "old CA", true, now.Add(-400*day), now.Add(-35*day), nil, nil)
	next, _ := cert(t, "next CA", true, now.Add(2*day), now.Add(400*day), nil, nil)
	ending, _ := cert(t, "ending CA", true, now.Add(-300*day), now.Add(6*day), nil, nil)
	// A key among the certificates is skipped, as x509.CertPool skips it.
	data := append(pemOf(valid, old), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("junk")})...)
	data = append(data, pemOf(next, ending)...)
	f := FromPEM("WORKER_TLS_CA", "/certs/ca.pem", true, data)
	if len(f.Certs) != 4 {
		t.Fatalf("FromPEM parsed %d certificates, want 4", len(f.Certs))
	}
	ws := Check(now, f)
	want := []struct {
		level   slog.Level
		subject string
		msg     string
	}{
		{slog.LevelError, "CN=old CA", "WORKER_TLS_CA: certificate expired (by this machine's clock): every TLS handshake with a certificate it signed will fail; replace it"},
		{slog.LevelError, "CN=next CA", "WORKER_TLS_CA: certificate not valid yet (by this machine's clock): every TLS handshake with a certificate it signed will fail until its not_before; check this machine's clock, or replace it"},
		{slog.LevelWarn, "CN=ending CA", "WORKER_TLS_CA: certificate expires within 7 days: every TLS handshake with a certificate it signed will fail after its not_after; replace it before then"},
	}
	if len(ws) != len(want) {
		t.Fatalf("%d warnings, want %d: %+v", len(ws), len(want), ws)
	}
	for i, w := range want {
		if ws[i].Level != w.level || ws[i].Msg != w.msg || attr(ws[i], "subject") != w.subject || attr(ws[i], "file") != "/certs/ca.pem" {
			t.Errorf("warning %d = %v %q subject %q file %q\nwant %v %q subject %q", i, ws[i].Level, ws[i].Msg, attr(ws[i], "subject"), attr(ws[i], "file"), w.level, w.msg, w.subject)
		}
	}
}

// The intermediates that follow the leaf in a certificate file are sent
// to the peer with it, and checked with it.
func TestCheckKeyPairChecksTheChain(t *testing.T) {
	root, rootKey := cert(t, "root", true, now.Add(-400*day), now.Add(400*day), nil, nil)
	inter, interKey := cert(t, "intermediate", true, now.Add(-400*day), now.Add(-day), root, rootKey)
	leaf, leafKey := cert(t, "master", false, now.Add(-day), now.Add(90*day), inter, interKey)
	f := FromKeyPair("MASTER_TLS_CERT", "/certs/master.pem", tls.Certificate{Certificate: [][]byte{leaf.Raw, inter.Raw}, PrivateKey: leafKey})
	ws := Check(now, f)
	if len(ws) != 1 || attr(ws[0], "subject") != "CN=intermediate" || !strings.Contains(ws[0].Msg, "expired") {
		t.Fatalf("warnings = %+v, want one about the expired intermediate", ws)
	}
}

// Log writes each warning at its level with its attributes, where any
// handler (text, JSON) shows them.
func TestLog(t *testing.T) {
	c, key := cert(t, "worker", false, now.Add(-30*day), now.Add(-time.Hour), nil, nil)
	var b bytes.Buffer
	Log(slog.New(slog.NewTextHandler(&b, nil)), Check(now, FromKeyPair("WORKER_TLS_CERT", "/certs/worker.pem", tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key})))
	got := b.String()
	for _, want := range []string{
		`level=ERROR msg="WORKER_TLS_CERT: certificate expired (by this machine's clock): every TLS handshake will fail; replace it"`,
		`file=/certs/worker.pem subject="CN=worker" not_before=2030-05-02T12:00:00Z not_after=2030-06-01T11:00:00Z`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("want one line:\n%s", got)
	}
	b.Reset()
	Log(slog.New(slog.NewTextHandler(&b, nil)), nil)
	if b.Len() != 0 {
		t.Errorf("logged without warnings:\n%s", b.String())
	}
}
