// Command certs makes a lab certificate authority and the certificates the
// master and workers need for TLS and mutual TLS, with Go's crypto/x509 alone
// (no openssl). Keys are ECDSA P-256.
//
//	go run ./integration/cmd/certs                     # into ./certs
//	go run ./integration/cmd/certs -out /tmp/c -hosts master.lab,10.0.0.5
//	go run ./integration/cmd/certs -out /tmp/other -ca-name "another CA"
//	go run ./integration/cmd/certs -master-only -hosts lab.example,192.168.1.10
//
// It writes ca.pem and ca-key.pem (the CA), master.pem and master-key.pem
// (a server certificate for master, localhost, 127.0.0.1, ::1 and -hosts),
// and worker.pem and worker-key.pem (a client certificate). An existing CA
// is never overwritten without -force: certificates it signed would stop
// working. Private keys get -key-mode (0600 by default).
//
// -master-only keeps the CA and the worker certificate and issues a new
// master certificate from the existing CA, for the default names and -hosts,
// unless master.pem already carries them all: a running lab gains the names
// its remote workers dial, and the files those workers hold (ca.pem,
// worker.pem, worker-key.pem) stay valid.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type options struct {
	out      string
	hosts    []string // extra names and addresses for the master certificate
	caName   string
	force    bool
	keyMode  fs.FileMode
	validFor time.Duration
	// masterOnly: reissue master.pem from the CA in out (see the doc).
	masterOnly bool
}

func main() {
	o := options{}
	var hosts, keyMode string
	flag.StringVar(&o.out, "out", "certs", "directory to write into")
	flag.StringVar(&hosts, "hosts", "", "extra comma-separated DNS names or IP addresses for the master certificate")
	flag.StringVar(&o.caName, "ca-name", "Roundhouse lab CA", "common name of the CA")
	flag.BoolVar(&o.force, "force", false, "replace an existing CA (every certificate it signed stops being trusted)")
	flag.BoolVar(&o.masterOnly, "master-only", false, "keep the CA and worker certificate; reissue master.pem from the CA in -out unless it already carries the default names and -hosts")
	flag.StringVar(&keyMode, "key-mode", "0600", "octal file mode of the private keys")
	flag.DurationVar(&o.validFor, "valid-for", 365*24*time.Hour, "how long the certificates are valid")
	flag.Parse()

	m, err := strconv.ParseUint(keyMode, 8, 32)
	if err != nil || m > 0o777 {
		fmt.Fprintf(os.Stderr, "certs: -key-mode %q is not an octal file mode such as 0600\n", keyMode)
		os.Exit(2)
	}
	o.keyMode = fs.FileMode(m)
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.hosts = append(o.hosts, h)
		}
	}
	if o.masterOnly {
		names := strings.Join(append(append([]string(nil), defaultHosts...), o.hosts...), ", ")
		switch issued, err := reissueMaster(o); {
		case err != nil:
			fmt.Fprintln(os.Stderr, "certs:", err)
			os.Exit(1)
		case issued:
			fmt.Printf("wrote a new master.pem and master-key.pem to %s for %s (the CA and worker certificate are unchanged): restart the master to use them\n", o.out, names)
		default:
			fmt.Printf("%s/master.pem already carries %s: nothing to do\n", o.out, names)
		}
		return
	}
	if err := generate(o); err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote ca.pem, master.pem, worker.pem and their keys to %s\n", o.out)
}

// defaultHosts are the master's names in the lab (the compose service) and
// on the host.
var defaultHosts = []string{"master", "localhost", "127.0.0.1", "::1"}

