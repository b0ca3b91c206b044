package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// config is everything the master reads from its environment.
type config struct {
	GRPCAddr        string        `env:"MASTER_GRPC_ADDR" envDefault:":50051"`
	HTTPAddr        string        `env:"MASTER_HTTP_ADDR" envDefault:":9092"`
	MaxBodyBytes    int64         `env:"MASTER_MAX_BODY_BYTES" envDefault:"65536"`
	MaxCmdBytes     int           `env:"MASTER_MAX_CMD_BYTES" envDefault:"16384"`
	ShutdownTimeout time.Duration `env:"MASTER_SHUTDOWN_TIMEOUT" envDefault:"10s"`
	DBPath          string        `env:"MASTER_DB_PATH" envDefault:"roundhouse.db"`
	WorkerTimeout   time.Duration `env:"MASTER_WORKER_TIMEOUT" envDefault:"10s"`
	TaskTimeout     time.Duration `env:"MASTER_TASK_TIMEOUT" envDefault:"1h"`
	MaxTaskTimeout  time.Duration `env:"MASTER_MAX_TASK_TIMEOUT" envDefault:"24h"`
	MaxAttempts     int           `env:"MASTER_MAX_ATTEMPTS" envDefault:"3"`
	MaxWait         time.Duration `env:"MASTER_MAX_WAIT" envDefault:"60s"`
	// Retention is how long finished tasks are kept before they are
	// deleted, with their attempts; 0 keeps them for ever.
	Retention time.Duration `env:"MASTER_RETENTION" envDefault:"168h"`
	// APIToken, when set, is required as a bearer token on every REST
	// request but the probes. A secret: logged only as set or unset.
	APIToken string `env:"MASTER_API_TOKEN"`
	// WorkerToken, when set, is required from workers (their WORKER_TOKEN)
	// on every NodeService call. A secret, like APIToken.
	WorkerToken string `env:"MASTER_WORKER_TOKEN"`
	// The *_FILE variants name a file that holds the token (a Docker or
	// Swarm secret under /run/secrets), so the secret stays out of the
	// environment that `docker inspect` shows. One of each pair at most.
	APITokenFile    string `env:"MASTER_API_TOKEN_FILE"`
	WorkerTokenFile string `env:"MASTER_WORKER_TOKEN_FILE"`

	// TLS for the gRPC port: a certificate and its key turn it on; a
	// client CA also requires every worker to present a certificate it signed.
	TLSCert     string `env:"MASTER_TLS_CERT"`
	TLSKey      string `env:"MASTER_TLS_KEY"`
	TLSClientCA string `env:"MASTER_TLS_CLIENT_CA"`

	// Limits on what clients may make the master hold.
	MaxHeaderBytes    int           `env:"MASTER_MAX_HEADER_BYTES" envDefault:"65536"`       // request line and headers of one HTTP request
	ReadHeaderTimeout time.Duration `env:"MASTER_READ_HEADER_TIMEOUT" envDefault:"5s"`       // to send them: a slow client is cut off after this
	MaxQueued         int           `env:"MASTER_MAX_QUEUED" envDefault:"10000"`             // queued tasks; past it POST /tasks answers 429
	MaxEventStreams   int           `env:"MASTER_MAX_EVENT_STREAMS" envDefault:"64"`         // open GET /events streams; past it /events answers 429
	MaxOutputBytes    int           `env:"MASTER_MAX_OUTPUT_BYTES" envDefault:"4194304"`     // stored per output stream of a result
	GRPCMaxRecvBytes  int           `env:"MASTER_GRPC_MAX_RECV_BYTES" envDefault:"16777216"` // one gRPC message from a worker
	LiveOutputBytes   int           `env:"MASTER_LIVE_OUTPUT_BYTES" envDefault:"262144"`     // live buffer per output stream of a running delivery
	LogLevel          string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat         string        `env:"LOG_FORMAT" envDefault:"text"`
	PprofAddr         string        `env:"MASTER_PPROF_ADDR"` // empty: no profiling endpoint

	// Linux timer slack of the master's threads (proto/timerslack); 0: as it is.
	TimerSlack time.Duration `env:"MASTER_TIMER_SLACK" envDefault:"1ms"`
	// The heap the garbage collector lets grow before it runs, while little
	// is live (internal/heapfloor); 0: GOGC alone.
	HeapFloorBytes uint64 `env:"MASTER_HEAP_FLOOR_BYTES" envDefault:"16777216"`

	// tls is what loadConfig built from MASTER_TLS_*, nil when TLS is off.
	// Kept so serve uses the files as they were checked, rather than read
	// them (and parse the certificates) a second time.
	tls *tls.Config `env:"-"`
	// tlsFiles are the certificates of tls, whose validity periods run
	// checks and logs at start.
	tlsFiles []certcheck.File `env:"-"`
}

