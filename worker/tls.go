package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// clientTLS builds the TLS configuration for the connection to the master
// from WORKER_TLS_*, or returns nil when TLS is off. Every file is read now,
// so a wrong path stops the worker at start with the variable's name.
func clientTLS(c config) (*tls.Config, error) {
	switch {
	case c.TLSCA == "" && (c.TLSCert != "" || c.TLSKey != "" || c.TLSServerName != ""):
		return nil, errors.New("WORKER_TLS_CA: required when WORKER_TLS_CERT, WORKER_TLS_KEY or WORKER_TLS_SERVER_NAME is set")
	case c.TLSCA == "":
		return nil, nil
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return nil, errors.New("WORKER_TLS_CERT and WORKER_TLS_KEY: set both to present a client certificate, or neither")
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("WORKER_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("WORKER_TLS_CA: %s holds no PEM certificate", c.TLSCA)
	}
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
			return nil, fmt.Errorf("WORKER_TLS_CERT, WORKER_TLS_KEY: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