// dnsName is a DNS name a worker may dial (WORKER_MASTER_ADDR's host or
// WORKER_TLS_SERVER_NAME), optionally a wildcard "*." in front and a dot
// at the end: labels of 1-63 letters, digits, '-' and '_'.
var dnsName = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$`)

// checkHosts refuses a name in -hosts that no worker could match, such as
// "lab.example:50051" or "[fe80::1]": it would go into the master
// certificate as it is, and the worker it was meant for would fail its
// handshake, on another machine, without a word about -hosts.
func checkHosts(hosts []string) error {
	for _, h := range hosts {
		if net.ParseIP(h) == nil && (len(h) > 253 || !dnsName.MatchString(h)) {
			return fmt.Errorf("-hosts: %q is neither a DNS name nor an IP address (no port, scheme or brackets: lab.example, 192.168.1.10, fe80::1)", h)
		}
	}
	return nil
}

// generate writes the CA and both certificates into o.out.
func generate(o options) error {
	if err := checkHosts(o.hosts); err != nil {
		return err
	}
	if o.validFor <= 0 {
		o.validFor = 365 * 24 * time.Hour
	}
	if o.keyMode == 0 {
		o.keyMode = 0o600
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	caPath := filepath.Join(o.out, "ca.pem")
	if _, err := os.Stat(caPath); err == nil && !o.force {
		return fmt.Errorf("%s exists; pass -force to replace the CA (certificates it signed stop being trusted)", caPath)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	now := time.Now()
	notBefore := now.Add(-time.Hour) // tolerate clocks a little behind
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: o.caName, Organization: []string{"Roundhouse lab"}},
		NotBefore:             notBefore,
		NotAfter:              now.Add(o.validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaf certificates only
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}

	masterKey, masterDER, err := issueMaster(o, caCert, caKey, notBefore, now)
	if err != nil {
		return err
	}

	workerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	workerDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "worker", Organization: []string{"Roundhouse lab"}},
		NotBefore:   notBefore,
		NotAfter:    now.Add(o.validFor),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &workerKey.PublicKey, caKey)
	if err != nil {
		return err
	}

	// Keys first, the CA certificate last: an interrupted run leaves no
	// ca.pem behind, so running again needs no -force.
	for _, f := range []struct {
		name string
		key  *ecdsa.PrivateKey
	}{{"ca-key.pem", caKey}, {"master-key.pem", masterKey}, {"worker-key.pem", workerKey}} {
		der, err := x509.MarshalECPrivateKey(f.key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(o.out, f.name), "EC PRIVATE KEY", der, o.keyMode); err != nil {
			return err
		}
	}
	if err := writePEM(filepath.Join(o.out, "master.pem"), "CERTIFICATE", masterDER, 0o644); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(o.out, "worker.pem"), "CERTIFICATE", workerDER, 0o644); err != nil {
		return err
	}
	return writePEM(caPath, "CERTIFICATE", caDER, 0o644)
}

// issueMaster makes a master key and a server certificate for the default
// names and o.hosts, signed by the CA.
func issueMaster(o options, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, notBefore, now time.Time) (*ecdsa.PrivateKey, []byte, error) {
	dns, ips := splitHosts(append(append([]string(nil), defaultHosts...), o.hosts...))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "master", Organization: []string{"Roundhouse lab"}},
		NotBefore:   notBefore,
		NotAfter:    now.Add(o.validFor),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns,
		IPAddresses: ips,
	}, caCert, &key.PublicKey, caKey)
	return key, der, err
}

// reissueMaster writes a new master certificate and key into o.out, signed
// by the CA there, unless the master certificate there already verifies
// against that CA for every default name and o.hosts. It reports whether it
// wrote them.
func reissueMaster(o options) (bool, error) {
	if err := checkHosts(o.hosts); err != nil {
		return false, err
	}
	if o.validFor <= 0 {
		o.validFor = 365 * 24 * time.Hour
	}
	if o.keyMode == 0 {
		o.keyMode = 0o600
	}
	caCert, err := readPEMCert(filepath.Join(o.out, "ca.pem"))
	if err != nil {
		return false, fmt.Errorf("-master-only needs the CA: %w", err)
	}
	if current, err := readPEMCert(filepath.Join(o.out, "master.pem")); err == nil && carries(current, caCert, append(append([]string(nil), defaultHosts...), o.hosts...)) {
		return false, nil
	}
	b, err := os.ReadFile(filepath.Join(o.out, "ca-key.pem"))
	if err != nil {
		return false, fmt.Errorf("-master-only needs the CA key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return false, fmt.Errorf("%s: no EC PRIVATE KEY", filepath.Join(o.out, "ca-key.pem"))
	}
	caKey, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(o.out, "ca-key.pem"), err)
	}
	now := time.Now()
	key, der, err := issueMaster(o, caCert, caKey, now.Add(-time.Hour), now)
	if err != nil {
		return false, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return false, err
	}
	// The key first: a master restarted between the two writes fails to
	// load a mismatched pair and says so, rather than serving a stale one.
	if err := writePEM(filepath.Join(o.out, "master-key.pem"), "EC PRIVATE KEY", keyDER, o.keyMode); err != nil {
		return false, err
	}
	return true, writePEM(filepath.Join(o.out, "master.pem"), "CERTIFICATE", der, 0o644)
}

// carries reports whether cert is a server certificate of ca valid now for
// every one of hosts.
func carries(cert, ca *x509.Certificate, hosts []string) bool {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, h := range hosts {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return false
		}
	}
	return true
}

// readPEMCert reads the first certificate of a PEM file.
func readPEMCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

// sign makes a certificate from tmpl with a random serial number, signed by
// parent's key.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// writePEM replaces path with one PEM block, with the given mode whatever
// the umask (a key must not end up readable by all).
func writePEM(path, typ string, der []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	err = pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
