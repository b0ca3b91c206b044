package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateMakesVerifiableChains(t *testing.T) {
	dir := t.TempDir()
	if err := generate(options{out: dir, hosts: []string{"master.lab", "10.1.2.3"}, caName: "Roundhouse lab CA", keyMode: 0o640}); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA || ca.Subject.CommonName != "Roundhouse lab CA" {
		t.Fatalf("ca.pem: IsCA=%v CN=%q", ca.IsCA, ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	master := readCert(t, filepath.Join(dir, "master.pem"))
	for _, name := range []string{"master", "localhost", "127.0.0.1", "::1", "master.lab", "10.1.2.3"} {
		if _, err := master.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("master.pem for %q: %v", name, err)
		}
	}
	if _, err := master.Verify(x509.VerifyOptions{Roots: roots, DNSName: "evil.example"}); err == nil {
		t.Error("master.pem verifies for a name it was not made for")
	}
	worker := readCert(t, filepath.Join(dir, "worker.pem"))
	if _, err := worker.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("worker.pem as a client certificate: %v", err)
	}
	if _, err := worker.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("worker.pem verifies as a server certificate")
	}

	// Each key matches its certificate and has the mode asked for.
	for _, pair := range [][2]string{{"master.pem", "master-key.pem"}, {"worker.pem", "worker-key.pem"}, {"ca.pem", "ca-key.pem"}} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])); err != nil {
			t.Errorf("%s with %s: %v", pair[0], pair[1], err)
		}
		fi, err := os.Stat(filepath.Join(dir, pair[1]))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s has mode %o, want 640", pair[1], fi.Mode().Perm())
		}
	}

	// Another CA does not vouch for this one's certificates.
	other := t.TempDir()
	if err := generate(options{out: other, caName: "another CA"}); err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(readCert(t, filepath.Join(other, "ca.pem")))
	if _, err := worker.Verify(x509.VerifyOptions{Roots: otherRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("worker.pem verifies against another CA")
	}
	if fi, _ := os.Stat(filepath.Join(other, "worker-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("default key mode %o, want 600", fi.Mode().Perm())
	}
}

func TestGenerateRefusesToReplaceACA(t *testing.T) {
	dir := t.TempDir()
	if err := generate(options{out: dir, caName: "first"}); err != nil {
		t.Fatal(err)
	}
	err := generate(options{out: dir, caName: "second"})
	if err == nil || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("second run: err = %v, want a refusal naming -force", err)
	}
	if cn := readCert(t, filepath.Join(dir, "ca.pem")).Subject.CommonName; cn != "first" {
		t.Fatalf("CA replaced without -force: CN %q", cn)
	}
	if err := generate(options{out: dir, caName: "second", force: true}); err != nil {
		t.Fatalf("with force: %v", err)
	}
	if cn := readCert(t, filepath.Join(dir, "ca.pem")).Subject.CommonName; cn != "second" {
		t.Fatalf("CA not replaced with -force: CN %q", cn)
	}
}

// -master-only adds names to the master certificate of an existing lab:
// the CA and the worker certificate stay as they were, and a second run
// with the same names leaves everything alone.
func TestReissueMasterAddsNames(t *testing.T) {
	dir := t.TempDir()
	if err := generate(options{out: dir, caName: "lab"}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ca, workerPEM := read("ca.pem"), read("worker.pem")
	first := read("master.pem")

	// The default names are there already: nothing to do.
	if issued, err := reissueMaster(options{out: dir}); err != nil || issued {
		t.Fatalf("without -hosts: issued %v, err %v; want nothing done", issued, err)
	}
	hosts := []string{"lab.example", "192.168.1.10"}
	if issued, err := reissueMaster(options{out: dir, hosts: hosts, keyMode: 0o644}); err != nil || !issued {
		t.Fatalf("with new hosts: issued %v, err %v; want a new certificate", issued, err)
	}
	if read("ca.pem") != ca || read("worker.pem") != workerPEM {
		t.Error("-master-only changed the CA or the worker certificate")
	}
	second := read("master.pem")
	if second == first {
		t.Fatal("master.pem unchanged")
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "ca.pem")))
	master := readCert(t, filepath.Join(dir, "master.pem"))
	for _, name := range append([]string{"master", "localhost", "127.0.0.1"}, hosts...) {
		if _, err := master.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("new master.pem for %q: %v", name, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "master.pem"), filepath.Join(dir, "master-key.pem")); err != nil {
		t.Errorf("new master key pair: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "master-key.pem")); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("master-key.pem has mode %o, want 644", fi.Mode().Perm())
	}

	// The same names again, in another order: nothing to do.
	if issued, err := reissueMaster(options{out: dir, hosts: []string{"192.168.1.10", "lab.example"}}); err != nil || issued {
		t.Fatalf("same hosts again: issued %v, err %v; want nothing done", issued, err)
	}
	if read("master.pem") != second {
		t.Error("master.pem rewritten although it carried every name")
	}

	// No CA, no master certificate.
	if _, err := reissueMaster(options{out: t.TempDir(), hosts: hosts}); err == nil {
		t.Error("-master-only without a CA: no error")
	}
}

// A name in -hosts that no worker can dial (a port, a scheme, brackets
// around an address) would go into the master certificate as it is, and
// a remote worker would fail its handshake, on another machine, with no
// hint that MASTER_HOSTS was at fault. Such names stop the tool, before it
// writes anything; names and addresses a worker dials pass.
func TestHostsMustBeNamesOrAddresses(t *testing.T) {
	for _, tt := range []struct {
		name string
		host string
		ok   bool
	}{
		{"DNS name", "lab.example", true},
		{"single label", "master2", true},
		{"trailing dot", "lab.example.", true},
		{"wildcard", "*.lab.example", true},
		{"IPv4", "192.168.1.10", true},
		{"IPv6", "fe80::1", true},
		{"with a port", "lab.example:50051", false},
		{"IPv4 with a port", "192.168.1.10:50051", false},
		{"URL", "https://lab.example", false},
		{"bracketed IPv6", "[fe80::1]", false},
		{"space inside", "lab example", false},
		{"empty label", "lab..example", false},
		{"wildcard inside", "lab.*.example", false},
		{"label over 63", strings.Repeat("a", 64) + ".example", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := generate(options{out: dir, hosts: []string{tt.host}})
			if tt.ok != (err == nil) {
				t.Fatalf("generate with -hosts %q: %v, want ok %v", tt.host, err, tt.ok)
			}
			if tt.ok {
				if issued, err := reissueMaster(options{out: dir, hosts: []string{tt.host}}); err != nil || issued {
					t.Fatalf("-master-only with the same %q: issued %v, err %v; want nothing to do", tt.host, issued, err)
				}
				return
			}
			if !strings.Contains(err.Error(), tt.host) {
				t.Errorf("error %q does not name %q", err, tt.host)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("generate wrote %d files despite the bad host", len(entries))
			}
			// -master-only on a lab's certificates refuses it too.
			if err := generate(options{out: dir}); err != nil {
				t.Fatal(err)
			}
			if _, err := reissueMaster(options{out: dir, hosts: []string{tt.host}}); err == nil {
				t.Errorf("-master-only with -hosts %q: no error", tt.host)
			}
		})
	}
}
