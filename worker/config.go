package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// config is everything the worker reads from its environment.
type config struct {
	MasterAddr     string        `env:"WORKER_MASTER_ADDR" envDefault:"localhost:50051"`
	WorkerID       string        `env:"WORKER_ID"`
	Slots          int           `env:"WORKER_SLOTS" envDefault:"1"`
	MaxOutputBytes int           `env:"WORKER_MAX_OUTPUT_BYTES" envDefault:"1048576"`
	HealthAddr     string        `env:"WORKER_HEALTH_ADDR"`
	MetricsAddr    string        `env:"WORKER_METRICS_ADDR"` // empty: no metrics endpoint
	ReconnectMax   time.Duration `env:"WORKER_RECONNECT_MAX" envDefault:"5s"`
	DrainTimeout   time.Duration `env:"WORKER_DRAIN_TIMEOUT" envDefault:"30s"`
	TimerSlack     time.Duration `env:"WORKER_TIMER_SLACK" envDefault:"5ms"` // Linux timer slack of the worker's threads, not its commands' (proto/timerslack); 0: as it is
	// Labels are the worker's capabilities, "k=v,k=v" in the syntax of
	// proto/labels (gpu=nvidia,zone=eu): a task that requires labels runs
	// only on a worker that has every one of them.
	Labels string `env:"WORKER_LABELS"`
	// Token is sent to the master as "authorization: Bearer <token>"; it
	// must equal the master's MASTER_WORKER_TOKEN. A secret: logged only as
	// set or unset.
	Token string `env:"WORKER_TOKEN"`
	// TokenFile names a file that holds the token instead (a Docker or
	// Swarm secret under /run/secrets), so it stays out of the environment
	// that `docker inspect` shows. One of the two at most.
	TokenFile string `env:"WORKER_TOKEN_FILE"`
	// TLS to the master: a CA turns it on and is the only one trusted for
	// the master's certificate; a certificate and key are presented to a
	// master that asks for one (MASTER_TLS_CLIENT_CA).
	TLSCA         string `env:"WORKER_TLS_CA"`
	TLSCert       string `env:"WORKER_TLS_CERT"`
	TLSKey        string `env:"WORKER_TLS_KEY"`
	TLSServerName string `env:"WORKER_TLS_SERVER_NAME"` // default: the host of WORKER_MASTER_ADDR
	LogLevel      string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat     string `env:"LOG_FORMAT" envDefault:"text"`

	// tls is what the TLS settings above load to, nil without TLS. It is
	// read once, in loadConfig, so the files checked are the files used.
	tls *tls.Config `env:"-"`
	// tlsFiles are the certificates of tls, whose validity periods run
	// checks and logs at start.
	tlsFiles []certcheck.File `env:"-"`
	// labels is Labels parsed, read once in loadConfig like tls; empty
	// for none.
	labels map[string]string `env:"-"`
}

