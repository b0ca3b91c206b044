package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// serverTLS builds the gRPC server's TLS configuration from MASTER_TLS_*,
// or returns nil when TLS is off. Errors name the variables at fault, and
// every file is read now, so a wrong path stops the master at start rather
// than at a worker's first handshake.
func serverTLS(c config) (*tls.Config, error) {
	switch {
	case c.TLSCert == "" && c.TLSKey == "" && c.TLSClientCA == "":
		return nil, nil
	case c.TLSCert == "" || c.TLSKey == "":
		return nil, errors.New("MASTER_TLS_CERT and MASTER_TLS_KEY: set both to enable TLS, or neither")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("MASTER_TLS_CERT, MASTER_TLS_KEY: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		// 1.2 still serves older clients; Go negotiates 1.3 whenever the
		// worker offers it.
		MinVersion: tls.VersionTLS12,
	}
	if c.TLSClientCA != "" {
		pool, err := loadPool(c.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("MASTER_TLS_CLIENT_CA: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// loadPool reads PEM certificates from path into a pool of its own (never
// the system's: the lab's CA is the only one to trust).
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
