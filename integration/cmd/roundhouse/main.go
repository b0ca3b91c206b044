// Command roundhouse is the command-line client of a Roundhouse master: it
// submits tasks and follows their output live, lists, inspects, cancels and
// retries tasks, shows the workers and follows the event stream, all through
// the master's REST API (integration/client).
//
//	roundhouse run -- make test                   # submit, follow the output, exit with the task's code
//	roundhouse submit --priority 1 -- ./nightly.sh
//	roundhouse ls --status failed --cmd nightly
//	roundhouse logs -f 0195b5d2-...
//	roundhouse events --json
//
// The master's address is --api, else $ROUNDHOUSE_API, else
// http://127.0.0.1:9092. The API token is --token, else $MASTER_API_TOKEN
// (even when set empty), else the MASTER_API_TOKEN line of ./.env (where
// `make env` writes the lab's), else none, as the Makefile reads it.
//
// Exit codes: 0 done; 1 an error (the master refused, could not be reached,
// no such task); 2 a bad flag or usage; run and wait exit with the task's
// exit code, or 123 (failed without one: the command could not run, was
// killed, or its workers were lost), 124 (timed out), 125 (canceled); 130
// when Ctrl-C left the task running; 143 when SIGTERM stopped a command
// (run then says which task may still run).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// The exit codes besides a task's own; see the package doc.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNoCode      = 123 // failed without an exit code (could not run, killed, workers lost)
	exitTimedOut    = 124 // as timeout(1)
	exitCanceled    = 125
	exitInterrupted = 130 // 128 + SIGINT: Ctrl-C, the task left running
	exitTerminated  = 143 // 128 + SIGTERM: any command stopped, a task left running
)

const defaultAPI = "http://127.0.0.1:9092"

func main() {
	// SIGTERM ends any command; SIGINT is each command's own business (run
	// offers to cancel the task, the followers stop).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ())
	if ctx.Err() != nil && code != 0 {
		// Whatever the command made of its canceled context, a shell
		// reports a process SIGTERM stopped as 128 + 15.
		code = exitTerminated
	}
	stop()
	os.Exit(code)
}

// app is one invocation: its streams, settings and client.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer // lockedWriters: a follow and a prompt write at once
	env            []string

	api, token string
	json       bool
	c          *client.Client
	// tty reports whether stdin is a terminal a prompt can be answered on.
	tty bool
}

// run is the whole command: main's, and the tests', which call it in-process.
// env is the environment as os.Environ gives it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) int {
	var mu sync.Mutex // protects writes to stdout and stderr, so lines do not interleave
	a := &app{stdin: stdin, stdout: &lockedWriter{mu: &mu, w: stdout}, stderr: &lockedWriter{mu: &mu, w: stderr}, env: env}
	a.api = defaultAPI
	if v, ok := a.getenv("ROUNDHOUSE_API"); ok && v != "" {
		a.api = v
	}
	if v, ok := a.getenv("MASTER_API_TOKEN"); ok {
		a.token = v
	} else {
		a.token = dotEnvToken(".env")
	}
	a.tty = isTerminal(stdin)
	if v, _ := a.getenv("ROUNDHOUSE_TTY"); v != "" {
		a.tty = v == "1" || v == "true"
	}

	top := flag.NewFlagSet("roundhouse", flag.ContinueOnError)
	top.SetOutput(a.stderr)
	a.globalFlags(top)
	top.Usage = func() { a.usage(a.stderr) }
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if top.NArg() == 0 {
		a.usage(a.stderr)
		return exitUsage
	}
	name, rest := top.Arg(0), top.Args()[1:]
	if name == "help" {
		a.usage(a.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(a, ctx, rest)
		}
	}
	fmt.Fprintf(a.stderr, "roundhouse: unknown command %q\n\n", name)
	a.usage(a.stderr)
	return exitUsage
}

// command is one subcommand: its name, its arguments and one line for the
// usage, and what it does.
type command struct {
	name, args, summary string
	run                 func(a *app, ctx context.Context, args []string) int
}

// commands in the order the usage lists them. Set in init: their functions
// refer to the table, for the usage.
var commands []command

func init() {
	commands = []command{
		{"run", "[flags] -- CMD...", "submit a command, follow its output live, exit with its exit code", (*app).cmdRun},
		{"submit", "[flags] -- CMD...", "submit a command; print its task ID", (*app).cmdSubmit},
		{"get", "ID", "show a task: status, worker, attempts, output", (*app).cmdGet},
		{"ls", "[flags]", "list tasks, newest first", (*app).cmdList},
		{"logs", "[-f [-v]] ID", "print a task's output; -f follows it live until the task ends (-v: say where each attempt runs)", (*app).cmdLogs},
		{"cancel", "ID", "cancel a task (a running one is killed on its worker)", (*app).cmdCancel},
		{"retry", "ID", "run a final task again", (*app).cmdRetry},
		{"wait", "ID", "wait until a task is final; exit with its exit code, as run", (*app).cmdWait},
		{"workers", "", "list the connected workers in rotation order", (*app).cmdWorkers},
		{"events", "[-since SEQ]", "follow the master's event stream, one line per event", (*app).cmdEvents},
	}
}

