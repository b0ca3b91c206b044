// Package certtest makes throwaway certificate authorities and
// certificates for the tests of the master's and the worker's TLS, as
// `make certs` makes them (integration/cmd/certs, in a module neither can
// import).
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway CA in a temporary directory, its certificate in
// ca.pem there.
type CA struct {
	Cert *x509.Certificate
	dir  string
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago to an hour from now.
func NewCA(t *testing.T, name string) *CA {
	t.Helper()
	return NewCAValid(t, name, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// NewCAValid is NewCA valid from notBefore to notAfter.
func NewCAValid(t *testing.T, name string, notBefore, notAfter time.Time) *CA {
	t.Helper()
	cert, key := Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, nil)
	ca := &CA{dir: t.TempDir(), Cert: cert, key: key}
	writePEMFile(t, ca.Path("ca.pem"), "CERTIFICATE", cert.Raw)
	return ca
}

// Sign makes a certificate from tmpl (a random serial number if it has
// none) for a new P-256 key, signed by parent with parentKey, or by itself
// when parent is nil, and returns it with its key.
func Sign(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// Path is the path of the file name in the CA's directory.
func (ca *CA) Path(name string) string { return filepath.Join(ca.dir, name) }

// Issue writes name.pem and name-key.pem: a server certificate for
// localhost, master and 127.0.0.1, or a client certificate, signed by ca
// and valid from an hour ago to an hour from now.
func (ca *CA) Issue(t *testing.T, name string, server bool) (certPath, keyPath string) {
	t.Helper()
	return ca.IssueValid(t, name, server, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// IssueValid is Issue for a certificate valid from notBefore to notAfter.
func (ca *CA) IssueValid(t *testing.T, name string, server bool, notBefore, notAfter time.Time) (certPath, keyPath string) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost", "master"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	cert, key := Sign(t, tmpl, ca.Cert, ca.key)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = ca.Path(name+".pem"), ca.Path(name+"-key.pem")
	writePEMFile(t, certPath, "CERTIFICATE", cert.Raw)
	writePEMFile(t, keyPath, "EC PRIVATE KEY", kder)
	return certPath, keyPath
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