// secretFromFile sets *v, the value of variable name, from file, the value
// of name_FILE, if that is set. Whitespace around the secret is dropped:
// editors and `echo` end files with a newline, which no token contains.
func secretFromFile(v *string, name, file string) error {
	if file == "" {
		return nil
	}
	if *v != "" {
		return fmt.Errorf("%s and %s_FILE are both set: use one", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s_FILE: %w", name, err)
	}
	*v = strings.TrimSpace(string(b))
	if *v == "" {
		return fmt.Errorf("%s_FILE: %s is empty", name, file)
	}
	return nil
}

// workerIDPattern is what the master accepts as a worker ID.
var workerIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// loadConfig parses and checks the environment. Every error names the
// variable at fault, so a typo in compose.yaml is found from the first line
// of the log. An empty WORKER_ID stays empty here: deriveWorkerID fills it.
func loadConfig(environ map[string]string) (config, error) {
	var c config
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		return c, namedEnvError(&c, environ, err)
	}
	var errs []error
	check := func(name string, ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
		}
	}
	check("WORKER_MASTER_ADDR", validHostPort(c.MasterAddr, false), "%q is not host:port", c.MasterAddr)
	check("WORKER_ID", c.WorkerID == "" || workerIDPattern.MatchString(c.WorkerID), "%q is not 1-64 characters of A-Z a-z 0-9 . _ -", c.WorkerID)
	check("WORKER_SLOTS", c.Slots >= 1 && c.Slots <= 256, "%d is outside 1..256", c.Slots)
	// Both streams of a result must fit in one gRPC message the master
	// accepts (MASTER_GRPC_MAX_RECV_BYTES, 16 MiB by default): 2 × 4 MiB
	// leaves room to spare. A master set lower gets such a result without
	// its output (see the agent's reporter); it stores at most
	// MASTER_MAX_OUTPUT_BYTES of each stream either way.
	check("WORKER_MAX_OUTPUT_BYTES", c.MaxOutputBytes >= 1 && c.MaxOutputBytes <= 4<<20, "%d is outside 1..4194304", c.MaxOutputBytes)
	check("WORKER_TIMER_SLACK", c.TimerSlack >= 0 && c.TimerSlack <= timerslack.Max, "%s is outside 0s..%s", c.TimerSlack, timerslack.Max)
	check("WORKER_HEALTH_ADDR", c.HealthAddr == "" || validHostPort(c.HealthAddr, true), "%q is not [host]:port", c.HealthAddr)
	check("WORKER_METRICS_ADDR", c.MetricsAddr == "" || validHostPort(c.MetricsAddr, true), "%q is not [host]:port", c.MetricsAddr)
	check("WORKER_RECONNECT_MAX", c.ReconnectMax >= 100*time.Millisecond && c.ReconnectMax <= 5*time.Minute, "%s is outside 100ms..5m", c.ReconnectMax)
	check("WORKER_DRAIN_TIMEOUT", c.DrainTimeout >= 0 && c.DrainTimeout <= time.Hour, "%s is outside 0s..1h", c.DrainTimeout)
	if err := secretFromFile(&c.Token, "WORKER_TOKEN", c.TokenFile); err != nil {
		errs = append(errs, err)
	}
	check("WORKER_TOKEN", c.Token == "" || validToken(c.Token), "must be %d-%d printable ASCII characters without spaces, equal to the master's MASTER_WORKER_TOKEN", minTokenLen, maxTokenLen)
	set, err := labels.Parse(c.Labels)
	check("WORKER_LABELS", err == nil, "%v", err)
	c.labels = set
	tc, files, err := clientTLS(c)
	if err != nil {
		errs = append(errs, err)
	}
	c.tls, c.tlsFiles = tc, files
	check("LOG_LEVEL", validLevel(c.LogLevel), "%q is not one of debug, info, warn, error", c.LogLevel)
	check("LOG_FORMAT", c.LogFormat == "text" || c.LogFormat == "json", "%q is not text or json", c.LogFormat)
	return c, errors.Join(errs...)
}

// validHostPort reports whether addr is host:port with a port in 1..65535;
// the host may be empty only for an address to listen on.
func validHostPort(addr string, listen bool) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host == "" && !listen) {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p >= 1 && p <= 65535
}

// Tokens: see the master's config; the same rules, so a token one accepts
// the other does too.
const (
	minTokenLen = 16
	maxTokenLen = 4096
)

func validToken(s string) bool {
	return len(s) >= minTokenLen && len(s) <= maxTokenLen &&
		!strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e })
}

// mask shows whether a secret is set, never its value.
func mask(secret string) string {
	if secret == "" {
		return "unset"
	}
	return "set"
}

func validLevel(s string) bool {
	var l slog.Level
	return l.UnmarshalText([]byte(s)) == nil
}

// namedEnvError rewrites env's parse errors, which name the Go field, to
// name the environment variable and its value instead.
func namedEnvError(c *config, environ map[string]string, err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	typ := reflect.TypeOf(c).Elem()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := typ.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				out = append(out, fmt.Errorf("%s: %q is not a valid %s", name, environ[name], typeName(pe.Type)))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func typeName(t reflect.Type) string {
	if t == reflect.TypeFor[time.Duration]() {
		return "duration (such as 5s or 250ms)"
	}
	return t.String()
}

// resolver is the part of net.Resolver that deriveWorkerID needs.
type resolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// deriveWorkerID names a worker that was given no WORKER_ID. Under Compose,
// Docker's DNS maps the container's address to its container name
// (roundhouse-worker-3, or roundhouse_worker_3 with Compose v1), which is
// stable across restarts and readable in the API, unlike the random
// container hostname. It returns the ID and where it came from, for the log.
func deriveWorkerID(ctx context.Context, r resolver, addrs []net.IP, hostname func() (string, error)) (id, source string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, ip := range addrs {
		if ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() {
			continue
		}
		names, err := r.LookupAddr(ctx, ip.String())
		if err != nil || len(names) == 0 {
			continue
		}
		name := strings.TrimSuffix(names[0], ".")
		if net.ParseIP(name) != nil {
			continue
		}
		name, _, _ = strings.Cut(name, ".")
		if workerIDPattern.MatchString(name) {
			return name, "reverse DNS of " + ip.String(), nil
		}
	}
	h, err := hostname()
	if err != nil {
		return "", "", fmt.Errorf("WORKER_ID is not set and the hostname is unknown: %w", err)
	}
	h, _, _ = strings.Cut(h, ".")
	if !workerIDPattern.MatchString(h) {
		return "", "", fmt.Errorf("WORKER_ID is not set and the hostname %q is not a valid worker ID", h)
	}
	return h, "hostname", nil
}

// interfaceIPs lists the addresses of the host's interfaces.
func interfaceIPs() ([]net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips, nil
}
