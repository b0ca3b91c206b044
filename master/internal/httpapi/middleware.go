package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"

	"github.com/roundhouse-lab/roundhouse/master/internal/bearer"
)

// authenticator lets a request through when it carries the API token, or
// when it is public (IsPublic: the probes and the dashboard's static page,
// which hold no data). With no token configured it lets everything through.
//
// It wraps the whole router, not single routes, so an unknown path or a
// wrong method also needs the token: without one the API reveals nothing,
// not even which endpoints exist.
type authenticator struct {
	token bearer.Token // the API token, kept only as its hash
}

func newAuthenticator(token string) *authenticator {
	return &authenticator{token: bearer.New(token)}
}

// errUnauthenticated is answered 401 by writeError.
var errUnauthenticated = errors.New("unauthenticated")

func (a *authenticator) wrap(next http.Handler, writeError func(http.ResponseWriter, error)) http.Handler {
	if !a.token.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsPublic(r) {
			next.ServeHTTP(w, r)
			return
		}
		if err := a.check(r.Header.Get("Authorization")); err != nil {
			challenge := `Bearer realm="roundhouse"`
			if !errors.Is(err, errMissingToken) {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

var errMissingToken = fmt.Errorf(`%w: missing API token; send the header "Authorization: Bearer <MASTER_API_TOKEN>"`, errUnauthenticated)

// check compares the bearer token with the API token in constant time
// (bearer.Token.Check), and words what is wrong for an API client.
func (a *authenticator) check(header string) error {
	switch err := a.token.Check(header); {
	case err == nil:
		return nil
	case errors.Is(err, bearer.ErrMissing):
		return errMissingToken
	case errors.Is(err, bearer.ErrMalformed):
		return fmt.Errorf(`%w: the Authorization header must be "Bearer <token>"`, errUnauthenticated)
	default:
		return fmt.Errorf("%w: invalid API token", errUnauthenticated)
	}
}

// loopbackHostOnly guards a master that runs without an API token against
// DNS rebinding: a web page on evil.example can make its own name resolve to
// 127.0.0.1, and then its requests to the master are same-origin, so neither
// the browser nor CrossOriginProtection stops them. Such a request still
// names the attacker's host in its Host header, while curl, the tools and the
// dashboard on this machine name localhost or a loopback address. So without
// a token only loopback Host names get an answer; the public routes (probes
// and the static dashboard, no data) answer any Host, so a health check by
// container name keeps working. With a token set, the token is the guard and
// any Host is fine: that is how the API is opened to other machines.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsPublic(r) || isLoopbackHost(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		writeJSON(w, http.StatusForbidden, errorBody{fmt.Sprintf(
			"host %q refused: without MASTER_API_TOKEN the API answers only requests for localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding); set MASTER_API_TOKEN to serve other host names",
			truncateHost(r.Host))})
	})
}

// isLoopbackHost reports whether host, a Host header with or without a
// port, names this machine's loopback interface: "localhost", an address in
// 127.0.0.0/8 or [::1]. A name such as "localhost.evil.example" or
// "127.0.0.1.nip.io" does not: only literal addresses and "localhost" count,
// since any other name may resolve anywhere.
func isLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1] // "[::1]" without a port
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// truncateHost keeps an echoed Host header short.
func truncateHost(h string) string {
	const max = 100
	if len(h) > max {
		return h[:max] + "..."
	}
	return h
}

// recoverer turns a panic in a handler into a 500 with a JSON error, logged
// once with its stack, instead of a dropped connection: no panic reaches a
// user, and the master keeps serving.
func recoverer(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel is compared as a value by net/http too
				panic(v) // net/http's own way to abort a response; it logs nothing
			}
			log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			writeJSON(w, http.StatusInternalServerError, errorBody{"internal error"})
		}()
		next.ServeHTTP(w, r)
	})
}