func (a *app) usage(w io.Writer) {
	fmt.Fprint(w, `roundhouse: the command-line client of a Roundhouse master

usage: roundhouse [--api URL] [--token TOKEN] [--json] COMMAND [flags] [args]

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %-18s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprint(w, `
flags of every command:
  --api URL      the master's REST API (default $ROUNDHOUSE_API, else `+defaultAPI+`)
  --token TOKEN  the API token (default $MASTER_API_TOKEN, else MASTER_API_TOKEN in ./.env);
                 a flag is visible to other users in ps: prefer the variable
  --json         print JSON for scripts: one document, or one per line for streams

exit codes: 0 ok; 1 error; 2 bad usage; run and wait: the task's exit code,
123 failed without one, 124 timed out, 125 canceled; 130 Ctrl-C left the task running; 143 SIGTERM stopped the command.
"roundhouse COMMAND -h" shows a command's flags.
`)
}

// globalFlags adds --api, --token and --json to fs; every command's flag set
// has them too, so they may come before or after the command's name.
func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.api, "api", a.api, "the master's REST API `URL` ($ROUNDHOUSE_API)")
	fs.Var((*secret)(&a.token), "token", "the API `token` ($MASTER_API_TOKEN or ./.env; a flag shows in ps)")
	fs.BoolVar(&a.json, "json", a.json, "print JSON for scripts")
}

// flags returns a command's flag set, with the global flags and a usage
// that names the command.
func (a *app) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	a.globalFlags(fs)
	var cmd command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: roundhouse %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.args, cmd.summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses a command's flags. Unless the command takes a command line,
// flags may also follow its arguments ("get ID --json"), and the arguments
// are returned in order. want is how many arguments the command takes (-1:
// any). It returns the exit code to stop with, or -1 to go on.
func (a *app) parse(fs *flag.FlagSet, args []string, want int, cmdLine bool) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK
			}
			return nil, exitUsage
		}
		args = fs.Args()
		if cmdLine || len(args) == 0 {
			pos = append(pos, args...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if want >= 0 && len(pos) != want {
		switch {
		case len(pos) < want:
			fmt.Fprintf(a.stderr, "roundhouse %s: missing argument\n", fs.Name())
		default:
			fmt.Fprintf(a.stderr, "roundhouse %s: unexpected argument %q\n", fs.Name(), pos[want])
		}
		fs.Usage()
		return nil, exitUsage
	}
	if !cmdLine && slices.Contains(pos, "") { // every such argument is a task ID
		fmt.Fprintf(a.stderr, "roundhouse %s: the task ID is empty\n", fs.Name())
		fs.Usage()
		return nil, exitUsage
	}
	if _, err := url.ParseRequestURI(a.api); err != nil || !strings.HasPrefix(a.api, "http://") && !strings.HasPrefix(a.api, "https://") {
		fmt.Fprintf(a.stderr, "roundhouse: --api %q is not an http:// or https:// URL\n", a.api)
		return nil, exitUsage
	}
	a.c = client.New(strings.TrimSuffix(a.api, "/"), client.WithToken(a.token))
	return pos, -1
}

// usageError prints a usage mistake found after parsing and returns exit 2.
func (a *app) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(a.stderr, "roundhouse %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return exitUsage
}

func (a *app) getenv(key string) (string, bool) {
	for i := len(a.env) - 1; i >= 0; i-- { // the last one wins, as with exec
		if k, v, ok := strings.Cut(a.env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// dotEnvToken reads MASTER_API_TOKEN from a .env file as the Makefile does
// (the text after "MASTER_API_TOKEN=", one pair of quotes taken off), or ""
// when the file or the line is missing.
func dotEnvToken(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "MASTER_API_TOKEN="); ok {
			v = strings.TrimSpace(v)
			if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}

// isTerminal reports whether r is a character device, as a terminal is.
// (/dev/null is one too; a prompt there reads end of file, which run takes
// as no answer.)
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// secret is a flag's string value that its usage never shows: the token
// read from the environment must not appear in -h.
type secret string

func (s *secret) String() string     { return "" }
func (s *secret) Set(v string) error { *s = secret(v); return nil }

// lockedWriter serializes writes to w with a mutex shared with its sibling.
type lockedWriter struct {
	mu *sync.Mutex // protects w, and the order of writes to both streams
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
