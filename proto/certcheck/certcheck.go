// Package certcheck checks, at start, the validity periods of the TLS
// certificates the master and a worker load (MASTER_TLS_*, WORKER_TLS_*).
//
// Neither refuses to start over a certificate outside its validity period:
// the period is read on this machine's clock, and a wrong clock must not
// stop a lab that would otherwise work. The check only logs, next to the
// start, which file and certificate is at fault and that handshakes will
// fail, so the terse handshake errors that follow have a cause in the log.
package certcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"time"
)

// Soon is how long before its end a certificate is warned of.
const Soon = 7 * 24 * time.Hour

// soonText is Soon as the messages say it.
const soonText = "7 days"

// File is the certificates of one file a process loaded for TLS.
type File struct {
	Var  string // the variable naming the file, such as MASTER_TLS_CERT
	Path string
	// CA: a bundle the peer's certificate must chain to, rather than a
	// certificate (with its intermediates) presented to the peer.
	CA    bool
	Certs []*x509.Certificate
}

// FromKeyPair is the File of a certificate loaded with its key
// (tls.LoadX509KeyPair): the leaf and the intermediates after it, which
// are all sent to the peer. One that does not parse is left out.
func FromKeyPair(variable, path string, cert tls.Certificate) File {
	f := File{Var: variable, Path: path}
	for _, der := range cert.Certificate {
		if c, err := x509.ParseCertificate(der); err == nil {
			f.Certs = append(f.Certs, c)
		}
	}
	return f
}

// FromPEM is the File of the PEM certificates in data, taken as
// x509.CertPool.AppendCertsFromPEM takes them: blocks of another type, or
// that do not parse, are left out.
func FromPEM(variable, path string, ca bool, data []byte) File {
	f := File{Var: variable, Path: path, CA: ca}
	for len(data) > 0 {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || len(b.Headers) != 0 {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			f.Certs = append(f.Certs, c)
		}
	}
	return f
}

// Warning is what Check says of one certificate: Msg names the variable
// and what fails; Attrs are file, subject, not_before and not_after (UTC,
// RFC 3339).
type Warning struct {
	Level slog.Level
	Msg   string
	Attrs []slog.Attr
}

// Check returns, in the order of files and of their certificates, an
// error for each certificate outside its validity period at now, and a
// warning for each that ends within Soon of now.
func Check(now time.Time, files ...File) []Warning {
	var ws []Warning
	for _, f := range files {
		what := "every TLS handshake"
		if f.CA {
			what = "every TLS handshake with a certificate it signed"
		}
		for _, c := range f.Certs {
			var w Warning
			switch {
			case now.After(c.NotAfter):
				w = Warning{slog.LevelError, fmt.Sprintf("%s: certificate expired (by this machine's clock): %s will fail; replace it", f.Var, what), nil}
			case now.Before(c.NotBefore):
				w = Warning{slog.LevelError, fmt.Sprintf("%s: certificate not valid yet (by this machine's clock): %s will fail until its not_before; check this machine's clock, or replace it", f.Var, what), nil}
			case c.NotAfter.Sub(now) <= Soon:
				w = Warning{slog.LevelWarn, fmt.Sprintf("%s: certificate expires within %s: %s will fail after its not_after; replace it before then", f.Var, soonText, what), nil}
			default:
				continue
			}
			w.Attrs = []slog.Attr{
				slog.String("file", f.Path),
				slog.String("subject", c.Subject.String()),
				slog.String("not_before", c.NotBefore.UTC().Format(time.RFC3339)),
				slog.String("not_after", c.NotAfter.UTC().Format(time.RFC3339)),
			}
			ws = append(ws, w)
		}
	}
	return ws
}

// Log logs each of ws at its level.
func Log(log *slog.Logger, ws []Warning) {
	for _, w := range ws {
		log.LogAttrs(context.Background(), w.Level, w.Msg, w.Attrs...)
	}
}
