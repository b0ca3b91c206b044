// Package httpapi is the master's REST API: gorilla/mux routes, JSON in and
// out, and the one table that maps task errors to HTTP status codes.
//
// One file per job: httpapi.go the routes and wiring; create.go POST /tasks;
// tasks.go reading, waiting on, listing, canceling and retrying tasks;
// cluster.go the queue, the workers and health; events.go the event
// stream; output.go and outputsse.go a task's output, live (GET
// /tasks/{id}/output); taskjson.go a task as JSON; codec.go decoding bodies, the error
// table and writing JSON; middleware.go what wraps every request.
package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"

	"github.com/roundhouse-lab/roundhouse/master/internal/dashboard"
	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
)

// Params are the API's dependencies and limits.
type Params struct {
	Dispatcher   *dispatch.Dispatcher
	Log          *slog.Logger
	MaxBodyBytes int64
	MaxWait      time.Duration // longest ?wait= a request may ask for
	Ready        func() error  // nil when the master can serve workers
	Events       *events.Hub   // followed by GET /events
	// LiveOutput holds the live output of running tasks, for
	// GET /tasks/{id}/output; nil leaves the route out.
	LiveOutput *liveout.Buffers
	Metrics    http.Handler  // serves GET /metrics
	Heartbeat  time.Duration // between comments on an idle event stream; 0 means 15s
	// MaxEventStreams bounds the GET /events streams served at once; past
	// it the request is answered 429. 0 means no limit.
	MaxEventStreams int

	// APIToken, when set, is required as "Authorization: Bearer <token>"
	// on every request but the public ones (see IsPublic).
	APIToken string
}

type api struct {
	d       *dispatch.Dispatcher
	log     *slog.Logger
	maxBody int64
	maxWait time.Duration
	ready   func() error

	events     *events.Hub
	live       *liveout.Buffers
	heartbeat  time.Duration
	maxStreams int64        // 0: no limit
	streams    atomic.Int64 // event streams being served; see acquireStream
}

// IsPublic reports whether r asks for a route that holds no data and is
// served without an API token: the health checks and the dashboard's static
// page and assets (the page asks for the token and sends it itself). Every
// other route, /events and /metrics included, needs the token when one is set.
func IsPublic(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// Matched on the raw path, never cleaned: "/ui/../tasks" is not public.
	switch p := r.URL.Path; {
	case p == "/healthz", p == "/readyz", p == "/":
		return true
	default:
		return strings.HasPrefix(p, "/ui/") && !strings.Contains(p, "..")
	}
}

// New returns the API: the routes of newRouter behind authentication, the
// cross-origin and Host checks and a recoverer.
func New(p Params) http.Handler {
	a, r := newRouter(p)
	auth := newAuthenticator(p.APIToken)
	// A web page in the user's browser must not be able to POST a command
	// to a master on localhost (CSRF): browsers mark such requests, curl and
	// the dashboard (same origin) pass.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusForbidden, errorBody{"cross-origin request refused: the API does not take state-changing requests from other web sites"})
	}))
	var h http.Handler = csrf.Handler(auth.wrap(r, a.writeError))
	if p.APIToken == "" {
		h = loopbackHostOnly(h)
	}
	return recoverer(a.log, h)
}

// newRouter returns the API's routes, and the api they call. Every route
// the master serves is here (TestREADMERoutes walks them).
func newRouter(p Params) (*api, *mux.Router) {
	a := &api{d: p.Dispatcher, log: p.Log.With("component", "httpapi"), maxBody: p.MaxBodyBytes, maxWait: p.MaxWait, ready: p.Ready,
		events: p.Events, live: p.LiveOutput, heartbeat: p.Heartbeat, maxStreams: int64(p.MaxEventStreams)}
	if a.heartbeat <= 0 {
		a.heartbeat = 15 * time.Second
	}
	r := mux.NewRouter()
	// No cleaning and redirecting of paths: "/tasks/../x" is no task path
	// and gets a 404, not a redirect to somewhere else.
	r.SkipClean(true)
	r.HandleFunc("/tasks", a.createTask).Methods(http.MethodPost)
	r.HandleFunc("/tasks", a.listTasks).Methods(http.MethodGet)
	r.HandleFunc("/tasks/{id}", a.getTask).Methods(http.MethodGet)
	r.HandleFunc("/tasks/{id}", a.cancelTask).Methods(http.MethodDelete)
	r.HandleFunc("/tasks/{id}/retry", a.retryTask).Methods(http.MethodPost)
	if p.LiveOutput != nil {
		r.HandleFunc("/tasks/{id}/output", a.getOutput).Methods(http.MethodGet)
	}
	r.HandleFunc("/queue", a.getQueue).Methods(http.MethodGet)
	r.HandleFunc("/workers", a.listWorkers).Methods(http.MethodGet)
	r.HandleFunc("/healthz", a.healthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", a.readyz).Methods(http.MethodGet, http.MethodHead)
	if p.Events != nil {
		r.HandleFunc("/events", a.streamEvents).Methods(http.MethodGet)
	}
	if p.Metrics != nil {
		// Prometheus's handler sets no nosniff; every answer carries it.
		metrics := p.Metrics
		r.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			noSniff(w.Header())
			metrics.ServeHTTP(w, r)
		})).Methods(http.MethodGet)
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	// The dashboard: a static page and its assets, no data (see IsPublic).
	ui := dashboard.Handler(r.NotFoundHandler)
	r.Handle("/", ui).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/ui/").Handler(ui).Methods(http.MethodGet, http.MethodHead)
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)})
	})
	return a, r
}