// loadConfig parses and checks the environment. Every error names the
// variable at fault, so a typo in compose.yaml is found from the first line
// of the log.
// maxArgBytes is Linux's MAX_ARG_STRLEN (32 pages of 4 KiB) less its NUL:
// the longest single argument execve takes.
const maxArgBytes = 128<<10 - 1

func loadConfig(environ map[string]string) (config, error) {
	var c config
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		return c, namedEnvError(&c, err)
	}
	var errs []error
	check := func(name string, ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
		}
	}
	check("MASTER_GRPC_ADDR", validListenAddr(c.GRPCAddr), "%q is not [host]:port", c.GRPCAddr)
	check("MASTER_HTTP_ADDR", validListenAddr(c.HTTPAddr), "%q is not [host]:port", c.HTTPAddr)
	check("MASTER_MAX_BODY_BYTES", c.MaxBodyBytes >= 1024 && c.MaxBodyBytes <= 64<<20, "%d is outside 1024..67108864", c.MaxBodyBytes)
	check("MASTER_MAX_CMD_BYTES", c.MaxCmdBytes >= 1 && int64(c.MaxCmdBytes) < c.MaxBodyBytes, "%d must be at least 1 and below MASTER_MAX_BODY_BYTES (%d)", c.MaxCmdBytes, c.MaxBodyBytes)
	// A worker runs /bin/sh -c cmd, and Linux takes no argument of a
	// command over 128 KiB (MAX_ARG_STRLEN, its NUL included): a longer
	// cmd could be accepted but never run.
	check("MASTER_MAX_CMD_BYTES", c.MaxCmdBytes <= maxArgBytes, "%d is over %d, the longest argument Linux passes to a command (the worker runs /bin/sh -c cmd)", c.MaxCmdBytes, maxArgBytes)
	check("MASTER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout > 0 && c.ShutdownTimeout <= 10*time.Minute, "%s must be more than 0s and at most 10m", c.ShutdownTimeout)
	check("MASTER_WORKER_TIMEOUT", c.WorkerTimeout >= time.Second && c.WorkerTimeout <= 5*time.Minute, "%s is outside 1s..5m", c.WorkerTimeout)
	check("MASTER_MAX_TASK_TIMEOUT", c.MaxTaskTimeout >= time.Second && c.MaxTaskTimeout <= 30*24*time.Hour, "%s is outside 1s..720h", c.MaxTaskTimeout)
	check("MASTER_TASK_TIMEOUT", c.TaskTimeout >= time.Second && c.TaskTimeout <= c.MaxTaskTimeout, "%s is outside 1s..MASTER_MAX_TASK_TIMEOUT (%s)", c.TaskTimeout, c.MaxTaskTimeout)
	check("MASTER_MAX_ATTEMPTS", c.MaxAttempts >= 1 && c.MaxAttempts <= 100, "%d is outside 1..100", c.MaxAttempts)
	check("MASTER_MAX_WAIT", c.MaxWait >= time.Second && c.MaxWait <= 5*time.Minute, "%s is outside 1s..5m", c.MaxWait)
	check("MASTER_RETENTION", c.Retention == 0 || c.Retention >= time.Minute && c.Retention <= 87600*time.Hour, "%s is neither 0 (keep for ever) nor within 1m..87600h", c.Retention)
	errs = append(errs, secretFromFile(&c.APIToken, "MASTER_API_TOKEN", c.APITokenFile),
		secretFromFile(&c.WorkerToken, "MASTER_WORKER_TOKEN", c.WorkerTokenFile))
	check("MASTER_API_TOKEN", c.APIToken == "" || validToken(c.APIToken), "must be %d-%d printable ASCII characters without spaces (try: openssl rand -hex 32)", minTokenLen, maxTokenLen)
	check("MASTER_WORKER_TOKEN", c.WorkerToken == "" || validToken(c.WorkerToken), "must be %d-%d printable ASCII characters without spaces (try: openssl rand -hex 32)", minTokenLen, maxTokenLen)
	check("MASTER_MAX_HEADER_BYTES", c.MaxHeaderBytes >= 4096 && c.MaxHeaderBytes <= 1<<20, "%d is outside 4096..1048576", c.MaxHeaderBytes)
	check("MASTER_READ_HEADER_TIMEOUT", c.ReadHeaderTimeout >= 100*time.Millisecond && c.ReadHeaderTimeout <= time.Minute, "%s is outside 100ms..1m", c.ReadHeaderTimeout)
	check("MASTER_MAX_QUEUED", c.MaxQueued >= 1 && c.MaxQueued <= 10_000_000, "%d is outside 1..10000000", c.MaxQueued)
	check("MASTER_MAX_EVENT_STREAMS", c.MaxEventStreams >= 1 && c.MaxEventStreams <= 10_000, "%d is outside 1..10000", c.MaxEventStreams)
	check("MASTER_MAX_OUTPUT_BYTES", c.MaxOutputBytes >= 1024 && c.MaxOutputBytes <= 64<<20, "%d is outside 1024..67108864", c.MaxOutputBytes)
	// A result holds both output streams plus a little framing.
	check("MASTER_GRPC_MAX_RECV_BYTES", c.GRPCMaxRecvBytes >= 2*c.MaxOutputBytes+grpcSlack && c.GRPCMaxRecvBytes <= 256<<20,
		"%d must be at least 2×MASTER_MAX_OUTPUT_BYTES+%d (%d) and at most 268435456", c.GRPCMaxRecvBytes, grpcSlack, 2*c.MaxOutputBytes+grpcSlack)
	check("MASTER_LIVE_OUTPUT_BYTES", c.LiveOutputBytes >= 4096 && c.LiveOutputBytes <= 16<<20, "%d is outside 4096..16777216", c.LiveOutputBytes)
	var err error
	if c.tls, c.tlsFiles, err = serverTLS(c); err != nil {
		errs = append(errs, err)
	}
	check("MASTER_PPROF_ADDR", c.PprofAddr == "" || validListenAddr(c.PprofAddr), "%q is not [host]:port", c.PprofAddr)
	check("MASTER_TIMER_SLACK", c.TimerSlack >= 0 && c.TimerSlack <= timerslack.Max, "%s is outside 0s..%s", c.TimerSlack, timerslack.Max)
	check("MASTER_HEAP_FLOOR_BYTES", c.HeapFloorBytes == 0 || c.HeapFloorBytes >= 1<<20 && c.HeapFloorBytes <= 1<<30, "%d is neither 0 nor within 1 MiB..1 GiB", c.HeapFloorBytes)
	check("LOG_LEVEL", validLevel(c.LogLevel), "%q is not one of debug, info, warn, error", c.LogLevel)
	check("LOG_FORMAT", c.LogFormat == "text" || c.LogFormat == "json", "%q is not text or json", c.LogFormat)
	return c, errors.Join(errs...)
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

func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p >= 0 && p <= 65535
}

// grpcSlack is room in a gRPC message for a result's fields besides its
// output: IDs, error text, timestamps.
const grpcSlack = 64 << 10

// Tokens are shared secrets typed into env files and HTTP headers: long
// enough not to be guessed, and made of characters that survive both.
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
// name the environment variable instead.
func namedEnvError(c *config, err error) error {
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
				name := strings.Split(f.Tag.Get("env"), ",")[0]
				out = append(out, fmt.Errorf("%s: not a valid %s (%v)", name, pe.Type, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
