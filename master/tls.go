package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
)

// serverTLS builds the gRPC server's TLS configuration from MASTER_TLS_*,
// or returns nil when TLS is off. Errors name the variables at fault, and
// every file is read now, so a wrong path stops the master at start rather
// than at a worker's first handshake. It also returns the certificates it
// loaded, for run to check their validity periods (certcheck): one outside
// them is logged, not refused, since the master's clock may be the wrong one.
func serverTLS(c config) (*tls.Config, []certcheck.File, error) {
	switch {
	case c.TLSCert == "" && c.TLSKey == "" && c.TLSClientCA == "":
		return nil, nil, nil
	case c.TLSCert == "" || c.TLSKey == "":
		return nil, nil, errors.New("MASTER_TLS_CERT and MASTER_TLS_KEY: set both to enable TLS, or neither")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, nil, fmt.Errorf("MASTER_TLS_CERT, MASTER_TLS_KEY: %w", err)
	}
	files := []certcheck.File{certcheck.FromKeyPair("MASTER_TLS_CERT", c.TLSCert, cert)}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		// 1.2 still serves older clients; Go negotiates 1.3 whenever the
		// worker offers it.
		MinVersion: tls.VersionTLS12,
	}
	if c.TLSClientCA != "" {
		pool, pem, err := loadPool(c.TLSClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("MASTER_TLS_CLIENT_CA: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		files = append(files, certcheck.FromPEM("MASTER_TLS_CLIENT_CA", c.TLSClientCA, true, pem))
	}
	return cfg, files, nil
}

// loadPool reads PEM certificates from path into a pool of its own (never
// the system's: the lab's CA is the only one to trust), and returns the
// file's contents too.
func loadPool(path string) (*x509.CertPool, []byte, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, pem, nil
}
