package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"
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
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"text"`
	PprofAddr       string        `env:"MASTER_PPROF_ADDR"` // empty: no profiling endpoint
}

// loadConfig parses and checks the environment. Every error names the
// variable at fault, so a typo in compose.yaml is found from the first line
// of the log.
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
	check("MASTER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout > 0 && c.ShutdownTimeout <= 10*time.Minute, "%s is outside 0..10m", c.ShutdownTimeout)
	check("MASTER_WORKER_TIMEOUT", c.WorkerTimeout >= time.Second && c.WorkerTimeout <= 5*time.Minute, "%s is outside 1s..5m", c.WorkerTimeout)
	check("MASTER_MAX_TASK_TIMEOUT", c.MaxTaskTimeout >= time.Second && c.MaxTaskTimeout <= 30*24*time.Hour, "%s is outside 1s..720h", c.MaxTaskTimeout)
	check("MASTER_TASK_TIMEOUT", c.TaskTimeout >= time.Second && c.TaskTimeout <= c.MaxTaskTimeout, "%s is outside 1s..MASTER_MAX_TASK_TIMEOUT (%s)", c.TaskTimeout, c.MaxTaskTimeout)
	check("MASTER_MAX_ATTEMPTS", c.MaxAttempts >= 1 && c.MaxAttempts <= 100, "%d is outside 1..100", c.MaxAttempts)
	check("MASTER_MAX_WAIT", c.MaxWait >= time.Second && c.MaxWait <= 5*time.Minute, "%s is outside 1s..5m", c.MaxWait)
	check("MASTER_PPROF_ADDR", c.PprofAddr == "" || validListenAddr(c.PprofAddr), "%q is not [host]:port", c.PprofAddr)
	check("LOG_LEVEL", validLevel(c.LogLevel), "%q is not one of debug, info, warn, error", c.LogLevel)
	check("LOG_FORMAT", c.LogFormat == "text" || c.LogFormat == "json", "%q is not text or json", c.LogFormat)
	return c, errors.Join(errs...)
}

func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p >= 0 && p <= 65535
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
