package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
)

// clientTLS builds the TLS configuration for the connection to the master
// from WORKER_TLS_*, or returns nil when TLS is off. Every file is read now,
// so a wrong path stops the worker at start with the variable's name. It
// also returns the certificates it loaded, for run to check their validity
// periods (certcheck): one outside them is logged, not refused, since the
// worker's clock may be the wrong one.
func clientTLS(c config) (*tls.Config, []certcheck.File, error) {
	switch {
	case c.TLSCA == "" && (c.TLSCert != "" || c.TLSKey != "" || c.TLSServerName != ""):
		return nil, nil, errors.New("WORKER_TLS_CA: required when WORKER_TLS_CERT, WORKER_TLS_KEY or WORKER_TLS_SERVER_NAME is set")
	case c.TLSCA == "":
		return nil, nil, nil
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return nil, nil, errors.New("WORKER_TLS_CERT and WORKER_TLS_KEY: set both to present a client certificate, or neither")
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, nil, fmt.Errorf("WORKER_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("WORKER_TLS_CA: %s holds no PEM certificate", c.TLSCA)
	}
	files := []certcheck.File{certcheck.FromPEM("WORKER_TLS_CA", c.TLSCA, true, pem)}
	cfg := &tls.Config{
		RootCAs:    pool, // the lab's CA only, not the system's
		MinVersion: tls.VersionTLS12,
		ServerName: c.TLSServerName,
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(c.MasterAddr)
	}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("WORKER_TLS_CERT, WORKER_TLS_KEY: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		files = append(files, certcheck.FromKeyPair("WORKER_TLS_CERT", c.TLSCert, cert))
	}
	return cfg, files, nil
}
